"""Alignment helpers: spanning trees, the anchor grid and the robust loss (the geometry is in tests/geometry)."""

import numpy as np
import pytest
import torch

from recon.align.graph import maximum_spanning_tree, tree_order
from recon.align.model import AnchorGrid, gamma_loss


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
