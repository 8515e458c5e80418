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
    autograd_step,
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
    rows = []  # per entry: anchor index (global), edge index, pred point, weight
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
            rows.append((grids[k].offset + np.arange(grids[k].size), np.full(grids[k].size, e), P, w))
        try:
            s, R, t = umeyama(np.concatenate(src), np.concatenate(dst), np.concatenate(wts))
        except ValueError:
            s, R, t = 1.0, np.eye(3), np.zeros(3)
        sim0[e, :, :3], sim0[e, :, 3], log_s0[e] = R, t, np.log(max(s, 1e-12))
    anchor_idx, edge_idx, pred_pts, weight = (np.concatenate(c) for c in zip(*rows, strict=True))
    anchor_view = np.concatenate([np.full(g.size, k) for k, g in enumerate(grids)])
    anchor_xy = np.concatenate(anchor_px).astype(np.float64)
    anchor_z = np.concatenate(
        [prob.canon[k][px[:, 1], px[:, 0], 2] if reg[k] else np.ones(len(px)) for k, px in enumerate(anchor_px)]
    )

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

    t_ = {
        "view": torch.as_tensor(anchor_view, device=dev),
        "xy": torch.as_tensor(anchor_xy, dtype=dtype, device=dev),
        "z": torch.as_tensor(anchor_z, dtype=dtype, device=dev),
        "anchor": torch.as_tensor(anchor_idx, device=dev),
        "edge": torch.as_tensor(edge_idx, device=dev),
        "pred": torch.as_tensor(pred_pts, dtype=dtype, device=dev),
    }
    pred_norm = torch.as_tensor(np.linalg.norm(pred_pts, axis=1), dtype=dtype, device=dev).clamp(min=1e-12)
    w = torch.as_tensor(weight * (np.linalg.norm(pred_pts, axis=1) > 0), dtype=dtype, device=dev)
    w = w / w.sum().clamp(min=1e-12)

    def loss_fn():
        tab = model.camera_table().index_select(0, t_["view"])
        z = t_["z"] * tab[:, 15] * torch.exp(model.delta)
        X = SceneModel.to_world(tab, t_["xy"], z).index_select(0, t_["anchor"])  # [P,3]
        lam = pw_log_s if free_scale else pw_log_s - pw_log_s.mean()
        sR = torch.exp(log_s_e0 + lam)[:, None, None] * (roma.rotvec_to_rotmat(pw_rot) @ R_e0)
        te = t_e0 + pw_trans * scene_scale
        etab = torch.cat([sR.reshape(-1, 9), te], 1).index_select(0, t_["edge"])
        Y = torch.bmm(etab[:, :9].reshape(-1, 3, 3), t_["pred"][:, :, None])[:, :, 0] + etab[:, 9:]
        # Residuals relative to the point's distance from the pair's camera (at the pair's world scale): the
        # loss is then invariant to the global scale, so nothing rewards shrinking the scene around fixed poses.
        s_e = torch.exp(log_s_e0 + lam).index_select(0, t_["edge"])
        return (w * (X - Y).norm(dim=-1) / (s_e * pred_norm)).sum()

    names = ["rot", "trans", "log_scale"] + (["delta"] if cfg.opt_depth else [])
    names += (["log_focal"] if cfg.opt_focal else []) + (["pp_off"] if cfg.opt_pp else [])
    params = model.parameter_groups(names) + [pw_rot, pw_trans, pw_log_s]
    with intra_op_threads(cfg.threads):
        info.update(
            run_stage(
                autograd_step(loss_fn),
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
