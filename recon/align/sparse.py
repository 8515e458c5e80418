"""Sparse global alignment in the style of MASt3R-SfM: anchors, a kinematic-tree start, 3D then 2D losses.

1. Canonical point maps per view (``problem.canonical_pointmap``) and their Weiszfeld focals.
2. Matches are checked against the pair's own point maps (both pixels must land on nearby 3D points, in one
   frame, so wrong correspondences are cheap to spot) and each matched pixel is tied to its four surrounding
   anchors (bilinear relative depth offsets from the canonical depth).
3. Initialisation by chained registrations along the maximum spanning tree of match counts (``init``).
4. Coarse stage: poses and per-view scales minimise the robust 3D distance between matched points.
5. Fine stage: + focals, principal points and anchor depths minimise the robust 2D reprojection error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from recon.align.config import SparseAlignConfig
from recon.align.init import chain_init, gauge_from_known_poses
from recon.align.match_loss import MatchLoss
from recon.align.model import AnchorGrid, SceneModel, as_numpy_poses, densify_depth, run_stage
from recon.align.problem import Problem, build_problem, finish_scene
from recon.threads import intra_op_threads
from recon.types import Matches, PairPrediction, Priors, Scene, View

logger = logging.getLogger(__name__)


@dataclass
class MatchSet:
    """All usable correspondences, one row per (pair, match), as NumPy arrays."""

    view_a: np.ndarray  # [M] int64
    view_b: np.ndarray  # [M]
    xy_a: np.ndarray  # [M,2] float64
    xy_b: np.ndarray  # [M,2]
    conf: np.ndarray  # [M] float64
    counts: np.ndarray  # [N,N] consistent matches per (unordered) pair


def _consistent(prob: Problem, m: Matches, tol: float) -> np.ndarray:
    """``[M]`` bool: the match is in bounds, on valid canonical pixels and (if ``tol``) 3D-consistent."""
    i, j = m.i, m.j
    (Hi, Wi), (Hj, Wj) = prob.shapes[i], prob.shapes[j]
    xi, yi = m.xy_i[:, 0], m.xy_i[:, 1]
    xj, yj = m.xy_j[:, 0], m.xy_j[:, 1]
    ok = (xi >= 0) & (xi < Wi) & (yi >= 0) & (yi < Hi) & (xj >= 0) & (xj < Wj) & (yj >= 0) & (yj < Hj)
    ok &= np.isfinite(m.conf) & (m.conf > 0)
    if not ok.any():
        return ok
    xi, yi, xj, yj = (np.where(ok, v, 0) for v in (xi, yi, xj, yj))
    ok &= (prob.canon_conf[i][yi, xi] > 1) & (prob.canon_conf[j][yj, xj] > 1)
    ok &= (prob.canon[i][yi, xi, 2] > 0) & (prob.canon[j][yj, xj, 2] > 0)
    pair = prob.best_pair(i, j)
    if tol > 0 and pair is not None:
        if pair.i == i:
            Pa, Pb = pair.pts_i[yi, xi], pair.pts_j[yj, xj]
        else:
            Pa, Pb = pair.pts_j[yi, xi], pair.pts_i[yj, xj]
        z = 0.5 * (np.abs(Pa[:, 2]) + np.abs(Pb[:, 2]))
        ok &= np.linalg.norm(Pa - Pb, axis=1) <= tol * np.maximum(z, 1e-12)
    return ok


def collect_matches(prob: Problem, matches: Sequence[Matches], cfg: SparseAlignConfig) -> MatchSet:
    """Validate and filter the correspondences; pairs with fewer than ``cfg.min_matches`` are dropped."""
    n = prob.n
    counts = np.zeros((n, n))
    keep = []
    for m in matches:
        if not (0 <= m.i < n and 0 <= m.j < n) or m.i == m.j:
            raise ValueError(f"matches ({m.i}, {m.j}) do not name two different views among {n}")
        xy_i, xy_j = np.asarray(m.xy_i), np.asarray(m.xy_j)
        if xy_i.ndim != 2 or xy_i.shape[1] != 2 or xy_i.shape != xy_j.shape or len(m.conf) != len(xy_i):
            raise ValueError(
                f"matches ({m.i}, {m.j}): xy_i {xy_i.shape}, xy_j {xy_j.shape}, conf {np.shape(m.conf)} disagree"
            )
        if len(xy_i) == 0 or prob.canon[m.i] is None or prob.canon[m.j] is None:
            continue
        mm = Matches(m.i, m.j, xy_i.astype(np.int64), xy_j.astype(np.int64), np.asarray(m.conf, np.float64))
        ok = _consistent(prob, mm, cfg.match_consistency)
        counts[m.i, m.j] += ok.sum()
        counts[m.j, m.i] += ok.sum()
        keep.append((mm, ok))
    rows = []
    for mm, ok in keep:
        if counts[mm.i, mm.j] < cfg.min_matches or not ok.any():
            continue
        k = int(ok.sum())
        rows.append((np.full(k, mm.i), np.full(k, mm.j), mm.xy_i[ok], mm.xy_j[ok], mm.conf[ok]))
    counts[counts < cfg.min_matches] = 0
    if not rows:
        e = np.zeros(0, np.int64)
        return MatchSet(e, e, np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0), counts)
    va, vb, xa, xb, c = (np.concatenate(x) for x in zip(*rows, strict=True))
    return MatchSet(va, vb, xa.astype(np.float64), xb.astype(np.float64), c, counts)


def weak_pairs(prob: Problem, counts: np.ndarray) -> list[tuple[int, int]]:
    """Unordered pairs ``(a, b)``, ``a < b``, with a prediction and canonical point maps but no usable matches."""
    out = set()
    for i, j in prob.pairs:
        a, b = min(i, j), max(i, j)
        if counts[a, b] == 0 and prob.canon[a] is not None and prob.canon[b] is not None:
            out.add((a, b))
    return sorted(out)


def _regression_ends(prob: Problem, pair, grids: list[AnchorGrid], min_conf: float) -> tuple:
    """Residuals that tie a weakly matched pair through its own point maps (the DUSt3R-regression fallback).

    For every anchor pixel of view ``j = pair.j``, the pair predicts its 3D point in camera ``i``'s frame. That
    point becomes the second end of a "match": a virtual pixel of camera ``i`` (its projection with the initial
    intrinsics) at the predicted depth, brought to view ``i``'s canonical scale, with no anchor correction, so it
    moves rigidly with camera ``i`` while the first end is view ``j``'s own anchor. Both losses then apply
    unchanged. Weights: ``log(conf)`` of the predicted point, as the dense alignment.

    Returns:
        The arrays of ``sparse_align``'s match ends: ``(view_a, view_b, xy_a, xy_b, z_a, z_b, idx_a, idx_b, w_a,
        w_b, conf)``, or ``None`` when the pair has no usable point.
    """
    i, j = pair.i, pair.j
    zi, ci = pair.pts_i[..., 2].astype(np.float64), pair.conf_i
    ok_i = (ci > min_conf) & (zi > 0) & (prob.canon_conf[i] > 1) & (prob.canon[i][..., 2] > 0)
    px = grids[j].pixels()
    x, y = px[:, 0], px[:, 1]
    P = pair.pts_j[y, x].astype(np.float64)
    w = np.log(np.clip(pair.conf_j[y, x].astype(np.float64), 1.0, None))
    ok = (w > 0) & (pair.conf_j[y, x] > min_conf) & (P[:, 2] > 0) & (prob.canon_conf[j][y, x] > 1)
    ok &= prob.canon[j][y, x, 2] > 0
    if ok_i.sum() < 3 or not ok.any():
        return None
    k_scale = float(np.median(prob.canon[i][..., 2][ok_i] / zi[ok_i]))  # pair scale -> view i's canonical scale
    P, x, y, w = P[ok], x[ok], y[ok], w[ok]
    xy_v = prob.pp0[i] + prob.focal0[i] * P[:, :2] / P[:, 2:3]
    # a point nearly in camera i's plane projects absurdly far: it carries no usable 2D information
    H, W = prob.shapes[i]
    sane = (np.abs(xy_v - prob.pp0[i]) < 4 * max(H, W)).all(1)
    P, x, y, w, xy_v = P[sane], x[sane], y[sane], w[sane], xy_v[sane]
    m = len(w)
    xy_a = np.stack([x, y], 1).astype(np.float64)
    idx_a, w_a = grids[j].bilinear(xy_a)
    return (
        np.full(m, j),
        np.full(m, i),
        xy_a,
        xy_v,
        prob.canon[j][y, x, 2],
        P[:, 2] * k_scale,
        idx_a,
        np.full((m, 4), grids[i].offset, np.int64),
        w_a,
        np.zeros((m, 4)),
        w,
    )


def sparse_align(
    views: Sequence[View],
    preds: Sequence[PairPrediction],
    matches: Sequence[Matches],
    priors: Priors | None = None,
    config: SparseAlignConfig | None = None,
    start=None,
) -> Scene:
    """Globally align N views from pair predictions and correspondences (MASt3R-SfM style).

    Args:
        views: N views; ``image [3, H, W]`` gives shapes and colours.
        preds: ordered pair predictions (both point maps in camera ``i``'s frame, any per-pair scale); every
            view needs at least one pair where it is ``i``, for its canonical point map.
        matches: pixel correspondences ``(x, y)`` in network pixels, per pair (either order).
        priors: known intrinsics (fixed), shared intrinsics, known poses (fixed; they set the gauge, and with
            two or more of them the scale).
        config: ``SparseAlignConfig``.
        start: a ``recon.feedforward.FeedForwardPrediction`` of the same views: poses, per-view depth scales and
            focals start from it instead of the kinematic tree (``recon.feedforward.sparse_init``).

    Returns:
        A ``Scene``; ``info`` holds the losses, iterations, timings, the kinematic tree and the pairs that fell
        back to the regression loss (``fallback_pairs``). Views that no pair connects to the main component have
        ``registered = False`` and are named in ``info["unregistered"]``.

    Raises:
        AlignmentError: inconsistent inputs or priors.
    """
    cfg = config or SparseAlignConfig()
    if cfg.opt_level not in ("coarse", "refine", "refine+depth"):
        raise ValueError(f"opt_level must be 'coarse', 'refine' or 'refine+depth', got {cfg.opt_level!r}")
    t_start = time.perf_counter()
    prob = build_problem(views, preds, priors, cfg.min_conf)
    ms = collect_matches(prob, matches, cfg)
    weak = weak_pairs(prob, ms.counts)
    # Pairs without enough matches still tie their views through their point maps; they rank below every matched
    # pair in the spanning tree of the initialisation (scores < 1 <= min_matches).
    scores = ms.counts.copy()
    best = max((p.score for p in prob.pairs.values()), default=1.0) or 1.0
    for a, b in weak:
        scores[a, b] = scores[b, a] = 1e-3 * max(prob.best_pair(a, b).score / best, 1e-6)
    init = chain_init(prob, scores, seed=cfg.seed)
    if start is not None:
        from recon.feedforward.sparse_init import start_from_prediction

        start_from_prediction(prob, init, start)
    n_known = gauge_from_known_poses(init, prob.known_poses)
    reg = init.registered
    info: dict = {
        "method": "sparse",
        "start": "kinematic tree" if start is None else "feedforward",
        "tree": init.tree,
        "root": init.root,
        "n_matches": int(len(ms.conf)),
        "t_init_s": time.perf_counter() - t_start,
    }
    keep = reg[ms.view_a] & reg[ms.view_b]
    va, vb = ms.view_a[keep], ms.view_b[keep]
    if reg.sum() < 2:
        logger.warning("sparse alignment: fewer than two views could be registered")
        return finish_scene(prob, init.T_world_cam, init.scale, None, [None] * prob.n, reg, n_known, info, t_start)

    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    dev = torch.device(cfg.device)
    grids, off = [], 0
    for H, W in prob.shapes:
        grids.append(AnchorGrid(H, W, cfg.subsample, off))
        off += grids[-1].size
    # Scene unit: median registered depth, so translations and 3D distances are unitless.
    scene_scale = float(np.median([np.median(prob.canon[k][..., 2]) * init.scale[k] for k in np.flatnonzero(reg)]))
    n = prob.n
    pose_free = reg & ~np.isin(np.arange(n), list(prob.known_poses))
    scale_free = reg.copy()
    if n_known == 0:
        pose_free[init.root] = scale_free[init.root] = False  # gauge: the root's pose and scale
    elif n_known == 1:
        scale_free[[k for k in prob.known_poses if reg[k]]] = False  # one pose fixes all but the scale
    model = SceneModel(
        init.T_world_cam,
        np.log(init.scale),
        prob.focal0,
        prob.pp0,
        [(W, H) for H, W in prob.shapes],
        off,
        scene_scale,
        pose_free,
        scale_free,
        ~prob.focal_known & reg,
        ~prob.pp_known & reg & cfg.opt_pp,
        prob.shared,
        dtype=dtype,
        device=dev,
    )

    def _end(view: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Canonical depth and bilinear anchors ``(z [P], idx [P, 4], w [P, 4])`` of matched pixels."""
        px = xy.astype(np.int64)
        z = np.zeros(len(view))
        idx, wts = np.zeros((len(view), 4), np.int64), np.zeros((len(view), 4))
        for k in np.unique(view):
            sel = view == k
            z[sel] = prob.canon[k][px[sel, 1], px[sel, 0], 2]
            idx[sel], wts[sel] = grids[k].bilinear(xy[sel])
        return z, idx, wts

    za, ia, wa = _end(va, ms.xy_a[keep])
    zb, ib, wb = _end(vb, ms.xy_b[keep])
    ends = [(va, vb, ms.xy_a[keep], ms.xy_b[keep], za, zb, ia, ib, wa, wb, ms.conf[keep])]
    fallback = [(a, b) for a, b in weak if reg[a] and reg[b]]
    for a, b in fallback:
        r = _regression_ends(prob, prob.best_pair(a, b), grids, cfg.min_conf)
        if r is not None:
            ends.append(r)
    va, vb, xa, xb, za, zb, ia, ib, wa, wb, conf = (np.concatenate(c) for c in zip(*ends, strict=True))
    info["fallback_pairs"] = fallback
    info["n_regression"] = int(len(conf) - int(keep.sum()))
    if not conf.sum() > 0:
        logger.warning("sparse alignment: no usable match or point map between the registered views")
        return finish_scene(prob, init.T_world_cam, init.scale, None, [None] * n, reg, n_known, info, t_start)
    loss = MatchLoss(
        np.concatenate([va, vb]),
        np.concatenate([xa, xb]),
        np.concatenate([za, zb]),
        np.concatenate([ia, ib]),
        np.concatenate([wa, wb]),
        conf / conf.sum(),
        n,
        off,
        1e-3 * scene_scale,
        dtype=dtype,
        device=dev,
    )

    def make_step(loss_fn, with_delta: bool):
        def step(grad: bool = True) -> torch.Tensor:
            if not grad:
                with torch.no_grad():
                    return loss_fn(model.camera_table(), model.delta, grad=False)[0]
            tab = model.camera_table()
            value, g_tab, g_delta = loss_fn(tab.detach(), model.delta.detach())
            if torch.isfinite(value):
                # The N-row table carries the gradient to poses, scales and focals. A scalar backward: passing
                # ``g_tab`` as the gradient would import torch.fx / sympy (a second) on the first call.
                (tab * g_tab).sum().backward()
                if with_delta:
                    model.delta.grad = g_delta
            return value

        return step

    stages = [("coarse", loss.loss_3d, ["rot", "trans", "log_scale"], cfg.lr_coarse, cfg.niter_coarse)]
    if cfg.opt_level != "coarse" and cfg.niter_fine > 0:
        names = ["rot", "trans", "log_scale", "log_focal", "pp_off"]
        if cfg.opt_level == "refine+depth":
            names.append("delta")
        stages.append(("fine", loss.loss_2d, names, cfg.lr_fine, cfg.niter_fine))
    tols = {"coarse": cfg.rel_tol, "fine": cfg.rel_tol_fine}
    torch.manual_seed(cfg.seed)
    with intra_op_threads(cfg.threads):
        for name, loss_fn, params, lr, niter in stages:
            step = make_step(loss_fn, "delta" in params)
            info.update(
                run_stage(step, model.parameter_groups(params), lr, niter, name, cfg.progress, rel_tol=tols[name])
            )

    T = as_numpy_poses(model)
    with torch.no_grad():
        focal = model.focals().double().cpu().numpy()
        pp = model.principal_points().double().cpu().numpy()
    depth = [densify_depth(model, k, prob.canon[k][..., 2], grids[k]) if reg[k] else None for k in range(n)]
    return finish_scene(prob, T, None, (focal, pp), depth, reg, n_known, info, t_start)
