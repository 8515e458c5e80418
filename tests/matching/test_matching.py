"""Reciprocal descriptor matching: official conformance, properties, and ``match_pair``."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from recon.matching import fast_reciprocal_nn, match_pair, seed_grid
from recon.types import PairPrediction

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
IO = FIXTURES / "mast3r_tiny_io.safetensors"
FAST_NN = FIXTURES / "mast3r_tiny_fast_nn.safetensors"
OFFICIAL_VARIANTS = ["default_cdist_l2", "kdtree", "dot_block8192"]


@pytest.fixture(scope="module")
def landscape():
    io = load_file(IO)
    return {k.split(".", 1)[1]: v[0] for k, v in io.items() if k.startswith("landscape.pred")}


@pytest.fixture(scope="module")
def official():
    return load_file(FAST_NN)


def smooth_field(H, W, D=24, seed=0):
    """``[H, W, D]`` unit descriptors varying smoothly, so nearest neighbours are locally unique."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, D, H // 6 + 2, W // 6 + 2, generator=g)
    f = F.interpolate(coarse, size=(H, W), mode="bicubic", align_corners=False)[0].permute(1, 2, 0)
    return F.normalize(f, dim=-1)


def brute_nn(a, b):
    """Index in ``b`` (flattened) of the nearest descriptor of every pixel of ``a`` (by inner product)."""
    return (a.reshape(-1, a.shape[-1]).double() @ b.reshape(-1, b.shape[-1]).double().T).argmax(1)


class TestConformance:
    @pytest.mark.parametrize("dist", ["dot", "l2"])
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
    @pytest.mark.parametrize("max_tile", [2**22, 1000])
    def test_reproduces_official(self, landscape, official, dist, dtype, max_tile):
        xy1, xy2 = fast_reciprocal_nn(
            landscape["pred1.desc"].to(dtype), landscape["pred2.desc"].to(dtype), 8, dist=dist, max_tile=max_tile
        )
        for variant in OFFICIAL_VARIANTS:
            assert xy1.dtype == torch.int64
            torch.testing.assert_close(xy1, official[f"{variant}.xy1"], rtol=0, atol=0)
            torch.testing.assert_close(xy2, official[f"{variant}.xy2"], rtol=0, atol=0)

    def test_official_count(self, official):
        # the fixture holds 31 matches for every variant (README §1); guard against a swapped fixture
        assert all(official[f"{v}.xy1"].shape == (31, 2) for v in OFFICIAL_VARIANTS)


class TestFastReciprocalNN:
    def test_seed_grid(self):
        idx = seed_grid(48, 64, 8)
        ys, xs = idx // 64, idx % 64
        assert len(idx) == 6 * 8
        assert set(ys.tolist()) == {4, 12, 20, 28, 36, 44} and set(xs.tolist()) == set(range(4, 64, 8))

    def test_recovers_shift(self):
        f = smooth_field(60, 80)
        d1, d2 = f[0:48, 0:64], f[5:53, 7:71]  # pixel (x, y) of image 1 is (x - 7, y - 5) in image 2
        xy1, xy2 = fast_reciprocal_nn(d1, d2, 8)
        correct = (xy1 - xy2 == torch.tensor([7, 5])).all(1)
        assert len(xy1) > 20 and correct.float().mean() > 0.9
        # a pixel of image 2 whose true partner lies inside image 1 is always matched to that partner
        has_partner = (xy2[:, 0] + 7 < 64) & (xy2[:, 1] + 5 < 48)
        assert correct[has_partner].all()

    def test_matches_are_reciprocal_and_sorted(self):
        d1, d2 = smooth_field(40, 56, seed=1), smooth_field(32, 48, seed=2)
        xy1, xy2 = fast_reciprocal_nn(d1, d2, 4)
        assert len(xy1) > 0
        i1 = xy1[:, 1] * 56 + xy1[:, 0]
        i2 = xy2[:, 1] * 48 + xy2[:, 0]
        assert torch.equal(brute_nn(d1, d2)[i1], i2)
        assert torch.equal(brute_nn(d2, d1)[i2], i1)
        assert torch.all(i1[1:] >= i1[:-1])
        assert (xy2[:, 0] < 48).all() and (xy2[:, 1] < 32).all()

    def test_tiling_does_not_change_result(self):
        d1, d2 = smooth_field(40, 56, seed=3), smooth_field(40, 56, seed=4)
        ref = fast_reciprocal_nn(d1, d2, 4)
        for tile in (2000, 30000, 2**22):
            out = fast_reciprocal_nn(d1, d2, 4, max_tile=tile)
            assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])

    def test_thread_count_does_not_change_result_and_is_restored(self):
        d1, d2 = smooth_field(40, 56, seed=3), smooth_field(40, 56, seed=4)
        before = torch.get_num_threads()
        torch.set_num_threads(2)
        try:
            ref = fast_reciprocal_nn(d1, d2, 4, threads=None)
            out = fast_reciprocal_nn(d1, d2, 4)  # 1 thread inside
            assert torch.get_num_threads() == 2
        finally:
            torch.set_num_threads(before)
        assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])

    def test_one_iteration_keeps_only_converged(self):
        d1, d2 = smooth_field(40, 56, seed=5), smooth_field(40, 56, seed=6)
        few = fast_reciprocal_nn(d1, d2, 4, max_iter=1)
        many = fast_reciprocal_nn(d1, d2, 4, max_iter=10)
        assert len(few[0]) <= len(many[0])
        # with one round, a match must be a seed whose nearest neighbour's nearest neighbour is itself
        seeds = set(seed_grid(40, 56, 4).tolist())
        assert set((few[0][:, 1] * 56 + few[0][:, 0]).tolist()) <= seeds

    @pytest.mark.parametrize(
        ("a", "b", "kw", "msg"),
        [
            ((4, 4, 8), (4, 4, 6), {}, "expected descriptor maps"),
            ((16, 8), (4, 4, 8), {}, "expected descriptor maps"),
            ((4, 4, 8), (4, 4, 8), {"dist": "cos"}, "unknown dist"),
            ((4, 4, 8), (4, 4, 8), {"subsample": 0}, "must be >= 1"),
        ],
    )
    def test_bad_input(self, a, b, kw, msg):
        with pytest.raises(ValueError, match=msg):
            fast_reciprocal_nn(torch.randn(a), torch.randn(b), **kw)


def make_pred(landscape, i=0, j=1, swap=False):
    p = dict(landscape)
    k1, k2 = ("pred2", "pred1") if swap else ("pred1", "pred2")
    return PairPrediction(
        i=i,
        j=j,
        pts3d_i=p["pred1.pts3d"],
        pts3d_j=p["pred2.pts3d_in_other_view"],
        conf_i=p["pred1.conf"],
        conf_j=p["pred2.conf"],
        desc_i=p[f"{k1}.desc"].half(),
        desc_j=p[f"{k2}.desc"].half(),
        desc_conf_i=p[f"{k1}.desc_conf"].half(),
        desc_conf_j=p[f"{k2}.desc_conf"].half(),
    )


class TestMatchPair:
    def test_union_of_both_directions_with_confidence(self, landscape):
        pred = make_pred(landscape)
        m = match_pair(pred)
        fwd = fast_reciprocal_nn(pred.desc_i, pred.desc_j, 8)
        bwd = fast_reciprocal_nn(pred.desc_j, pred.desc_i, 8)
        expected = {tuple(a) + tuple(b) for a, b in zip(fwd[0].tolist(), fwd[1].tolist(), strict=True)}
        expected |= {tuple(a) + tuple(b) for a, b in zip(bwd[1].tolist(), bwd[0].tolist(), strict=True)}
        got = {tuple(a) + tuple(b) for a, b in zip(m.xy_i.tolist(), m.xy_j.tolist(), strict=True)}
        assert got == expected and len(m) == len(expected)
        assert m.xy_i.dtype == np.int64 and m.conf.dtype == np.float32 and (m.i, m.j) == (0, 1)
        ci = pred.desc_conf_i.float().numpy()[m.xy_i[:, 1], m.xy_i[:, 0]]
        cj = pred.desc_conf_j.float().numpy()[m.xy_j[:, 1], m.xy_j[:, 0]]
        np.testing.assert_allclose(m.conf, np.sqrt(ci * cj), rtol=1e-6, atol=0)

    def test_one_direction_is_official_result(self, landscape, official):
        m = match_pair(make_pred(landscape), both_directions=False)
        np.testing.assert_array_equal(m.xy_i, official["dot_block8192.xy1"].numpy())
        np.testing.assert_array_equal(m.xy_j, official["dot_block8192.xy2"].numpy())

    def test_conf_threshold_and_border(self, landscape):
        pred = make_pred(landscape)
        full = match_pair(pred)
        thr = float(np.median(full.conf))
        high = match_pair(pred, conf_thr=thr)
        assert len(high) == int((full.conf >= thr).sum()) and (high.conf >= thr).all()
        inner = match_pair(pred, border=6)
        for xy in (inner.xy_i, inner.xy_j):
            assert (xy >= 6).all() and (xy[:, 0] < 64 - 6).all() and (xy[:, 1] < 48 - 6).all()
        assert 0 < len(inner) < len(full)

    def test_reverse_prediction_is_merged(self, landscape):
        pred = make_pred(landscape)
        # a reverse prediction that carries swapped descriptors of the same pair finds the same matches again
        rev = make_pred(landscape, i=1, j=0, swap=True)
        both = match_pair(pred, reverse=rev)
        one = match_pair(pred)
        np.testing.assert_array_equal(both.xy_i, one.xy_i)
        np.testing.assert_array_equal(both.xy_j, one.xy_j)
        with pytest.raises(ValueError, match=r"reverse must be the \(1, 0\)"):
            match_pair(pred, reverse=make_pred(landscape))

    def test_no_descriptors(self, landscape):
        pred = make_pred(landscape)
        pred.desc_i = None
        with pytest.raises(ValueError, match="no descriptors"):
            match_pair(pred)

    def test_missing_desc_conf_gives_unit_confidence(self, landscape):
        pred = make_pred(landscape)
        pred.desc_conf_i = pred.desc_conf_j = None
        m = match_pair(pred)
        assert len(m) > 0 and np.all(m.conf == 1)


def test_mixed_shapes_are_reciprocal():
    # the conformance "mixed" case: a 64x48 landscape view against a 48x64 portrait view
    io = load_file(IO)
    d1, d2 = io["mixed.pred1.desc"][0], io["mixed.pred2.desc"][0]
    assert d1.shape[:2] == (48, 64) and d2.shape[:2] == (64, 48)
    xy1, xy2 = fast_reciprocal_nn(d1, d2, 8)
    assert len(xy1) > 0
    assert (xy1[:, 0] < 64).all() and (xy1[:, 1] < 48).all() and (xy2[:, 0] < 48).all() and (xy2[:, 1] < 64).all()
    i1, i2 = xy1[:, 1] * 64 + xy1[:, 0], xy2[:, 1] * 48 + xy2[:, 0]
    assert torch.equal(brute_nn(d1, d2)[i1], i2) and torch.equal(brute_nn(d2, d1)[i2], i1)
