"""The sparse alignment's losses on matched pixels, with their gradients in closed form.

Autograd over a few thousand matches spends most of its time in per-op bookkeeping and in the backward pass's
scatter-adds (measured: 55 % of the sparse alignment), and a graph of ~100 small ops per iteration is what a
busy machine punishes most. Here one iteration is a fixed sequence of ~60 whole-array ops over all match ends
at once, forward and backward written out, and two index-adds at the end (one into the ``[N, 16]`` camera
table, one into the anchor depths). The camera table itself (``SceneModel.camera_table``, N rows) still goes
through autograd: ``tab.backward(grad_tab)`` carries the gradient to the pose, focal and scale parameters.

Notation (one row per match *end* ``e``; ends ``0..M-1`` are the first pixels of the matches, ``M..2M-1`` the
second, so ``other(e) = (e + M) mod 2M``): camera ``(R, t, f, pp, s)`` = the row of ``e``'s view in the table,

    z_e = cz_e · s · exp(Σ_a w_ea δ_a),   r_e = ((x_e − pp) / f, 1),   p_e = r_e z_e,   X_e = R p_e + t

(``cz`` the canonical depth, ``δ`` the anchor log-depth corrections, ``w`` bilinear weights).

- ``loss_3d``: ``Σ_k c_k ρ_1.5(‖X_a − X_b‖ / max(½(‖p_a‖ + ‖p_b‖), z_min))``: distances relative to the points'
  distances from their cameras (scale-invariant; far matches do not dominate).
- ``loss_2d``: ``½ Σ_k c_k [ρ_0.5(‖π_a(X_b) − x_a‖) + ρ_0.5(‖π_b(X_a) − x_b‖)]`` with ``π`` the pinhole projection,
  its depth clamped at ``z_min`` and its pixels at ±1e4.

``ρ_γ(d) = (d + o)^γ − o^γ`` with ``o = (1/γ)^(1/(γ−1))`` (MASt3R-SfM's robust penalty, slope 1 at 0).
"""

from __future__ import annotations

import numpy as np
import torch

_TINY = 1e-12


def _offset(gamma: float) -> float:
    return (1 / gamma) ** (1 / (gamma - 1))


class MatchLoss:
    """Closed-form loss and gradient of the matched pixels of a sparse alignment.

    Args:
        view: ``[2M]`` view of every match end (first ends, then second ends).
        xy: ``[2M, 2]`` pixel of every end (may lie outside the image for regression ends, see ``sparse.py``).
        canon_z: ``[2M]`` canonical depth at the end.
        anchor_idx, anchor_w: ``[2M, 4]`` global anchor indices and bilinear weights (all-zero weights: no anchor).
        conf: ``[M]`` match weights, summing to 1.
        n_views, n_anchors: sizes of the camera table and of the anchor vector.
        min_z: depth floor (scene units).
    """

    def __init__(self, view, xy, canon_z, anchor_idx, anchor_w, conf, n_views: int, n_anchors: int, min_z: float,
                 dtype=torch.float32, device="cpu"):  # fmt: skip
        def t(x, dt=dtype):
            return torch.as_tensor(np.asarray(x), dtype=dt, device=device)

        self.view = t(view, torch.int64)
        self.xy = t(xy)
        self.cz = t(canon_z)
        self.aidx = t(anchor_idx, torch.int64)
        self.aidx_flat = self.aidx.reshape(-1)
        self.aw = t(anchor_w)
        self.conf = t(conf)
        self.M = len(conf)
        self.n_views, self.n_anchors, self.min_z = n_views, n_anchors, float(min_z)
        if self.view.shape != (2 * self.M,) or self.xy.shape != (2 * self.M, 2):
            raise ValueError(
                f"expected {2 * self.M} match ends, got view {tuple(self.view.shape)}, xy {tuple(xy.shape)}"
            )

    def _swap(self, x: torch.Tensor) -> torch.Tensor:
        """The other end's row for every end."""
        return torch.roll(x, self.M, 0)

    def _points(self, tab: torch.Tensor, delta: torch.Tensor) -> dict:
        """Forward pass shared by both losses: camera rows, rays, depths, camera and world points of every end."""
        T = tab.index_select(0, self.view)  # E 16
        R = T[:, :9].reshape(-1, 3, 3)
        f = T[:, 12:13]
        pp = T[:, 13:15]
        dc = torch.exp((delta.index_select(0, self.aidx_flat).reshape(self.aidx.shape) * self.aw).sum(1))
        z = self.cz * T[:, 15] * dc
        rxy = (self.xy - pp) / f
        p = torch.cat([rxy * z[:, None], z[:, None]], 1)  # E 3, camera frame
        X = torch.bmm(R, p[:, :, None])[:, :, 0] + T[:, 9:12]  # E 3, world
        return {"R": R, "t": T[:, 9:12], "f": f, "pp": pp, "dc": dc, "z": z, "rxy": rxy, "p": p, "X": X}

    def _backward(self, c: dict, gX, gp_extra=None, gR=None, gt=None, gf=None, gpp=None):
        """Chain ``dL/dX_e`` (plus any direct terms on ``p`` and on the end's camera) back to the table and δ."""
        R, p, z, rxy, f = c["R"], c["p"], c["z"], c["rxy"], c["f"]
        gp = torch.bmm(R.transpose(1, 2), gX[:, :, None])[:, :, 0]
        if gp_extra is not None:
            gp = gp + gp_extra
        gR_pt = gX[:, :, None] * p[:, None, :]  # dL/dR_ij = gX_i p_j
        gz = (gp[:, :2] * rxy).sum(1) + gp[:, 2]
        grxy = gp[:, :2] * z[:, None]
        g_pp = -grxy / f
        g_f = -(grxy * rxy).sum(1, keepdim=True) / f
        g_s = (gz * self.cz * c["dc"])[:, None]
        g_t = gX
        if gR is not None:
            gR_pt, g_t, g_f, g_pp = gR_pt + gR, g_t + gt, g_f + gf, g_pp + gpp
        rows = torch.cat([gR_pt.reshape(-1, 9), g_t, g_f, g_pp, g_s], 1)  # E 16, the table's layout
        g_tab = torch.zeros(self.n_views, 16, dtype=rows.dtype, device=rows.device).index_add_(0, self.view, rows)
        g_logdc = gz * z
        g_delta = torch.zeros(self.n_anchors, dtype=rows.dtype, device=rows.device)
        g_delta.index_add_(0, self.aidx_flat, (g_logdc[:, None] * self.aw).reshape(-1))
        return g_tab, g_delta

    @torch.no_grad()
    def loss_3d(self, tab: torch.Tensor, delta: torch.Tensor, grad: bool = True):
        """``(loss, dL/dtab [N, 16], dL/dδ [A])`` of the 3D loss (gradients ``None`` when ``grad`` is false)."""
        M, g = self.M, 1.5
        c = self._points(tab, delta)
        D = c["X"][:M] - c["X"][M:]
        n = D.norm(dim=1)
        pn = c["p"].norm(dim=1)
        ref = 0.5 * (pn[:M] + pn[M:])
        refc = ref.clamp(min=self.min_z)
        d = n / refc
        o = _offset(g)
        loss = (self.conf * ((d + o) ** g - o**g)).sum()
        if not grad:
            return loss, None, None
        u = self.conf * g * (d + o) ** (g - 1)  # dL/dd
        gXa = (u / (refc * n.clamp(min=_TINY)))[:, None] * D
        gref = -u * d / refc * (ref > self.min_z)
        gpn = 0.5 * torch.cat([gref, gref]) / pn.clamp(min=_TINY)
        g_tab, g_delta = self._backward(c, torch.cat([gXa, -gXa]), gp_extra=gpn[:, None] * c["p"])
        return loss, g_tab, g_delta

    @torch.no_grad()
    def loss_2d(self, tab: torch.Tensor, delta: torch.Tensor, grad: bool = True):
        """``(loss, dL/dtab [N, 16], dL/dδ [A])`` of the 2D reprojection loss."""
        g = 0.5
        c = self._points(tab, delta)
        R, f = c["R"], c["f"]
        Y = self._swap(c["X"]) - c["t"]  # the other end's world point, relative to this end's camera centre
        q = torch.bmm(R.transpose(1, 2), Y[:, :, None])[:, :, 0]  # in this end's camera frame
        qz = q[:, 2:3]
        qzc = qz.clamp(min=self.min_z)
        uv = q[:, :2] / qzc * f + c["pp"]
        r = uv.clamp(-1e4, 1e4) - self.xy
        err = r.norm(dim=1)
        w = 0.5 * torch.cat([self.conf, self.conf])
        o = _offset(g)
        loss = (w * ((err + o) ** g - o**g)).sum()
        if not grad:
            return loss, None, None
        gerr = w * g * (err + o) ** (g - 1)
        guv = (gerr / err.clamp(min=_TINY))[:, None] * r * (uv.abs() < 1e4)
        gq_xy = guv * f / qzc
        gq_z = -(guv * q[:, :2]).sum(1, keepdim=True) * f / qzc**2 * (qz > self.min_z)
        gq = torch.cat([gq_xy, gq_z], 1)
        gY = torch.bmm(R, gq[:, :, None])[:, :, 0]  # dL/dY
        # the projection's own camera: dL/dR_ij = Y_i gq_j, dL/dt = -gY, focal and principal point directly
        g_tab, g_delta = self._backward(
            c,
            self._swap(gY),  # Y_e depends on the other end's world point
            gR=Y[:, :, None] * gq[:, None, :],
            gt=-gY,
            gf=(guv * q[:, :2] / qzc).sum(1, keepdim=True),
            gpp=guv,
        )
        return loss, g_tab, g_delta
