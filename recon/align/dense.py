"""Dense global alignment in the style of DUSt3R: every pair's point maps, one similarity per pair.

Unknowns: per view a pose, focal (and optionally principal point), a depth scale and a log-depth correction on a
pixel grid of stride ``subsample``; per ordered pair ``e = (i, j)`` a similarity ``S_e`` taking the pair's frame
(camera ``i`` at the pair's scale) to the world. The loss is DUSt3R's confidence-weighted L1 distance, made relative:

    Σ_e Σ_x log(conf) · ‖X_world(x) − S_e(pred_e(x))‖ / (s_e·‖pred_e(x)‖)

over both point maps of every pair, divided by the total weight. Dividing by the point's distance from the
pair's camera makes the loss scale-invariant (DUSt3R's absolute distances reward a shrinking scene, which biases
the scale when known poses pin it) and stops far points from dominating. Initialisation chains
similarity registrations along the maximum spanning tree of pair scores ``mean(conf_i)·mean(conf_j)`` (with
Weiszfeld focals), then registers each pair onto the initial world points to start ``S_e``. Without two known
poses the scale is fixed by holding the geometric mean of the pair scales, as DUSt3R does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np
import roma
import torch

from recon.align.config import DenseAlignConfig
from recon.align.init import chain_init, gauge_from_known_poses
from recon.align.model import (
    AnchorGrid,
    SceneModel,
    as_numpy_poses,
    densify_depth,
    run_stage,
)
from recon.align.problem import build_problem, finish_scene
from recon.geometry import umeyama
from recon.threads import intra_op_threads
from recon.types import PairPrediction, Priors, Scene, View

logger = logging.getLogger(__name__)


def dense_align(
    views: Sequence[View],
    preds: Sequence[PairPrediction],
    priors: Priors | None = None,
    config: DenseAlignConfig | None = None,
) -> Scene:
    """Globally align N views from their pair point maps alone (DUSt3R style).

    Args:
        views: N views; ``image [3, H, W]`` gives shapes and colours.
        preds: ordered pair predictions (``pts3d_i / pts3d_j [H, W, 3]`` in camera ``i``'s frame, any per-pair
            scale; ``conf_i / conf_j [H, W]``); every view needs a pair where it is ``i``.
        priors: known intrinsics (fixed), shared intrinsics, known poses (fixed).
        config: ``DenseAlignConfig``.

    Returns:
        A ``Scene``; views outside the main connected component of pairs are unregistered.

    Raises:
        AlignmentError: inconsistent inputs or priors.
    """
    cfg = config or DenseAlignConfig()
    t_start = time.perf_counter()
    prob = build_problem(views, preds, priors, cfg.min_conf)
    n = prob.n
    scores = np.zeros((n, n))
    for (i, j), p in prob.pairs.items():
        scores[i, j] = max(scores[i, j], p.score)
    init = chain_init(prob, scores, seed=cfg.seed)
    n_known = gauge_from_known_poses(init, prob.known_poses)
    reg = init.registered
    info: dict = {"method": "dense", "tree": init.tree, "root": init.root, "t_init_s": time.perf_counter() - t_start}
    edges = [(i, j) for (i, j) in sorted(prob.pairs) if reg[i] and reg[j]]
    if reg.sum() < 2 or not edges:
        logger.warning("dense alignment: fewer than two views could be registered")
        return finish_scene(prob, init.T_world_cam, init.scale, None, [None] * n, reg, n_known, info, t_start)

    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    dev = torch.device(cfg.device)
    grids, off = [], 0
    for H, W in prob.shapes:
        grids.append(AnchorGrid(H, W, cfg.subsample, off))
        off += grids[-1].size
    anchor_px = [g.pixels() for g in grids]
    scene_scale = float(np.median([np.median(prob.canon[k][..., 2]) * init.scale[k] for k in np.flatnonzero(reg)]))

    # World points of every anchor at the initialisation, used to start the pair similarities.
    def init_world(k):
        x, y = anchor_px[k][:, 0], anchor_px[k][:, 1]
        P = prob.canon[k][y, x] * init.scale[k]
        return P @ init.T_world_cam[k, :3, :3].T + init.T_world_cam[k, :3, 3]

    world0 = {k: init_world(k) for k in np.flatnonzero(reg)}
    # One block per (ordered pair, side): the side's view, the pair, its predicted points and weights on the
    # view's whole anchor grid, padded to the largest grid (weight 0) so every block has S rows.
    S = max(g.size for g in grids)
    blocks = []  # (view, edge, pred [size, 3], weight [size])
    sim0 = np.zeros((len(edges), 3, 4))
    log_s0 = np.zeros(len(edges))
    for e, (i, j) in enumerate(edges):
        p = prob.pairs[(i, j)]
        src, dst, wts = [], [], []
        for k, pts, conf in ((i, p.pts_i, p.conf_i), (j, p.pts_j, p.conf_j)):
            x, y = anchor_px[k][:, 0], anchor_px[k][:, 1]
            P = pts[y, x].astype(np.float64)
            w = np.log(np.clip(conf[y, x].astype(np.float64), 1.0, None)) * (conf[y, x] > cfg.min_conf)
            src.append(P)
            dst.append(world0[k])
            wts.append(w)
            blocks.append((k, e, P, w))
        try:
            s, R, t = umeyama(np.concatenate(src), np.concatenate(dst), np.concatenate(wts))
        except ValueError:
            s, R, t = 1.0, np.eye(3), np.zeros(3)
        sim0[e, :, :3], sim0[e, :, 3], log_s0[e] = R, t, np.log(max(s, 1e-12))
    blk_view = np.array([b[0] for b in blocks])
    blk_edge = np.array([b[1] for b in blocks])
    pred_pts = np.zeros((len(blocks), S, 3))
    weight = np.zeros((len(blocks), S))
    for b, (_, _, P, w) in enumerate(blocks):
        pred_pts[b, : len(P)], weight[b, : len(w)] = P, w
    # [N, S] index of each view's anchors in the global anchor vector; padding points at one extra row (A).
    pad_idx = np.full((n, S), off)
    for k, g in enumerate(grids):
        pad_idx[k, : g.size] = g.offset + np.arange(g.size)
    # Per view, its anchors' pixels and canonical depths, channels first ([N, 2, S], [N, S]; zero padding).
    xy_pad = np.zeros((n, 2, S))
    z_pad = np.zeros((n, S))
    for k, px in enumerate(anchor_px):
        xy_pad[k, :, : len(px)] = px.T
        z_pad[k, : len(px)] = prob.canon[k][px[:, 1], px[:, 0], 2] if reg[k] else 1.0

    pose_free = reg & ~np.isin(np.arange(n), list(prob.known_poses))
    if n_known == 0:
        pose_free[init.root] = False
    model = SceneModel(
        init.T_world_cam,
        np.log(init.scale),
        prob.focal0,
        prob.pp0,
        [(W, H) for H, W in prob.shapes],
        off,
        scene_scale,
        pose_free,
        reg,
        ~prob.focal_known & reg & cfg.opt_focal,
        ~prob.pp_known & reg & cfg.opt_pp,
        prob.shared,
        dtype=dtype,
        device=dev,
    )
    ne = len(edges)
    pw_rot = torch.nn.Parameter(torch.zeros(ne, 3, dtype=dtype, device=dev))
    pw_trans = torch.nn.Parameter(torch.zeros(ne, 3, dtype=dtype, device=dev))
    pw_log_s = torch.nn.Parameter(torch.zeros(ne, dtype=dtype, device=dev))
    R_e0 = torch.as_tensor(sim0[:, :, :3], dtype=dtype, device=dev)
    t_e0 = torch.as_tensor(sim0[:, :, 3], dtype=dtype, device=dev)
    log_s_e0 = torch.as_tensor(log_s0, dtype=dtype, device=dev)
    free_scale = n_known >= 2  # otherwise the geometric mean of the pair scales is the gauge

    xy_t = torch.as_tensor(xy_pad, dtype=dtype, device=dev)
    z_t = torch.as_tensor(z_pad, dtype=dtype, device=dev)
    pad_t = torch.as_tensor(pad_idx.reshape(-1), device=dev)
    pred_norm = np.linalg.norm(pred_pts, axis=-1)
    w = weight * (pred_norm > 0) / np.maximum(pred_norm, 1e-12)
    w = w / max((weight * (pred_norm > 0)).sum(), 1e-12)
    pair_loss = PairLoss(
        torch.as_tensor(blk_view, device=dev),
        torch.as_tensor(blk_edge, device=dev),
        torch.as_tensor(pred_pts, dtype=dtype, device=dev),
        torch.as_tensor(w, dtype=dtype, device=dev),
    )

    def objective(grad: bool = True) -> torch.Tensor:
        # Autograd covers the anchors' world points (per view, channels first: [N, 3, S]) and the pairs'
        # similarities; the residuals of every block (anchors x pairs) are differentiated in closed form.
        with torch.set_grad_enabled(grad):
            R, t = model.poses()
            f, pp = model.focals(), model.principal_points()
            delta = torch.cat([model.delta, model.delta.new_zeros(1)]).index_select(0, pad_t).reshape(n, S)
            z = z_t * model.depth_scales()[:, None] * torch.exp(delta)  # [N, S]
            p = torch.cat([(xy_t - pp[:, :, None]) / f[:, None, None] * z[:, None, :], z[:, None, :]], 1)
            X = torch.baddbmm(t[:, :, None], R, p)  # [N, 3, S]
            lam = pw_log_s if free_scale else pw_log_s - pw_log_s.mean()
            s_e = torch.exp(log_s_e0 + lam)
            sR = s_e[:, None, None] * (roma.rotvec_to_rotmat(pw_rot) @ R_e0)
            te = t_e0 + pw_trans * scene_scale
        return pair_loss(X, sR, te, s_e, grad)

    names = ["rot", "trans", "log_scale"] + (["delta"] if cfg.opt_depth else [])
    names += (["log_focal"] if cfg.opt_focal else []) + (["pp_off"] if cfg.opt_pp else [])
    params = model.parameter_groups(names) + [pw_rot, pw_trans, pw_log_s]
    with intra_op_threads(cfg.threads):
        info.update(
            run_stage(
                objective,
                params,
                cfg.lr,
                cfg.niter,
                "dense",
                cfg.progress,
                lr_min=cfg.lr * 1e-3,
                rel_tol=cfg.rel_tol,
            )
        )

    T = as_numpy_poses(model)
    with torch.no_grad():
        focal = model.focals().double().cpu().numpy()
        pp = model.principal_points().double().cpu().numpy()
    depth = [densify_depth(model, k, prob.canon[k][..., 2], grids[k]) if reg[k] else None for k in range(n)]
    info["n_edges"] = ne
    return finish_scene(prob, T, None, (focal, pp), depth, reg, n_known, info, t_start)


class PairLoss:
    """The dense loss over blocks of anchors, its gradient in closed form.

    A block ``b`` is one side of one ordered pair: view ``k_b``'s anchor grid (``S`` anchors, padded) with the
    pair's predicted points ``q_b [S, 3]`` and weights ``c_b [S]`` (weight over the point's norm; 0 on padding)::

        L = Σ_b Σ_x c_bx ‖X[k_b, :, x] − (M[e_b] q_bx + t[e_b])‖ / s[e_b]

    with ``X [N, 3, S]`` the anchors' world points (channels first), ``M [E, 3, 3]`` = scale x rotation and
    ``t [E, 3]`` each pair's similarity, ``s [E]`` its scale. Autograd over the B x S entries kept a graph of
    gathers, products and norms per iteration whose backward (row scatter-adds) was most of the aligner's time;
    here forward and backward are ~15 whole-block ops (3 x S products, channel sums: contiguous and vectorised)
    and four ``index_add_`` of whole blocks, and only ``X, M, t, s`` go back through autograd. Checked against
    autograd in ``tests/align/test_dense_loss.py``.

    Args:
        view: ``[B]`` view of each block; edge: ``[B]`` its ordered pair.
        pred: ``[B, S, 3]`` predicted points (pair frame); coef: ``[B, S]`` weights.
    """

    def __init__(self, view: torch.Tensor, edge: torch.Tensor, pred: torch.Tensor, coef: torch.Tensor):
        self.view, self.edge, self.pred, self.coef = view, edge, pred, coef
        self.pred_t = pred.transpose(1, 2).contiguous()  # [B, 3, S]

    def __call__(self, X, M, t, s, grad: bool = True) -> torch.Tensor:
        """The loss (0-d, detached); with ``grad``, backpropagates it into whatever ``X, M, t, s`` depend on."""
        Xd, Md, td, sd = X.detach(), M.detach(), t.detach(), s.detach()
        Mb, sb = Md.index_select(0, self.edge), sd.index_select(0, self.edge)
        Y = torch.baddbmm(td.index_select(0, self.edge)[:, :, None], Mb, self.pred_t)  # [B, 3, S]
        d = Xd.index_select(0, self.view) - Y
        r = (d * d).sum(1).sqrt()  # [B, S]
        c = self.coef / sb[:, None]
        cr = c * r
        loss = cr.sum()
        if not grad or not torch.isfinite(loss):
            return loss
        g = d * (c / r.clamp(min=1e-30))[:, None, :]  # dL/dX per entry; 0 where the residual is 0 (as autograd)
        gX = torch.zeros_like(Xd).index_add_(0, self.view, g)
        gM = torch.zeros_like(Md).index_add_(0, self.edge, torch.bmm(g, self.pred)).neg_()
        gt = torch.zeros_like(td).index_add_(0, self.edge, g.sum(2)).neg_()
        gs = torch.zeros_like(sd).index_add_(0, self.edge, cr.sum(1)).neg_() / sd
        outs = [(o, go) for o, go in ((X, gX), (M, gM), (t, gt), (s, gs)) if o.requires_grad]
        if outs:
            torch.autograd.backward([o for o, _ in outs], [go for _, go in outs])
        return loss
