"""The sparse alignment's closed-form loss gradients against autograd of the same losses written plainly."""

from __future__ import annotations

import numpy as np
import pytest
import roma
import torch

from recon.align.match_loss import MatchLoss


def _rho(d, gamma):
    o = (1 / gamma) ** (1 / (gamma - 1))
    return (d + o) ** gamma - o**gamma


def _problem(seed: int = 0, n: int = 3, m: int = 40, n_anchors: int = 30):
    rng = np.random.default_rng(seed)
    view = np.concatenate([rng.integers(0, n, m), rng.integers(0, n, m)])
    xy = rng.uniform(0, 64, (2 * m, 2))
    cz = rng.uniform(1, 3, 2 * m)
    aidx = rng.integers(0, n_anchors, (2 * m, 4))
    aw = rng.dirichlet(np.ones(4), 2 * m)
    aw[:3] = 0  # ends without anchors (regression ends)
    conf = rng.uniform(0.5, 2, m)
    conf /= conf.sum()
    # the camera parameters as the scene model has them (a rotation vector, not a free 3x3 matrix)
    leaves = [
        torch.as_tensor(rng.normal(0, 0.3, (n, 3))),
        torch.as_tensor(rng.normal(0, 0.5, (n, 3))),
        torch.as_tensor(rng.uniform(50, 80, (n, 1))),
        torch.as_tensor(rng.uniform(28, 36, (n, 2))),
        torch.as_tensor(rng.uniform(0.8, 1.2, (n, 1))),
        torch.as_tensor(rng.normal(0, 0.1, n_anchors)),
    ]
    for x in leaves:
        x.requires_grad_()
    ml = MatchLoss(view, xy, cz, aidx, aw, conf, n, n_anchors, 1e-3, dtype=torch.float64)
    return ml, leaves, (view, xy, cz, aidx, aw, conf, m)


def _table(leaves):
    rot, t, f, pp, s, _ = leaves
    return torch.cat([roma.rotvec_to_rotmat(rot).reshape(-1, 9), t, f, pp, s], 1)


def _world(tab, delta, view, xy, cz, aidx, aw):
    T = tab[torch.as_tensor(view)]
    R, t, f, pp, s = T[:, :9].reshape(-1, 3, 3), T[:, 9:12], T[:, 12:13], T[:, 13:15], T[:, 15]
    z = torch.as_tensor(cz) * s * torch.exp((delta[torch.as_tensor(aidx)] * torch.as_tensor(aw)).sum(1))
    p = torch.cat([(torch.as_tensor(xy) - pp) / f * z[:, None], z[:, None]], 1)
    return (R @ p[:, :, None])[:, :, 0] + t, T


def _plain_3d(tab, delta, view, xy, cz, aidx, aw, conf, m):
    X, T = _world(tab, delta, view, xy, cz, aidx, aw)
    dist_cam = (X - T[:, 9:12]).norm(dim=1)
    ref = 0.5 * (dist_cam[:m] + dist_cam[m:])
    d = (X[:m] - X[m:]).norm(dim=1) / ref.clamp(min=1e-3)
    return (torch.as_tensor(conf) * _rho(d, 1.5)).sum()


def _plain_2d(tab, delta, view, xy, cz, aidx, aw, conf, m):
    X, T = _world(tab, delta, view, xy, cz, aidx, aw)
    R, t, f, pp = T[:, :9].reshape(-1, 3, 3), T[:, 9:12], T[:, 12:13], T[:, 13:15]
    other = torch.cat([X[m:], X[:m]])
    q = (R.transpose(1, 2) @ (other - t)[:, :, None])[:, :, 0]
    uv = q[:, :2] / q[:, 2:3].clamp(min=1e-3) * f + pp
    err = (uv.clamp(-1e4, 1e4) - torch.as_tensor(xy)).norm(dim=1)
    c = torch.as_tensor(conf)
    return 0.5 * (torch.cat([c, c]) * _rho(err, 0.5)).sum()


@pytest.mark.parametrize("which", ["3d", "2d"])
@pytest.mark.parametrize("seed", [0, 1])
def test_closed_form_gradients_match_autograd(which, seed):
    ml, leaves, args = _problem(seed)
    plain = _plain_3d if which == "3d" else _plain_2d
    tab, delta = _table(leaves), leaves[-1]
    ref = plain(tab, delta, *args)
    want = torch.autograd.grad(ref, leaves, retain_graph=True)
    loss, g_tab, g_delta = (ml.loss_3d if which == "3d" else ml.loss_2d)(tab.detach(), delta.detach())
    got = [*torch.autograd.grad(tab, leaves[:-1], g_tab), g_delta]
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-10, atol=1e-12)
    for name, g, w in zip(("rot", "t", "f", "pp", "scale", "delta"), got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-7, atol=1e-10, msg=lambda m, name=name: f"{name}: {m}")
        assert w.abs().sum() > 0, name
    assert ml.loss_3d(tab.detach(), delta.detach(), grad=False)[1] is None
