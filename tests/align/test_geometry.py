"""Closed-form geometry of the alignment: registration, focal estimation, resection, rotations, trees."""

import numpy as np
import pytest
import roma
import torch

from recon.align.geometry import (
    average_rotations,
    project_to_so3,
    resection_dlt,
    rotation_angle_deg,
    rotvec_to_matrix,
    umeyama,
    weiszfeld_focal,
)
from recon.align.graph import maximum_spanning_tree, tree_order
from recon.align.model import AnchorGrid, gamma_loss


def _random_rotation(rng):
    return project_to_so3(rng.standard_normal((3, 3)))


class TestUmeyama:
    def test_recovers_similarity(self):
        rng = np.random.default_rng(0)
        X = rng.standard_normal((50, 3))
        R, s, t = _random_rotation(rng), 2.5, np.array([1.0, -2.0, 0.5])
        s2, R2, t2 = umeyama(X, s * X @ R.T + t, rng.uniform(0.5, 1, 50))
        assert s2 == pytest.approx(s, rel=1e-10)
        np.testing.assert_allclose(R2, R, atol=1e-10)
        np.testing.assert_allclose(t2, t, atol=1e-10)

    def test_weights_ignore_outliers(self):
        rng = np.random.default_rng(1)
        X = rng.standard_normal((40, 3))
        Y = X.copy()
        Y[:5] += 10.0
        w = np.r_[np.zeros(5), np.ones(35)]
        s, R, t = umeyama(X, Y, w)
        np.testing.assert_allclose([s, *t], [1, 0, 0, 0], atol=1e-10)

    def test_no_scale_and_errors(self):
        X = np.eye(3)
        assert umeyama(X, 3 * X, with_scale=False)[0] == 1.0
        with pytest.raises(ValueError, match="at least 3"):
            umeyama(X, X, np.array([1.0, 0, 0]))
        with pytest.raises(ValueError, match=r"\[P,3\]"):
            umeyama(np.zeros((4, 2)), np.zeros((4, 2)))


def test_weiszfeld_focal_exact_and_robust():
    H, W, f = 24, 32, 40.0
    y, x = np.mgrid[0:H, 0:W].astype(float)
    z = 2 + np.sin(x / 5)
    pts = np.stack([(x - 15.5) / f * z, (y - 11.5) / f * z, z], -1)
    assert weiszfeld_focal(pts, np.array([15.5, 11.5])) == pytest.approx(f, rel=1e-9)
    pts[:20, :5, 0] *= 3  # gross outliers: the L1 estimator barely moves
    assert weiszfeld_focal(pts, np.array([15.5, 11.5])) == pytest.approx(f, rel=1e-2)
    assert np.isnan(weiszfeld_focal(-pts, np.array([15.5, 11.5])))


def test_resection_recovers_camera():
    rng = np.random.default_rng(2)
    R = _random_rotation(rng)
    C = np.array([0.3, -0.2, -4.0])
    K = np.array([[300.0, 0, 64], [0, 300, 48], [0, 0, 1]])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, C
    Xc = np.c_[rng.uniform(-1, 1, (100, 2)), rng.uniform(3, 6, 100)]
    Xw = Xc @ R.T + C
    uv = Xc[:, :2] / Xc[:, 2:] * 300 + [64, 48]
    K2, T2 = resection_dlt(Xw, uv)
    np.testing.assert_allclose(K2, K, rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(T2, T, atol=1e-7)


def test_rotvec_matches_roma_and_has_finite_gradient_at_zero():
    rv = torch.randn(10, 3, dtype=torch.float64)
    torch.testing.assert_close(rotvec_to_matrix(rv), roma.rotvec_to_rotmat(rv), rtol=1e-12, atol=1e-12)
    z = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True)
    rotvec_to_matrix(z).sum().backward()
    assert torch.isfinite(z.grad).all()
    assert torch.autograd.gradcheck(rotvec_to_matrix, (torch.randn(3, 3, dtype=torch.float64, requires_grad=True),))


def test_rotation_average_and_angle():
    rng = np.random.default_rng(3)
    R = _random_rotation(rng)
    small = roma.rotvec_to_rotmat(torch.tensor([[0.01, 0, 0], [-0.01, 0, 0]], dtype=torch.float64)).numpy()
    np.testing.assert_allclose(average_rotations(small @ R), R, atol=1e-12)
    assert rotation_angle_deg(small[0] @ R, R) == pytest.approx(np.degrees(0.01), rel=1e-6)


def test_maximum_spanning_tree_and_centre_root():
    # A path 0-1-2-3-4 of strong edges plus weak shortcuts: the MST is the path, its centre is 2.
    S = np.zeros((5, 5))
    for a in range(4):
        S[a, a + 1] = 10
    S[0, 4] = S[1, 3] = 1
    edges = maximum_spanning_tree(S)
    assert edges == [(0, 1), (1, 2), (2, 3), (3, 4)]
    root, order = tree_order(5, edges, list(range(5)))
    assert root == 2
    assert order[:2] == [(2, 1), (2, 3)] and len(order) == 4


def test_anchor_grid_bilinear_interpolates_anchors():
    g = AnchorGrid(20, 30, 8, offset=5)
    px = g.pixels()
    assert px.shape == (g.h * g.w, 2) and (g.h, g.w) == (2, 4)  # anchors at y 4, 12 and x 4, 12, 20, 28
    idx, w = g.bilinear(px.astype(float))
    hit = idx[np.arange(len(px)), np.argmax(w, 1)]
    np.testing.assert_array_equal(hit, 5 + np.arange(len(px)))  # an anchor pixel is its own anchor
    np.testing.assert_allclose(w.sum(1), 1)
    idx, w = g.bilinear(np.array([[8.0, 4.0]]))  # halfway between anchors 0 and 1 of the first row
    np.testing.assert_allclose(sorted(w[0])[-2:], [0.5, 0.5])


def test_gamma_loss_slope_one_at_zero():
    d = torch.tensor([0.0], requires_grad=True)
    for g in (0.5, 1.5):
        (grad,) = torch.autograd.grad(gamma_loss(d, g).sum(), d)
        assert float(gamma_loss(d, g).detach()) == 0 and float(grad) == pytest.approx(1.0)
