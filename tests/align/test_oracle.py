"""The oracle predictor: point maps and matches agree with ground truth up to the requested errors."""

import numpy as np
import pytest
import torch

from tools.oracle import oracle_predictions


def _to_world(gt, k, P_cam_i, i):
    T = gt[i].T_world_cam
    return P_cam_i @ T[:3, :3].T + T[:3, 3]


def test_noise_free_point_maps_are_ground_truth_up_to_one_scale_per_pair(orbit_gt):
    gt = orbit_gt[:3]
    views, preds, matches = oracle_predictions(gt, [(0, 1), (1, 0), (0, 2)], depth_noise=0.0, wrong_match_frac=0)
    assert [v.idx for v in views] == [0, 1, 2] and views[0].image.shape == (3, *gt[0].depth.shape)
    assert len(preds) == 3 and len(matches) == 2  # one match set per unordered pair
    p = preds[0]
    assert p.pts3d_i.dtype == torch.float16 and p.desc_i is None
    valid_i, valid_j = gt[0].depth > 0, gt[1].depth > 0
    zi = p.pts3d_i[..., 2].float().numpy()
    s = np.median(zi[valid_i] / gt[0].depth[valid_i])
    np.testing.assert_allclose(zi[valid_i] / s, gt[0].depth[valid_i], rtol=2e-3)  # float16 storage
    # View j's points, in camera i's frame, land on view j's GT points.
    y, x = np.nonzero(valid_j)
    K = gt[1].K
    z = gt[1].depth[y, x]
    Pj = np.stack([(x - K[0, 2]) / K[0, 0] * z, (y - K[1, 2]) / K[1, 1] * z, z], -1)
    T_i_j = np.linalg.inv(gt[0].T_world_cam) @ gt[1].T_world_cam
    expected = Pj @ T_i_j[:3, :3].T + T_i_j[:3, 3]
    got = p.pts3d_j.float().numpy()[y, x] / s
    assert np.median(np.linalg.norm(got - expected, axis=1) / z) < 2e-3
    assert (p.conf_i.float().numpy()[valid_i] > 1).all()
    # Different pairs carry different scales, as a network's would.
    s2 = np.median(preds[2].pts3d_i[..., 2].float().numpy()[valid_i] / gt[0].depth[valid_i])
    assert abs(np.log(s2 / s)) > 1e-3


def test_matches_are_correct_except_the_wrong_fraction(orbit_gt):
    gt = orbit_gt[:2]
    _, _, (m,) = oracle_predictions(gt, [(0, 1)], wrong_match_frac=0.25, n_matches=200, seed=1)
    assert m.xy_i.dtype == np.int64 and m.conf.dtype == np.float32 and len(m) == 200
    xi, yi = m.xy_i.T
    z = gt[0].depth[yi, xi].astype(float)
    K0, K1 = gt[0].K, gt[1].K
    X = np.stack([(xi - K0[0, 2]) / K0[0, 0] * z, (yi - K0[1, 2]) / K0[1, 1] * z, z], -1)
    T = np.linalg.inv(gt[1].T_world_cam) @ gt[0].T_world_cam
    Xj = X @ T[:3, :3].T + T[:3, 3]
    uv = Xj[:, :2] / Xj[:, 2:] * K1[0, 0] + K1[:2, 2]
    err = np.linalg.norm(uv - m.xy_j, axis=1)
    frac_right = np.mean(err <= 0.75)
    assert frac_right == pytest.approx(0.75, abs=0.03)  # a random pixel is right by chance only rarely


def test_deterministic_and_checked(orbit_gt):
    gt = orbit_gt[:2]
    a = oracle_predictions(gt, [(0, 1)], seed=3)
    b = oracle_predictions(gt, [(0, 1)], seed=3)
    assert torch.equal(a[1][0].pts3d_j, b[1][0].pts3d_j) and np.array_equal(a[2][0].xy_j, b[2][0].xy_j)
    with pytest.raises(ValueError, match="two different views"):
        oracle_predictions(gt, [(0, 0)])
    with pytest.raises(ValueError, match="wrong_match_frac"):
        oracle_predictions(gt, [(0, 1)], wrong_match_frac=1.5)
