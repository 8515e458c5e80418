"""Metric tests with hand-computed values (reference co3d_eval.md sections 4.3-4.4 and 7.2)."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from tools.eval.metrics import (
    aggregate,
    all_pairs,
    invert_rigid,
    mean_average_accuracy,
    pair_errors,
    pooled_metrics,
    relative_poses,
    rotation_error_deg,
    translation_error_deg,
)


def line_cameras(n=10):
    """Identity rotations, centres (i, 0, 0): the reference's worked-example rig."""
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, 0, 3] = np.arange(n)
    return T


def rotate_frame(T, k, axis, deg):
    T = T.copy()
    T[k, :3, :3] = Rotation.from_euler(axis, deg, degrees=True).as_matrix() @ T[k, :3, :3]
    return T


def metrics_of(T_gt, T_pred, convention="pd"):
    rot, trans = pair_errors(T_gt, T_pred, convention=convention)
    return pooled_metrics(rot, trans), rot, trans


class TestPairs:
    def test_order_and_count(self):
        p = all_pairs(10)
        assert p.shape == (45, 2)
        assert p[:3].tolist() == [[0, 1], [0, 2], [0, 3]]
        assert p[-1].tolist() == [8, 9]

    def test_relative_pose_direction(self):
        # PD: T_j_i maps camera-i coordinates to camera-j; translation = R_j (C_i - C_j).
        T = line_cameras(2)
        rel = relative_poses(T, convention="pd")[0]
        np.testing.assert_allclose(rel[:3, 3], [-1.0, 0.0, 0.0], atol=1e-12)
        rel_v = relative_poses(T, convention="vggt")[0]
        np.testing.assert_allclose(rel_v[:3, 3], [1.0, 0.0, 0.0], atol=1e-12)

    def test_invert_rigid_round_trip(self):
        rng = np.random.default_rng(0)
        T = np.tile(np.eye(4), (5, 1, 1))
        T[:, :3, :3] = Rotation.random(5, random_state=1).as_matrix()
        T[:, :3, 3] = rng.normal(size=(5, 3))
        np.testing.assert_allclose(invert_rigid(T) @ T, np.tile(np.eye(4), (5, 1, 1)), atol=1e-12)


class TestWorkedCases:
    def test_identity_scores_100(self):
        m, rot, trans = metrics_of(line_cameras(), line_cameras())
        assert m["pairs"] == 45
        assert m["RRA@15"] == m["RTA@15"] == m["RRA@5"] == m["mAA(30)"] == 100.0
        assert np.all(rot < 1e-6)
        assert np.all(trans < 1e-5)

    def test_pd_rotation_numerics_floor(self):
        # PyTorch3D extrapolates acos linearly above b = 1 - 1e-4: at cos = 1, arccos(b) - (1 - b) / sqrt(1 - b^2).
        rot, _ = pair_errors(line_cameras(), line_cameras(), rotation_numerics="pd")
        b = 1 - 1e-4
        np.testing.assert_allclose(rot, np.degrees(np.arccos(b) - (1 - b) / np.sqrt(1 - b * b)), rtol=1e-9)
        np.testing.assert_allclose(rot, 0.4051, atol=5e-5)

    def test_pd_numerics_agree_with_exact_above_one_degree(self):
        R = Rotation.from_euler("z", np.array([[1.5], [20.5], [90.0], [170.0]]), degrees=True).as_matrix()
        eye = np.tile(np.eye(3), (4, 1, 1))
        np.testing.assert_allclose(rotation_error_deg(eye, R, "pd"), [1.5, 20.5, 90.0, 170.0], atol=1e-9)
        np.testing.assert_allclose(rotation_error_deg(eye, R, "exact"), [1.5, 20.5, 90.0, 170.0], atol=1e-9)

    def test_mirrored_centres_sign_ambiguity(self):
        pred = line_cameras()
        pred[:, :3, 3] *= -1
        m, _, trans = metrics_of(line_cameras(), pred)
        assert m["RTA@15"] == 100.0 and m["mAA(30)"] == 100.0
        assert np.all(trans < 1e-5)

    def test_opposite_translation_is_zero_error(self):
        err = translation_error_deg(np.array([[1.0, 2.0, 3.0]]), np.array([[-2.0, -4.0, -6.0]]))
        assert err[0] < 1e-5
        np.testing.assert_allclose(
            translation_error_deg(np.array([[1.0, 0, 0]]), np.array([[1.0, 1.0, 0]])), [45.0], atol=1e-9
        )
        np.testing.assert_allclose(
            translation_error_deg(np.array([[1.0, 0, 0]]), np.array([[-1.0, 1.0, 0]])), [45.0], atol=1e-9
        )

    def test_similarity_invariance(self):
        gt = line_cameras()
        S = np.eye(4)
        S[:3, :3] = 3.7 * Rotation.from_euler("xyz", [10, -40, 75], degrees=True).as_matrix()
        S[:3, 3] = [0.3, -2.0, 5.0]
        pred = S @ gt
        pred[:, :3, :3] /= 3.7  # rotation part stays orthonormal: scale acts on centres only
        m, _, _ = metrics_of(gt, pred)
        assert m["RRA@5"] == m["RTA@5"] == m["mAA(30)"] == 100.0

    def test_frame_rotated_about_baseline(self):
        # 9 of 45 pairs involve frame 3 -> RRA = 36/45; mAA = (20*0.8 + 10*1)/30.
        m, rot, _ = metrics_of(line_cameras(), rotate_frame(line_cameras(), 3, "x", 20.5))
        assert m["RRA@15"] == pytest.approx(100 * 36 / 45)
        assert m["RRA@5"] == pytest.approx(100 * 36 / 45)
        assert m["RTA@15"] == 100.0
        assert m["mAA(30)"] == pytest.approx(100 * 26 / 30)
        involved = (all_pairs(10) == 3).any(axis=1)
        np.testing.assert_allclose(rot[involved], 20.5, atol=1e-9)
        assert np.all(rot[~involved] < 1e-6)

    def test_frame_rotated_perpendicular_pd_vs_vggt(self):
        gt, pred = line_cameras(), rotate_frame(line_cameras(), 3, "y", 20.5)
        m_pd, _, t_pd = metrics_of(gt, pred, "pd")
        m_vg, _, t_vg = metrics_of(gt, pred, "vggt")
        pairs = [tuple(p) for p in all_pairs(10)]
        assert [pairs[k] for k in np.flatnonzero(t_pd >= 15)] == [(0, 3), (1, 3), (2, 3)]
        assert [pairs[k] for k in np.flatnonzero(t_vg >= 15)] == [(3, j) for j in range(4, 10)]
        assert m_pd["RTA@15"] == pytest.approx(100 * 42 / 45)
        assert m_vg["RTA@15"] == pytest.approx(100 * 39 / 45)
        assert m_pd["RRA@15"] == m_vg["RRA@15"] == pytest.approx(80.0)
        assert m_pd["mAA(30)"] == m_vg["mAA(30)"] == pytest.approx(100 * 26 / 30)

    def test_relative_pose_input_matches_absolute(self):
        gt, pred = line_cameras(), rotate_frame(line_cameras(), 3, "y", 20.5)
        for conv in ("pd", "vggt"):
            a = pair_errors(gt, pred, convention=conv)
            rel = relative_poses(pred, convention="pd")  # T_rel_pred is always T_j_i
            rel[:, :3, 3] *= 0.25  # pairwise translations have no common scale
            b = pair_errors(gt, T_rel_pred=rel, convention=conv)
            # 1e-4 deg: the 1e-15 clamp of the translation angle puts perfect pairs at ~1e-6 deg, not 0.
            np.testing.assert_allclose(a, b, atol=1e-4)


class TestAUC:
    def test_binning_ladder(self):
        m = np.array([0.5, 1.5, 29.5, 30.0, 31.0, 100.0])
        assert mean_average_accuracy(m, np.zeros_like(m)) == pytest.approx(100 * 61 / 180)

    def test_uses_max_of_rotation_and_translation(self):
        assert mean_average_accuracy(np.array([0.5]), np.array([10.5])) == pytest.approx(100 * 20 / 30)
        assert mean_average_accuracy(np.array([10.5]), np.array([0.5])) == pytest.approx(100 * 20 / 30)

    def test_zero_translation_and_nan(self):
        err = translation_error_deg(np.array([[0.0, 0, 0], [np.nan, 0, 0]]), np.array([[1.0, 0, 0], [1.0, 0, 0]]))
        assert err[0] == pytest.approx(90.0)
        assert err[1] == pytest.approx(np.degrees(1e6))

    def test_strict_thresholds(self):
        m = pooled_metrics(np.array([15.0, 14.999]), np.array([0.0, 15.0]))
        assert m["RRA@15"] == 50.0 and m["RTA@15"] == 50.0


def test_aggregation_mean_over_categories():
    perfect = (np.zeros(45), np.zeros(45))
    bad = (np.full(45, 45.0), np.zeros(45))
    agg = aggregate({"A": [perfect], "B": [perfect, bad]})
    assert agg["categories"]["A"]["mAA(30)"] == 100.0
    assert agg["categories"]["B"]["mAA(30)"] == 50.0
    assert agg["mean"]["mAA(30)"] == pytest.approx(75.0)
    assert agg["mean"]["pairs"] == 135 and agg["mean"]["sequences"] == 3


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match=r"\[N, 4, 4\]"):
        pair_errors(np.eye(4), np.eye(4))
    with pytest.raises(ValueError, match="T_pred or T_rel_pred"):
        pair_errors(line_cameras())
    with pytest.raises(ValueError, match="convention"):
        relative_poses(line_cameras(), convention="xyz")
