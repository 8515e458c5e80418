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
from recon.align.model import AnchorGrid, SceneModel, as_numpy_poses, densify_depth, gamma_loss, run_stage
from recon.align.problem import Problem, build_problem, finish_scene
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


def sparse_align(
    views: Sequence[View],
    preds: Sequence[PairPrediction],
    matches: Sequence[Matches],
    priors: Priors | None = None,
    config: SparseAlignConfig | None = None,
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

    Returns:
        A ``Scene``; ``info`` holds the losses, timings and the kinematic tree. Views that no usable pair
        connects to the main component have ``registered = False``.

    Raises:
        AlignmentError: inconsistent inputs or priors.
    """
    cfg = config or SparseAlignConfig()
    if cfg.opt_level not in ("coarse", "refine", "refine+depth"):
        raise ValueError(f"opt_level must be 'coarse', 'refine' or 'refine+depth', got {cfg.opt_level!r}")
    t_start = time.perf_counter()
    prob = build_problem(views, preds, priors, cfg.min_conf)
    ms = collect_matches(prob, matches, cfg)
    init = chain_init(prob, ms.counts, seed=cfg.seed)
    n_known = gauge_from_known_poses(init, prob.known_poses)
    reg = init.registered
    info: dict = {
        "method": "sparse",
        "tree": init.tree,
        "root": init.root,
        "n_matches": int(len(ms.conf)),
        "t_init_s": time.perf_counter() - t_start,
    }
    keep = reg[ms.view_a] & reg[ms.view_b]
    va, vb = ms.view_a[keep], ms.view_b[keep]
    if reg.sum() < 2 or len(va) == 0:
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

    def _end(view: np.ndarray, xy: np.ndarray) -> dict:
        """Tensors describing one end of every match: view, pixel, canonical depth, bilinear anchors."""
        px = xy.astype(np.int64)
        z = np.zeros(len(view))
        idx, wts = np.zeros((len(view), 4), np.int64), np.zeros((len(view), 4))
        for k in np.unique(view):
            sel = view == k
            z[sel] = prob.canon[k][px[sel, 1], px[sel, 0], 2]
            idx[sel], wts[sel] = grids[k].bilinear(xy[sel])
        return {
            "view": torch.as_tensor(view, device=dev),
            "xy": torch.as_tensor(xy, dtype=dtype, device=dev),
            "canon_z": torch.as_tensor(z, dtype=dtype, device=dev),
            "anchor_idx": torch.as_tensor(idx, device=dev),
            "anchor_w": torch.as_tensor(wts, dtype=dtype, device=dev),
        }

    end_a = _end(va, ms.xy_a[keep])
    end_b = _end(vb, ms.xy_b[keep])
    conf = torch.as_tensor(ms.conf[keep], dtype=dtype, device=dev)
    conf = conf / conf.sum()
    min_z = 1e-3 * scene_scale

    def world_points():
        table = model.camera_table()
        out = []
        for end in (end_a, end_b):
            tab = table.index_select(0, end["view"])
            z = end["canon_z"] * tab[:, 15] * model.depth_correction(end["anchor_idx"], end["anchor_w"])
            out.append((tab, SceneModel.to_world(tab, end["xy"], z)))
        return out

    def loss_3d():
        (tab_a, Xa), (tab_b, Xb) = world_points()
        # Distances relative to the points' distances from their cameras: scale-invariant, so a scene pinned by
        # known poses is not pulled smaller, and far matches do not dominate near ones.
        ref = 0.5 * ((Xa - tab_a[:, 9:12]).norm(dim=-1) + (Xb - tab_b[:, 9:12]).norm(dim=-1))
        d = (Xa - Xb).norm(dim=-1) / ref.clamp(min=min_z)
        return (conf * gamma_loss(d, 1.5)).sum()

    def loss_2d():
        (tab_a, Xa), (tab_b, Xb) = world_points()
        ea = (SceneModel.project(tab_a, Xb, min_z).clamp(-1e4, 1e4) - end_a["xy"]).norm(dim=-1)
        eb = (SceneModel.project(tab_b, Xa, min_z).clamp(-1e4, 1e4) - end_b["xy"]).norm(dim=-1)
        return (conf * (gamma_loss(ea, 0.5) + gamma_loss(eb, 0.5))).sum() / 2

    stages = [("coarse", loss_3d, ["rot", "trans", "log_scale"], cfg.lr_coarse, cfg.niter_coarse)]
    if cfg.opt_level != "coarse" and cfg.niter_fine > 0:
        names = ["rot", "trans", "log_scale", "log_focal", "pp_off"]
        if cfg.opt_level == "refine+depth":
            names.append("delta")
        stages.append(("fine", loss_2d, names, cfg.lr_fine, cfg.niter_fine))
    torch.manual_seed(cfg.seed)
    for name, loss_fn, params, lr, niter in stages:
        info.update(run_stage(loss_fn, model.parameter_groups(params), lr, niter, name, cfg.progress))

    T = as_numpy_poses(model)
    with torch.no_grad():
        focal = model.focals().double().cpu().numpy()
        pp = model.principal_points().double().cpu().numpy()
    depth = [densify_depth(model, k, prob.canon[k][..., 2], grids[k]) if reg[k] else None for k in range(n)]
    return finish_scene(prob, T, None, (focal, pp), depth, reg, n_known, info, t_start)
