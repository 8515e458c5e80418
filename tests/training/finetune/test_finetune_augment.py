"""MASt3R's pair augmentations against hand-worked values: aug_crop amount and boxes, the crop homography,
the best crop pair, aug_monocular."""

import numpy as np
import pytest

from tools.synth import render_scene
from training.finetune.datasets import DataConfigError, PairDataset, SyntheticPairs
from training.finetune.geometry import (
    Frame,
    aug_crop_amount,
    best_crop_pair,
    crop_homography,
    project,
    random_crops,
    reciprocal_matches,
)


@pytest.fixture(scope="module")
def views():
    return render_scene("orbit", n_views=2, size=(96, 72), seed=5)


def frame_of(v):
    return Frame(v.rgb, np.where(v.mask, v.depth, 0).astype(np.float32), v.K, v.T_world_cam)


class TestAugCropAmount:
    def test_auto(self):
        # S = 384, R = 336: S (S - R) // R = 18432 // 336 = 54 > 0.1 S = 38.4.
        assert aug_crop_amount((512, 384), (512, 336), "auto") == 54.0
        # S = 480, R = 160: 480 * 320 // 160 = 960.
        assert aug_crop_amount((640, 480), (512, 160), "auto") == 960.0
        # S = R: only the 10 % floor.
        assert aug_crop_amount((512, 384), (512, 384), "auto") == pytest.approx(38.4)
        assert aug_crop_amount((512, 384), (512, 384), 16) == 16.0


class TestRandomCrops:
    def test_no_augmentation_is_the_largest_box(self):
        crops = random_crops((100, 80), (50, 40), 0.0, 3, np.random.default_rng(0))
        np.testing.assert_allclose(crops, [[-0.5, -0.5, 99.5, 79.5]] * 3)

    def test_hand_values(self):
        # Same draws as the function: s = exp(u0 * log(1 + 50 / 80)), then top-left = r * (floor(size s) - box).
        rng = np.random.default_rng(1)
        u0 = rng.uniform(0, np.log(1 + 50 / 80))
        r = rng.random((2, 2))
        s = np.exp(u0)
        box = np.array([100.0, 75.0])  # aspect 4:3 of the largest box in 100 x 80
        tl = r * (np.floor(np.array([100, 80]) * s) - box)
        expected = np.concatenate([tl, tl + box], 1) / s - 0.5
        got = random_crops((100, 80), (40, 30), 50.0, 2, np.random.default_rng(1))
        np.testing.assert_allclose(got, expected)
        assert (got[:, :2] >= -0.5).all() and (got[:, 2] <= 99.5).all() and (got[:, 3] <= 79.5).all()


class TestCropHomography:
    def test_centred_full_crop_is_a_plain_resize(self, views):
        f = frame_of(views[0])
        K = f.K.copy()
        K[:2, 2] = [47.5, 35.5]  # principal point at the centre of the 96 x 72 image
        f = Frame(f.rgb, f.depth, K, f.T_world_cam)
        g = crop_homography(f, np.array([-0.5, -0.5, 95.5, 71.5]), (48, 36))
        np.testing.assert_allclose(g.K, [[K[0, 0] / 2, 0, 23.5], [0, K[1, 1] / 2, 17.5], [0, 0, 1]])
        np.testing.assert_allclose(g.T_world_cam, f.T_world_cam, atol=1e-12)  # R = identity

    def test_off_centre_crop_keeps_geometry_exact(self, views):
        f = frame_of(views[1])
        crop = np.array([30.5, 10.5, 94.5, 58.5])  # 64 x 48 box right of the principal point
        g = crop_homography(f, crop, (32, 24))
        np.testing.assert_allclose(g.K[:2, 2], [15.5, 11.5])  # principal point centred
        R = np.linalg.inv(f.T_world_cam[:3, :3]) @ g.T_world_cam[:3, :3]
        np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(R) == pytest.approx(1.0)
        assert np.allclose(g.T_world_cam[:3, 3], f.T_world_cam[:3, 3])  # same centre
        # The farthest crop corner (x1 = 94.5, y0 = 10.5 from cx ~ 47.5, cy ~ 35.5) maps to output (31.5, -0.5).
        Hm = f.K @ R @ np.linalg.inv(g.K)
        p = Hm @ [31.5, -0.5, 1.0]
        np.testing.assert_allclose(p[:2] / p[2], [94.5, 10.5], atol=1e-9)
        ys, xs = np.nonzero(g.valid)
        assert len(xs) > 100
        uv, z = project(g.pts3d[ys, xs], g.K, g.T_world_cam)
        np.testing.assert_allclose(z, g.depth[ys, xs], rtol=1e-5)
        assert np.abs(uv - np.stack([xs, ys], 1)).max() < 0.5 * 32 / 64 + 0.05  # half a source pixel


def test_best_crop_pair_maximises_shared_correspondences(views):
    f1, f2 = frame_of(views[0]), frame_of(views[1])
    c1, c2 = best_crop_pair(f1, f2, (32, 24), 96.0, 4, np.random.default_rng(2))
    # Brute force over the same 4 x 4 candidates (same draws).
    rng = np.random.default_rng(2)
    cand1, cand2 = random_crops(f1.size, (32, 24), 96.0, 4, rng), random_crops(f2.size, (32, 24), 96.0, 4, rng)
    m = reciprocal_matches(f1, f2)

    def count(a, b):
        inside = lambda p, c: (p[:, 0] >= c[0]) & (p[:, 1] >= c[1]) & (p[:, 0] < c[2]) & (p[:, 1] < c[3])  # noqa: E731
        return int((inside(m[:, :2], a) & inside(m[:, 2:], b)).sum())

    best = max(count(a, b) for a in cand1 for b in cand2)
    assert count(c1, c2) == best and best > 0


class TestPairDatasetOptions:
    def test_monocular_always(self):
        src = SyntheticPairs(1, 3, (64, 48), seed=1)
        s = PairDataset(src, n_corres=32, aug_monocular=1.0)[(0, 11, (32, 24))]
        for key in ("img", "pts3d", "K", "T_world_cam", "valid"):
            np.testing.assert_array_equal(s["view1"][key].numpy(), s["view2"][key].numpy())
        v = s["valid_corres"].numpy()
        np.testing.assert_array_equal(s["view1"]["corres"].numpy()[v], s["view2"]["corres"].numpy()[v])

    def test_never_monocular_and_bad_option(self):
        src = SyntheticPairs(1, 3, (64, 48), seed=1)
        s = PairDataset(src, n_corres=32, aug_monocular=0.0)[(0, 11, (32, 24))]
        assert not np.array_equal(s["view1"]["T_world_cam"].numpy(), s["view2"]["T_world_cam"].numpy())
        with pytest.raises(DataConfigError, match="aug_crop"):
            PairDataset(src, aug_crop="random")


class TestColorJitter:
    """MASt3R's ``ColorJitter(0.5, 0.5, 0.5, 0.1)`` as the pair datasets apply it, against hand-worked values."""

    def draws(self, seed):
        """The factors and order the jitter draws from a generator seeded with ``seed``."""
        import torch

        g = torch.Generator().manual_seed(seed)
        b, c, s = (0.5 + float(torch.rand(1, generator=g)) for _ in range(3))  # U(1 - 0.5, 1 + 0.5)
        h = -0.1 + 0.2 * float(torch.rand(1, generator=g))
        return b, c, s, h, torch.randperm(4, generator=g).tolist()

    def test_gray_pixels_follow_brightness_and_contrast_only(self):
        import torch

        from training.distill.augment import color_jitter

        # Two gray pixels 0.2 and 0.6: saturation and hue leave gray unchanged; contrast blends with the mean gray.
        x = torch.tensor([0.2, 0.6]).view(1, 1, 2).expand(3, 1, 2).clone()
        for seed in range(5):
            b, c, _, _, order = self.draws(seed)
            v = np.array([0.2, 0.6])
            for op in order:
                if op == 0:
                    v = np.clip(v * b, 0, 1)
                elif op == 1:
                    v = np.clip(c * v + (1 - c) * v.mean(), 0, 1)
            out = color_jitter(x, torch.Generator().manual_seed(seed), 0.5, 0.5, 0.5, 0.1)
            np.testing.assert_allclose(out[0, 0].numpy(), v, atol=1e-6)
            np.testing.assert_allclose(out[1], out[0], atol=1e-6)  # still gray

    def test_hue_shift_of_pure_red(self):
        import torch

        from training.distill.augment import _adjust_hue

        red = torch.tensor([1.0, 0.0, 0.0]).view(3, 1, 1)
        # Hue 0 -> 1/6 turn (yellow): (1, 1, 0); -1/6 -> magenta (1, 0, 1); 0.05 turn -> (1, 0.3, 0).
        np.testing.assert_allclose(_adjust_hue(red, 1 / 6).flatten().numpy(), [1, 1, 0], atol=1e-6)
        np.testing.assert_allclose(_adjust_hue(red, -1 / 6).flatten().numpy(), [1, 0, 1], atol=1e-6)
        np.testing.assert_allclose(_adjust_hue(red, 0.05).flatten().numpy(), [1, 0.3, 0], atol=1e-6)
