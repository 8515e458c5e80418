"""Pieces of ``recon.align.mast3r_sfm`` on hand-made inputs with hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recon.align.dust3r import clean_pointcloud
from recon.align.mast3r_sfm.canonical import anchor_offsets, canonical_view, weiszfeld_focal
from recon.align.mast3r_sfm.config import Mast3rSfmConfig
from recon.align.mast3r_sfm.correspondences import extract_correspondences, reciprocal_nn
from recon.align.mast3r_sfm.optimise import gamma_loss, schedule_lr
from recon.align.mast3r_sfm.tree import hclust_tree, kinematic_tree


class TestGammaLoss:
    @pytest.mark.parametrize(
        ("gamma", "dist", "expected"),
        [
            # gamma 1.5: offset (2/3)^2 = 4/9; d = 21/9 -> (25/9)^1.5 - (4/9)^1.5 = (125 - 8) / 27
            (1.5, 21 / 9, 117 / 27),
            # gamma 0.5: offset (2)^(-2) = 1/4; d = 3/4 -> 1 - 1/2
            (0.5, 0.75, 0.5),
            # gamma 1: plain distance
            (1.0, 2.5, 2.5),
            (1.1, 0.0, 0.0),
        ],
    )
    def test_hand_values(self, gamma, dist, expected):
        x = torch.tensor([[0.0, 0.0, 0.0]], dtype=torch.float64)
        y = torch.tensor([[0.0, dist * 0.6, dist * 0.8]], dtype=torch.float64)
        assert gamma_loss(gamma)(x, y).item() == pytest.approx(expected, rel=1e-12, abs=1e-15)

    @pytest.mark.parametrize("gamma", [0.5, 1.1, 1.5])
    def test_unit_slope_at_zero(self, gamma):
        """The offset is chosen so that the loss starts with slope 1 (official comment)."""
        d = torch.tensor([1e-9], dtype=torch.float64, requires_grad=True)
        loss = gamma_loss(gamma)(torch.zeros(1, 1, dtype=torch.float64), torch.stack([d, 0 * d], -1))
        loss.sum().backward()
        assert d.grad.item() == pytest.approx(1.0, rel=1e-6)


def test_cosine_schedule():
    assert schedule_lr("cosine", 0.0, 0.07) == pytest.approx(0.07)
    assert schedule_lr("cosine", 0.5, 0.07) == pytest.approx(0.035)
    assert schedule_lr("cosine", 1.0, 0.07) == pytest.approx(0.0)
    assert schedule_lr("linear", 0.25, 0.01) == pytest.approx(0.0075)


class TestKinematicTree:
    # 4 views of 100 anchors (cap = 3 * 100 matches): 0-1 strong, 2-3 good, 1-2 weak, 0-2 weaker.
    N_MATCHES = np.array([[0, 300, 30, 0], [300, 0, 90, 0], [30, 90, 0, 240], [0, 0, 240, 0]], np.float32)
    N_ANCHORS = np.array([100, 100, 100, 100])

    def test_hclust_ward_tree(self):
        # ward merges {0,1} (distance 0), then {2,3} (0.2), then the two clusters through their representatives:
        # 1 (row sum 2.3 > 2.1) and 2 (2.2 > 1.8) -> the chain 0-1-2-3.
        tree = hclust_tree(self.N_MATCHES, self.N_ANCHORS, "ward")
        edges = {(i, j) for i, j in zip(*np.nonzero(np.triu(tree, 1)), strict=True)}
        assert edges == {(0, 1), (1, 2), (2, 3)}

    def test_root_is_farthest_from_leaves(self):
        # chain 0-1-2-3: BFS ranks from both ends are [0,1,2,3] / [3,2,1,0]; the first max of the min is node 1
        root, edges = kinematic_tree(self.N_MATCHES, self.N_ANCHORS, "hclust-ward")
        assert root == 1
        assert set(edges) == {(1, 0), (1, 2), (2, 3)}
        assert edges.index((1, 2)) < edges.index((2, 3))  # breadth-first: a parent is placed before its child

    def test_mst_takes_the_strongest_edges(self):
        m = self.N_MATCHES.copy()
        m[0, 2] = m[2, 0] = 200  # now 0-2 beats 1-2
        root, edges = kinematic_tree(m, self.N_ANCHORS, "mst")
        assert {tuple(sorted(e)) for e in edges} == {(0, 1), (0, 2), (2, 3)}
        assert root in (0, 2)  # middle of the longest path 1-0-2-3

    def test_disconnected_mst_is_an_error(self):
        m = np.zeros((3, 3), np.float32)
        m[0, 1] = m[1, 0] = 10
        with pytest.raises(ValueError, match="not connected"):
            kinematic_tree(m, np.array([10, 10, 10]), "mst")


def _onehot_maps(perm: np.ndarray, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Descriptor maps where pixel p of image 1 and pixel perm[p] of image 2 are each other's only match."""
    n = side * side
    d1 = torch.eye(n).reshape(side, side, n)
    d2 = torch.zeros(n, n)
    d2[perm, torch.arange(n)] = 1  # pixel perm[p] of image 2 carries e_p
    return d1, d2.reshape(side, side, n)


class TestMatches:
    def test_reciprocal_nn_follows_the_permutation(self):
        perm = np.roll(np.arange(16), 5)
        d1, d2 = _onehot_maps(perm, 4)
        i1, i2 = reciprocal_nn(d1, d2, subsample=2)
        seeds = np.array([1 * 4 + 1, 1 * 4 + 3, 3 * 4 + 1, 3 * 4 + 3])  # y, x in 1::2
        np.testing.assert_array_equal(i1, seeds)
        np.testing.assert_array_equal(i2, perm[seeds])

    def test_four_maps_merge_into_one_unique_set(self):
        side = 4
        perm = np.roll(np.arange(16), 5)
        d11, d21 = _onehot_maps(perm, side)  # first pass: a=11, b=21
        d12, d22 = _onehot_maps(perm, side)  # second pass: same geometry, so every match is found twice
        q11, q21 = torch.full((side, side), 4.0), torch.full((side, side), 9.0)
        q22, q12 = torch.full((side, side), 1.0), torch.full((side, side), 1.0)
        xy_a, xy_b, conf = extract_correspondences((d11, d21, d22, d12), (q11, q21, q22, q12), subsample=2)
        # seeds in a: pixels 5, 7, 13, 15; seeds in b: 5, 7, 13, 15 -> their partners in a: perm^-1
        inv = np.argsort(perm)
        idx_a = np.union1d([5, 7, 13, 15], inv[[5, 7, 13, 15]])
        np.testing.assert_array_equal((xy_a[:, 1] * side + xy_a[:, 0]).numpy(), idx_a)  # unique, sorted by a
        np.testing.assert_array_equal((xy_b[:, 1] * side + xy_b[:, 0]).numpy(), perm[idx_a])
        # duplicates keep the FIRST occurrence (11<->21 maps): sqrt(4 * 9), not sqrt(1 * 1)
        np.testing.assert_allclose(conf.numpy(), 6.0)

    def test_distinct_matches_of_the_second_pass_are_added(self):
        side = 4
        perm1, perm2 = np.roll(np.arange(16), 5), np.roll(np.arange(16), 3)
        d11, d21 = _onehot_maps(perm1, side)
        d12, d22 = _onehot_maps(perm2, side)
        q = torch.ones(side, side)
        xy_a, xy_b, conf = extract_correspondences((d11, d21, d22, d12), (q, q * 4, q * 9, q * 16), subsample=2)
        pairs = set(
            zip((xy_a[:, 1] * side + xy_a[:, 0]).tolist(), (xy_b[:, 1] * side + xy_b[:, 0]).tolist(), strict=True)
        )
        seeds = [5, 7, 13, 15]
        expected = {(p, perm[p]) for perm in (perm1, perm2) for p in seeds}
        expected |= {(int(np.argsort(perm)[q_]), q_) for perm in (perm1, perm2) for q_ in seeds}
        assert pairs == expected
        assert sorted(set(np.round(conf.numpy(), 6))) == [2.0, 12.0]  # sqrt(1*4), sqrt(16*9)


class TestCanonical:
    def test_anchor_and_offset_on_a_tiny_depth_map(self):
        canon2 = torch.arange(1, 65, dtype=torch.float64).reshape(8, 8)  # anchors at (x, y) in {2, 6}^2, s=4
        xy = torch.tensor([[5, 1], [2, 2], [7, 7], [0, 4]])
        idx, off = anchor_offsets(canon2, xy, subsample=4)
        assert idx.tolist() == [1, 0, 3, 2]
        anchor_value = {0: canon2[2, 2], 1: canon2[2, 6], 2: canon2[6, 2], 3: canon2[6, 6]}
        expected = [canon2[y, x] / anchor_value[int(k)] for (x, y), k in zip(xy.tolist(), idx, strict=True)]
        torch.testing.assert_close(off, torch.stack(expected))

    def test_fronto_parallel_plane(self):
        """A plane at depth 2 seen twice: canon is the plane, relative depth 1 everywhere, conf = sum(w²)/sum(w)."""
        H, W, f = 8, 16, 10.0
        ys, xs = torch.meshgrid(
            torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij"
        )
        plane = torch.stack([(xs - W / 2) / f * 2, (ys - H / 2) / f * 2, torch.full_like(xs, 2.0)], -1)
        conf = torch.stack([torch.full((H, W), 2.0), torch.full((H, W), 3.0)]).double()
        canon, canon2, cconf = canonical_view(torch.stack([plane, plane]), conf, subsample=4)
        torch.testing.assert_close(canon, plane)
        torch.testing.assert_close(canon2, torch.ones(H, W, dtype=torch.float64))
        w1, w2 = 2 - 0.999, 3 - 0.999
        torch.testing.assert_close(cconf, torch.full((H, W), (w1**2 + w2**2) / (w1 + w2), dtype=torch.float64))
        assert weiszfeld_focal(plane).item() == pytest.approx(f, rel=1e-9)

    def test_weiszfeld_focal_is_clipped(self):
        H, W = 8, 16
        ys, xs = torch.meshgrid(
            torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij"
        )
        base = max(H, W) / (2 * math.tan(math.radians(30)))
        for f, expected in ((1000.0, 3.5 * base), (1.0, 0.5 * base)):  # telephoto / fisheye beyond the bounds
            pts = torch.stack([(xs - W / 2) / f, (ys - H / 2) / f, torch.ones_like(xs)], -1)
            assert weiszfeld_focal(pts).item() == pytest.approx(expected)


class TestCleanPointcloud:
    def test_floater_in_front_of_a_confident_view_is_zeroed(self):
        # two identical cameras; view 0 sees a wall at depth 1 with conf 2, view 1 at depth 2 with conf 5
        K = torch.tensor([[[10.0, 0, 1], [0, 10, 0.5], [0, 0, 1]]]).repeat(2, 1, 1)
        cam2w = torch.eye(4).repeat(2, 1, 1)
        depth = [torch.full((2, 3), 1.0), torch.full((2, 3), 2.0)]
        ys, xs = torch.meshgrid(torch.arange(2.0), torch.arange(3.0), indexing="ij")
        world = [torch.stack([(xs - 1) / 10 * d, (ys - 0.5) / 10 * d, torch.full_like(xs, d)], -1) for d in (1.0, 2.0)]
        conf = [torch.full((2, 3), 2.0), torch.full((2, 3), 5.0)]
        out = clean_pointcloud(conf, K, cam2w, depth, world)
        torch.testing.assert_close(out[0], torch.zeros(2, 3))  # in front of view 1 and less confident
        torch.testing.assert_close(out[1], conf[1])  # behind view 0: occlusion, kept
        # a more confident floater is kept
        out = clean_pointcloud([conf[1], conf[0]], K, cam2w, depth, world)
        torch.testing.assert_close(out[0], conf[1])

    def test_equal_depths_are_kept(self):
        """Within the relative tolerance nobody is in front: all kept whatever the confidences."""
        K = torch.tensor([[[10.0, 0, 0], [0, 10, 0], [0, 0, 1]]]).repeat(2, 1, 1)
        cam2w = torch.eye(4).repeat(2, 1, 1)
        world = [torch.tensor([[[0.0, 0.0, 1.0]]]), torch.tensor([[[0.0, 0.0, 1.0]]])]
        depth = [torch.tensor([[1.0]]), torch.tensor([[1.0]])]
        conf = [torch.tensor([[3.0]]), torch.tensor([[4.0]])]
        out = clean_pointcloud(conf, K, cam2w, depth, world)
        assert [c.item() for c in out] == [3.0, 4.0]


class TestConfig:
    def test_official_defaults(self):
        cfg = Mast3rSfmConfig()
        assert (cfg.subsample, cfg.lr1, cfg.niter1, cfg.lr2, cfg.niter2) == (8, 0.07, 300, 0.01, 300)
        assert (cfg.loss1, cfg.loss2, cfg.lossd, cfg.matching_conf_thr, cfg.loss_dust3r_w) == (1.5, 0.5, 1.1, 5.0, 0.01)
        assert (cfg.kinematic_mode, cfg.shared_intrinsics, cfg.opt_pp, cfg.opt_depth) == (
            "hclust-ward",
            False,
            True,
            True,
        )
        assert (cfg.schedule, cfg.depth_mode, cfg.dtype) == ("cosine", "add", "float32")

    def test_bad_values(self):
        with pytest.raises(ValueError, match="kinematic_mode"):
            Mast3rSfmConfig(kinematic_mode="spectral")
        with pytest.raises(TypeError, match="unknown mast3r-sfm option"):
            Mast3rSfmConfig.from_kwargs(lr=0.1)
