"""Pair data: crops keep intrinsics right, GT correspondences, one aspect per batch, mixture weights, CO3D reader."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, default_collate

from tools.synth import Co3dSequence, render_scene, write_co3d
from training.common.data import InfiniteDistributedSampler
from training.finetune.datasets import (
    RESOLUTIONS,
    AspectBatchSampler,
    Co3dPairs,
    DataConfigError,
    MixtureDataset,
    PairDataset,
    SyntheticPairs,
    check_resolutions,
)
from training.finetune.geometry import Frame, crop_box, crop_resize, project, reciprocal_matches, sample_correspondences


@pytest.fixture(scope="module")
def views():
    return render_scene("orbit", n_views=3, size=(96, 72), seed=3)


def frame_of(view):
    return Frame(view.rgb, np.where(view.mask, view.depth, 0).astype(np.float32), view.K, view.T_world_cam)


class TestCropResize:
    @pytest.mark.parametrize("target", [(56, 42), (28, 56), (42, 42), (140, 98)])  # down, portrait, square, up
    def test_every_valid_pixel_reprojects_onto_itself(self, views, target):
        src = frame_of(views[0])
        _, _, w, h = crop_box(src.size, src.K, target)
        f = crop_resize(src, target)
        assert f.size == target and f.rgb.shape == (target[1], target[0], 3)
        ys, xs = np.nonzero(f.valid)
        assert len(xs) > 50
        uv, z = project(f.pts3d[ys, xs], f.K, f.T_world_cam)
        np.testing.assert_allclose(z, f.depth[ys, xs], rtol=1e-5)
        # Nearest-pixel sampling: a point is off its pixel centre by at most half a *source* pixel.
        err = np.abs(uv - np.stack([xs, ys], 1))
        assert err[:, 0].max() <= 0.5 * max(1.0, target[0] / w) + 1e-4
        assert err[:, 1].max() <= 0.5 * max(1.0, target[1] / h) + 1e-4

    def test_principal_point_stays_centred(self, views):
        for target in ((56, 42), (56, 28), (28, 56)):
            K = crop_resize(frame_of(views[1]), target).K
            np.testing.assert_allclose(K[:2, 2], [(target[0] - 1) / 2, (target[1] - 1) / 2], atol=0.5 * 96 / 56 + 1e-6)

    def test_off_centre_principal_point_and_zoom(self, views):
        f = frame_of(views[0])
        K = f.K.copy()
        K[0, 2] += 10  # the crop follows the principal point
        f = Frame(f.rgb, f.depth, K, f.T_world_cam)
        g = crop_resize(f, (32, 24), zoom=1.5)
        assert abs(g.K[0, 2] - 15.5) <= 1.0 and g.K[0, 0] > f.K[0, 0] * 32 / 96  # zoomed in: larger focal

    def test_principal_point_outside_is_an_error(self, views):
        f = frame_of(views[0])
        K = f.K.copy()
        K[0, 2] = -5
        with pytest.raises(ValueError, match="principal point"):
            crop_resize(Frame(f.rgb, f.depth, K, f.T_world_cam), (32, 24))


class TestCorrespondences:
    def test_matches_are_the_same_surface_point(self, views):
        f1, f2 = crop_resize(frame_of(views[0]), (56, 42)), crop_resize(frame_of(views[1]), (56, 42))
        m = reciprocal_matches(f1, f2)
        assert len(m) > 100
        p1, p2 = f1.pts3d[m[:, 1], m[:, 0]], f2.pts3d[m[:, 3], m[:, 2]]
        scene_scale = np.linalg.norm(f1.pts3d[f1.valid] - f1.T_world_cam[:3, 3], axis=-1).mean()
        assert np.median(np.linalg.norm(p1 - p2, axis=-1)) < 0.05 * scene_scale
        # Reciprocal: no view-2 pixel is claimed twice.
        assert len(np.unique(m[:, 2] + 1000 * m[:, 3])) == len(m)

    def test_a_view_matches_itself_everywhere_it_is_valid(self, views):
        f = crop_resize(frame_of(views[2]), (56, 42))
        m = reciprocal_matches(f, f)
        assert len(m) == f.valid.sum()
        np.testing.assert_array_equal(m[:, :2], m[:, 2:])

    def test_sampling_counts_and_padding(self):
        rng = np.random.default_rng(0)
        matches = np.array([[1, 2, 3, 4]] * 10 + [[5, 6, 7, 8]] * 5)
        c1, c2, valid = sample_correspondences(matches, 40, 0.5, (10, 10), (12, 9), rng)
        assert c1.shape == c2.shape == (40, 2) and valid.sum() == 15  # fewer matches than 20: negatives fill up
        assert (c2[:, 0] < 12).all() and (c2[:, 1] < 9).all()
        c1, c2, valid = sample_correspondences(matches, 10, 0.5, (10, 10), (10, 10), rng)
        assert valid.sum() == 5
        c1, c2, valid = sample_correspondences(matches[:0], 8, 0.5, (10, 10), (10, 10), rng)
        assert valid.sum() == 0 and c1.shape == (8, 2)


class TestBatches:
    def test_a_batch_mixes_no_aspect_and_every_resolution_is_sampled(self):
        res = RESOLUTIONS["dune336"]
        sampler = InfiniteDistributedSampler(1000, seed=0, with_seeds=True, rank=0, world_size=1)
        batches = AspectBatchSampler(sampler, 4, res, portrait_prob=0.5, seed=0)
        seen = set()
        for _, batch in zip(range(300), batches, strict=False):
            shapes = {item[2] for item in batch}
            assert len(shapes) == 1 and len(batch) == 4
            seen |= shapes
        landscape = {r for r in res}
        portrait = {(h, w) for w, h in res if w != h}
        assert seen == landscape | portrait

    def test_ranks_draw_the_same_resolution_and_resume_continues(self):
        res = RESOLUTIONS["dune448"]
        a = AspectBatchSampler(InfiniteDistributedSampler(50, seed=1, with_seeds=True, rank=0, world_size=2), 2, res)
        b = AspectBatchSampler(InfiniteDistributedSampler(50, seed=1, with_seeds=True, rank=1, world_size=2), 2, res)
        first_a = [batch[0][2] for _, batch in zip(range(20), a, strict=False)]
        first_b = [batch[0][2] for _, batch in zip(range(20), b, strict=False)]
        assert first_a == first_b
        a.sampler.position = 10 * 2  # resumed after 10 batches
        assert [batch[0][2] for _, batch in zip(range(10), a, strict=False)] == first_a[10:]

    def test_loader_batches_stack_and_have_one_shape(self):
        ds = PairDataset(SyntheticPairs(2, 3, (84, 63), seed=2), n_corres=32)
        sampler = InfiniteDistributedSampler(len(ds), seed=0, with_seeds=True, rank=0, world_size=1)
        loader = DataLoader(
            ds, batch_sampler=AspectBatchSampler(sampler, 2, [(56, 42)], 1.0), collate_fn=default_collate
        )
        batch = next(iter(loader))
        assert batch["view1"]["img"].shape == batch["view2"]["img"].shape == (2, 3, 56, 42)  # portrait
        assert batch["view1"]["corres"].shape == (2, 32, 2) and batch["valid_corres"].any()
        assert batch["is_metric"].all()
        for v in ("view1", "view2"):  # synthetic rays that hit nothing are sky
            assert torch.equal(batch[v]["sky"], ~batch[v]["valid"])

    def test_resolution_checks(self):
        assert check_resolutions([[448, 336]], 14) == ((448, 336),)
        for name, patch in (("dune336", 14), ("dune448", 14), ("mast3r512", 16)):
            check_resolutions(RESOLUTIONS[name], patch)
        with pytest.raises(DataConfigError, match="multiple of the patch size 16"):
            check_resolutions([[448, 294]], 16)


def test_mixture_weights_and_mapping():
    a = PairDataset(SyntheticPairs(1, 4, (32, 24), seed=0, name="a"))
    b = PairDataset(SyntheticPairs(2, 5, (32, 24), seed=0, name="b"))
    mix = MixtureDataset([a, b], [3.0, 1.0], size=400)
    assert mix.sizes == [300, 100] and len(mix) == 400
    ks = [mix.locate(i) for i in range(400)]
    assert sum(k == 0 for k, _ in ks) == 300
    assert {j for k, j in ks if k == 0} == set(range(4)) and {j for k, j in ks if k == 1} == set(range(10))
    with pytest.raises(DataConfigError, match="positive"):
        MixtureDataset([a], [0.0])


@pytest.fixture(scope="module")
def co3d_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("co3d")
    seqs = [
        Co3dSequence(f"s{i}", render_scene("orbit", n_views=4, size=(64, 48), seed=10 + i), split="train")
        for i in range(2)
    ]
    write_co3d(root, {"apple": seqs, "teddybear": seqs[:1]}, file_index_offset=1)
    return root


class TestCo3d:
    def test_reads_the_published_layout_with_consistent_cameras(self, co3d_root):
        src = Co3dPairs(co3d_root, subset="fewview_dev", split="train", max_frame_gap=2, mask_bg="none")
        assert len(src) == 12 and not src.metric
        rng = np.random.default_rng(0)
        f1, f2 = src.pair(1, rng)
        assert f1.rgb.shape == (48, 64, 3) and f1.valid.any()
        g1, g2 = crop_resize(f1, (56, 42)), crop_resize(f2, (56, 42))
        m = reciprocal_matches(g1, g2)
        assert len(m) > 50  # CO3D cameras, depth PNGs and our conversion agree: the two views see one surface
        p1, p2 = g1.pts3d[m[:, 1], m[:, 0]], g2.pts3d[m[:, 3], m[:, 2]]
        assert np.median(np.linalg.norm(p1 - p2, axis=-1)) < 0.05 * np.abs(g1.depth[g1.valid]).mean()

    def test_partners_stay_in_the_sequence_within_the_gap(self, co3d_root):
        src = Co3dPairs(co3d_root, categories=["apple"], subset="fewview_dev", split="train", max_frame_gap=1)
        rng = np.random.default_rng(1)
        partners = set()
        for i in range(len(src)):
            for _ in range(4):
                _, f2 = src.pair(i, rng)
                (j,) = [k for k, r in enumerate(src.records) if np.array_equal(r["T"], f2.T_world_cam)]
                assert src.seq_ids[j] == src.seq_ids[i] and abs(j - i) == 1
                partners.add((i, j))
        assert len(partners) == 2 * (len(src) - 2)  # both neighbours of inner frames, one for the ends

    def test_mask_bg_always_keeps_only_the_object(self, co3d_root):
        every = Co3dPairs(co3d_root, subset="fewview_dev", split="train", mask_bg="none")
        masked = Co3dPairs(co3d_root, subset="fewview_dev", split="train", mask_bg="always")
        rng = np.random.default_rng(0)
        assert masked.pair(0, rng)[0].valid.sum() < every.pair(0, rng)[0].valid.sum()

    def test_errors_name_the_problem(self, co3d_root, tmp_path):
        with pytest.raises(DataConfigError, match="not a folder"):
            Co3dPairs(tmp_path / "nope")
        with pytest.raises(DataConfigError, match="set_lists_fewview_train"):
            Co3dPairs(co3d_root)  # the writer makes fewview_dev only
        with pytest.raises(DataConfigError, match="no frame in split"):
            Co3dPairs(co3d_root, subset="fewview_dev", split="val")

    def test_samples_from_co3d(self, co3d_root):
        ds = PairDataset(Co3dPairs(co3d_root, subset="fewview_dev", split="train"), n_corres=16)
        s = ds[(3, 7, (42, 28))]
        assert s["view1"]["img"].shape == (3, 28, 42) and s["dataset"] == "co3d"
        assert torch.isfinite(s["view2"]["pts3d"]).all()
        # The world is re-centred on view 1's camera.
        assert torch.allclose(s["view1"]["T_world_cam"][:3, 3], torch.zeros(3), atol=1e-6)
