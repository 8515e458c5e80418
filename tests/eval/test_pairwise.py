"""Pairwise (essential-matrix) geometry on synthetic correspondences and ground-truth pair predictions."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from recon.datasets.data import EvalFrame
from recon.geometry import K_from_focal, unproject
from tools.eval.metrics import all_pairs, pair_errors, pooled_metrics, rotation_error_deg, translation_error_deg
from tools.eval.model_predictors import PairOutputs, PairwisePredictor
from tools.eval.pairwise import estimate_focal, relative_pose_from_matches, star_poses
from tools.eval.predictors import as_prediction
from tools.oracle import oracle_predictions
from tools.synth import render_scene


class TestFocal:
    def test_exact_pointmap(self):
        K = K_from_focal(123.4, (48, 64))
        depth = np.random.default_rng(0).uniform(1, 5, (48, 64))
        assert estimate_focal(unproject(depth, K)) == pytest.approx(123.4, rel=1e-9)

    def test_robust_to_outliers_and_masks_low_confidence(self):
        K = K_from_focal(80.0, (60, 80))
        rng = np.random.default_rng(1)
        P = unproject(rng.uniform(1, 5, (60, 80)), K)
        bad = rng.random((60, 80)) < 0.15
        P[bad] = rng.normal(size=(int(bad.sum()), 3)) + [0, 0, 3]
        assert estimate_focal(P) == pytest.approx(80.0, rel=0.03)
        conf = np.where(bad, 1.0, 5.0)
        assert estimate_focal(P, conf, min_conf=2.0) == pytest.approx(80.0, rel=1e-9)

    def test_clamped_to_plausible_range(self):
        K = K_from_focal(5000.0, (48, 64))
        f = estimate_focal(unproject(np.full((48, 64), 2.0), K))
        assert f == pytest.approx(3.5 * 64 / (2 * np.tan(np.radians(30))))


def synthetic_pair(R, t, K_i, K_j, n=400, noise_px=0.3, outlier_frac=0.2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.uniform([-2, -2, 4], [2, 2, 8], size=(n, 3))  # camera-i frame
    Xj = X @ R.T + t
    xi = X @ K_i.T
    xj = Xj @ K_j.T
    xy_i = xi[:, :2] / xi[:, 2:] + rng.normal(scale=noise_px, size=(n, 2))
    xy_j = xj[:, :2] / xj[:, 2:] + rng.normal(scale=noise_px, size=(n, 2))
    out = rng.random(n) < outlier_frac
    xy_j[out] = rng.uniform([0, 0], [640, 480], size=(int(out.sum()), 2))
    return xy_i, xy_j


class TestEssential:
    R = Rotation.from_euler("xyz", [4, -12, 3], degrees=True).as_matrix()
    t = np.array([0.8, 0.1, 0.2])

    # Plain RANSAC keeps the best minimal-sample model, so its error is a few times that of USAC's refined one.
    @pytest.mark.parametrize("method, max_rot, max_trans", [("ransac", 1.0, 4.0), ("usac_accurate", 0.3, 1.0)])
    def test_recovers_pose_with_noise_and_outliers(self, method, max_rot, max_trans):
        K_i, K_j = K_from_focal(500, (480, 640)), K_from_focal(450, (480, 640))
        for seed in range(3):
            xy_i, xy_j = synthetic_pair(self.R, self.t, K_i, K_j, seed=seed)
            pose = relative_pose_from_matches(xy_i, xy_j, K_i, K_j, ransac_px=1.5, method=method)
            assert pose.ok and pose.inliers > 250  # ~80 % of 400 are inliers
            assert rotation_error_deg(self.R[None], pose.T_j_i[None, :3, :3])[0] < max_rot
            assert translation_error_deg(self.t[None], pose.T_j_i[None, :3, 3])[0] < max_trans
            assert np.linalg.norm(pose.T_j_i[:3, 3]) == pytest.approx(1.0)
            again = relative_pose_from_matches(xy_i, xy_j, K_i, K_j, ransac_px=1.5, method=method)
            np.testing.assert_array_equal(again.T_j_i, pose.T_j_i)  # seeded RANSAC repeats exactly

    def test_too_few_matches_fail_with_zero_translation(self):
        K = K_from_focal(500, (480, 640))
        xy_i, xy_j = synthetic_pair(self.R, self.t, K, K, n=6)
        pose = relative_pose_from_matches(xy_i, xy_j, K, K)
        assert not pose.ok and pose.matches == 6
        # A failed pair scores 90 deg of translation error, never a lucky pass.
        assert translation_error_deg(self.t[None], pose.T_j_i[None, :3, 3])[0] == pytest.approx(90.0)

    def test_shape_mismatch(self):
        with pytest.raises(ValueError, match="same shape"):
            relative_pose_from_matches(np.zeros((10, 2)), np.zeros((9, 2)), np.eye(3), np.eye(3))


def test_star_poses_put_camera_zero_at_origin():
    T = np.tile(np.eye(4), (5, 1, 1))
    T[:, :3, 3] = np.arange(5)[:, None] * [1.0, 0, 0]
    from tools.eval.metrics import relative_poses

    rel = relative_poses(T)
    star = star_poses(rel, 5)
    np.testing.assert_allclose(star, T, atol=1e-12)


@pytest.fixture(scope="module")
def synth_views():
    return render_scene("orbit", n_views=10, size=(96, 72), seed=3)


@pytest.mark.parametrize("method, min_rra5, min_rta15", [("usac_accurate", 100.0, 100.0), ("ransac", 80.0, 95.0)])
def test_pairwise_predictor_on_ground_truth_pairs(synth_views, method, min_rra5, min_rta15):
    """Oracle pair predictions (depth noise, 20 % wrong matches, unknown per-pair scale, integer pixels at
    96x72) -> near-perfect poses with USAC; plain RANSAC's unrefined minimal model is a few degrees off."""
    frames = [
        EvalFrame(k, f"v{k}.png", f"/nonexistent/v{k}.png", v.T_world_cam, v.K, (72, 96))
        for k, v in enumerate(synth_views)
    ]

    def source(fr):
        pairs = [p for i, j in all_pairs(len(fr)).tolist() for p in ((i, j), (j, i))]
        views, preds, matches = oracle_predictions(
            synth_views, pairs, depth_noise=0.002, wrong_match_frac=0.2, n_matches=400, seed=0
        )
        return PairOutputs(views, {(p.i, p.j): p for p in preds}, {(m.i, m.j): m for m in matches})

    pred = as_prediction(PairwisePredictor(source, ransac_px=1.0, ransac_method=method).predict(frames), 10)
    assert pred.T_rel.shape == (45, 4, 4) and pred.info["failed_pairs"] == []
    T_gt = np.stack([f.T_world_cam for f in frames])
    rot, trans = pair_errors(T_gt, T_rel_pred=pred.T_rel)
    m = pooled_metrics(rot, trans)
    assert m["RRA@5"] >= min_rra5
    assert m["RTA@15"] >= min_rta15
    # Focals come from the point maps, within a few percent of the renderer's.
    np.testing.assert_allclose(pred.K[:, 0, 0], [v.K[0, 0] for v in synth_views], rtol=0.03)
    # Swapping two views' roles would break the pair convention: the reversed relative poses score badly.
    rot_bad, trans_bad = pair_errors(T_gt, T_rel_pred=np.linalg.inv(pred.T_rel))
    assert pooled_metrics(rot_bad, trans_bad)["RTA@15"] < m["RTA@15"]
