"""Turning the pipeline's dataclasses into one validated alignment problem, and the result into a ``Scene``.

Shared by the sparse, dense and two-view solvers: input checks, canonical point maps (one confidence-weighted
point map per view in its own frame), initial intrinsics from priors or from the point maps, and the output.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from recon.errors import UserError
from recon.geometry import weiszfeld_focal
from recon.types import PairPrediction, Priors, Scene, View, scene_view_fields

logger = logging.getLogger(__name__)


class AlignmentError(UserError, ValueError):
    """Inputs that no alignment can use (inconsistent shapes, bad indices, bad priors)."""


@dataclass
class Pair:
    """One ordered pair's point maps as float32 NumPy arrays (both in camera ``i``'s frame)."""

    i: int
    j: int
    pts_i: np.ndarray  # [H_i, W_i, 3]
    pts_j: np.ndarray  # [H_j, W_j, 3]
    conf_i: np.ndarray  # [H_i, W_i]
    conf_j: np.ndarray  # [H_j, W_j]

    @property
    def score(self) -> float:
        """DUSt3R's edge score: product of the mean confidences of the two point maps."""
        return float(self.conf_i.mean() * self.conf_j.mean())


@dataclass
class Problem:
    """Everything the solvers need, validated. Lists are indexed by view."""

    shapes: list[tuple[int, int]]
    names: list[str]
    pairs: dict[tuple[int, int], Pair]
    canon: list[np.ndarray | None]  # [H,W,3] float64 own-frame point map, None without any pair
    canon_conf: list[np.ndarray | None]  # [H,W] float64 (> 1)
    focal0: np.ndarray  # [N] initial focal (pixels)
    pp0: np.ndarray  # [N,2] initial principal point (pixels)
    known_K: list[np.ndarray | None]  # exact K to return, where known
    focal_known: np.ndarray  # [N] bool: focal fixed
    pp_known: np.ndarray  # [N] bool: principal point fixed
    known_poses: dict[int, np.ndarray]
    shared: bool
    views: list[View] = field(repr=False, default_factory=list)

    @property
    def n(self) -> int:
        return len(self.shapes)

    def best_pair(self, a: int, b: int) -> Pair | None:
        """The more confident of the ordered pairs ``(a, b)`` and ``(b, a)``."""
        cands = [p for p in (self.pairs.get((a, b)), self.pairs.get((b, a))) if p is not None]
        return max(cands, key=lambda p: p.score) if cands else None


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().float().numpy()
    return np.asarray(x, np.float32)


def _check_pair(p: PairPrediction, shapes: list[tuple[int, int]]) -> Pair:
    n = len(shapes)
    if not (0 <= p.i < n and 0 <= p.j < n) or p.i == p.j:
        raise AlignmentError(f"pair ({p.i}, {p.j}) does not name two different views among {n}")
    pair = Pair(p.i, p.j, _np(p.pts3d_i), _np(p.pts3d_j), _np(p.conf_i), _np(p.conf_j))
    for name, arr, k, last in (
        ("pts3d_i", pair.pts_i, p.i, (3,)),
        ("pts3d_j", pair.pts_j, p.j, (3,)),
        ("conf_i", pair.conf_i, p.i, ()),
        ("conf_j", pair.conf_j, p.j, ()),
    ):
        want = (*shapes[k], *last)
        if arr.shape != want:
            raise AlignmentError(f"pair ({p.i}, {p.j}): {name} has shape {arr.shape}, view {k} needs {want}")
    # Non-finite network outputs get no weight rather than poisoning every average.
    for pts, conf in ((pair.pts_i, pair.conf_i), (pair.pts_j, pair.conf_j)):
        bad = ~np.isfinite(pts).all(-1) | ~np.isfinite(conf)
        if bad.any():
            pts[bad] = 0
            conf[bad] = 0
    return pair


def canonical_pointmap(pairs: list[Pair], min_conf: float) -> tuple[np.ndarray, np.ndarray]:
    """Confidence-weighted average of the point maps a view got in its own frame.

    Each pair predicts at its own (unknown) scale, so every point map is first normalised by its weighted
    median depth; the average is then brought back to the geometric mean of those medians.

    Args:
        pairs: pairs whose ``i`` is the view (``pts_i`` is in its own frame).
        min_conf: confidences at or below it get zero weight.

    Returns:
        ``(pts [H, W, 3] float64, conf [H, W] float64 >= 1)``; conf is ``1 + Σw²/Σw`` with ``w = conf - min_conf``.
    """
    acc = None
    wsum = None
    w2sum = None
    logm = []
    for p in pairs:
        w = np.clip(p.conf_i.astype(np.float64) - min_conf, 0, None)
        z = p.pts_i[..., 2].astype(np.float64)
        ok = (w > 0) & (z > 0)
        if not ok.any():
            continue
        m = float(np.median(z[ok]))
        logm.append(np.log(m))
        X = p.pts_i.astype(np.float64) / m
        acc = w[..., None] * X if acc is None else acc + w[..., None] * X
        wsum = w if wsum is None else wsum + w
        w2sum = w * w if w2sum is None else w2sum + w * w
    if acc is None:
        H, W = pairs[0].pts_i.shape[:2]
        return np.zeros((H, W, 3)), np.zeros((H, W))
    canon = acc / np.maximum(wsum, 1e-12)[..., None] * np.exp(np.mean(logm))
    conf = np.where(wsum > 0, 1.0 + w2sum / np.maximum(wsum, 1e-12), 0.0)
    return canon, conf


def build_problem(
    views: Sequence[View], preds: Sequence[PairPrediction], priors: Priors | None, min_conf: float
) -> Problem:
    """Validate the inputs and compute canonical point maps and initial intrinsics.

    Args:
        views: N views (``image [3, H, W]``).
        preds: ordered pair predictions; a later duplicate of a pair replaces the earlier one.
        priors: known intrinsics / poses, or ``None``.
        min_conf: see ``canonical_pointmap``.

    Raises:
        AlignmentError: on inconsistent shapes, indices or priors.
    """
    if len(views) == 0:
        raise AlignmentError("no views to align")
    priors = priors or Priors()
    shapes = [v.true_shape for v in views]
    n = len(views)
    pairs: dict[tuple[int, int], Pair] = {}
    for p in preds:
        pairs[(p.i, p.j)] = _check_pair(p, shapes)

    for name, lst in (("K", priors.K), ("focal", priors.focal), ("focal_init", priors.focal_init)):
        if lst is not None and len(lst) != n:
            raise AlignmentError(f"Priors.{name} has {len(lst)} entries for {n} views")
    known_K: list[np.ndarray | None] = [None] * n
    focal_known = np.zeros(n, bool)
    pp_known = np.zeros(n, bool)
    focal0 = np.full(n, np.nan)
    # (W/2, H/2) as DUSt3R / MASt3R: networks trained on their crops learned point maps with this centre.
    pp0 = np.array([[W / 2, H / 2] for H, W in shapes], np.float64)
    for k in range(n):
        K = None if priors.K is None else priors.K[k]
        f = None if priors.focal is None else priors.focal[k]
        if K is not None:
            K = np.asarray(K, np.float64)
            if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
                raise AlignmentError(f"Priors.K[{k}] must be a finite 3x3 matrix with positive focals, got {K}")
            known_K[k] = K
            focal0[k] = 0.5 * (K[0, 0] + K[1, 1])
            pp0[k] = K[:2, 2]
            focal_known[k] = pp_known[k] = True
        elif f is not None:
            if not np.isfinite(f) or f <= 0:
                raise AlignmentError(f"Priors.focal[{k}] must be a positive number, got {f}")
            focal0[k] = float(f)
            focal_known[k] = True
        elif priors.focal_init is not None and priors.focal_init[k] is not None:
            f0 = priors.focal_init[k]
            if not np.isfinite(f0) or f0 <= 0:
                raise AlignmentError(f"Priors.focal_init[{k}] must be a positive number, got {f0}")
            focal0[k] = float(f0)  # a start value: optimised like any unknown focal
    known_poses: dict[int, np.ndarray] = {}
    for k, T in (priors.T_world_cam or {}).items():
        if not 0 <= int(k) < n:
            raise AlignmentError(f"Priors.T_world_cam names view {k}, but there are {n} views")
        T = np.asarray(T, np.float64)
        R = T[:3, :3] if T.shape == (4, 4) else None
        if R is None or not np.isfinite(T).all() or not np.allclose(R @ R.T, np.eye(3), atol=1e-5):
            raise AlignmentError(f"Priors.T_world_cam[{k}] must be a finite 4x4 rigid transform")
        if abs(np.linalg.det(R) - 1) > 1e-5:
            raise AlignmentError(f"Priors.T_world_cam[{k}] has a reflection (det R = {np.linalg.det(R):.3f})")
        known_poses[int(k)] = T

    canon: list[np.ndarray | None] = [None] * n
    canon_conf: list[np.ndarray | None] = [None] * n
    for k in range(n):
        own = [p for (i, _), p in sorted(pairs.items()) if i == k]
        if own:
            canon[k], canon_conf[k] = canonical_pointmap(own, min_conf)
            if not (canon_conf[k] > 0).any():
                canon[k] = canon_conf[k] = None
        elif any(j == k for _, j in pairs):
            logger.warning("view %d appears only as the second view of its pairs; it cannot be aligned", k)

    for k in range(n):
        if not focal_known[k] and canon[k] is not None:
            # A strided subset (<= ~16k points) estimates one scalar as well as every pixel, much faster.
            st = max(1, int(np.sqrt(canon[k].shape[0] * canon[k].shape[1] / 16384)))
            est = weiszfeld_focal(canon[k][::st, ::st], pp0[k] / st, canon_conf[k][::st, ::st]) * st
            if not np.isfinite(focal0[k]):
                focal0[k] = est
            elif np.isfinite(est) and abs(np.log(focal0[k] / est)) > np.log(1.2):
                # a start value (EXIF) far from what the point maps say: the optimiser may not get all the way
                logger.warning(
                    "view %d: EXIF focal %.0f px is %.0f%% off the point maps' %.0f px (--no-exif to "
                    "start from the latter)",
                    k,
                    focal0[k],
                    100 * (focal0[k] / est - 1),
                    est,
                )
        if not np.isfinite(focal0[k]) or focal0[k] <= 0:
            H, W = shapes[k]
            focal0[k] = max(H, W) / (2 * np.tan(np.radians(30)))  # a 60° field of view when nothing is known
    shared = bool(priors.shared_intrinsics)
    if shared:
        fixed = np.flatnonzero(focal_known)
        if len(fixed):
            focal0[:] = focal0[fixed[0]]
            focal_known[:] = True
            if pp_known[fixed[0]]:
                pp0[:] = pp0[fixed[0]]
                pp_known[:] = True
                for k in range(n):
                    known_K[k] = known_K[fixed[0]]
        else:
            w = np.array([c.mean() if c is not None else 0.0 for c in canon_conf])
            focal0[:] = float((w * focal0).sum() / w.sum()) if w.sum() > 0 else float(np.median(focal0))

    return Problem(
        shapes=shapes,
        names=[v.name for v in views],
        pairs=pairs,
        canon=canon,
        canon_conf=canon_conf,
        focal0=focal0,
        pp0=pp0,
        known_K=known_K,
        focal_known=focal_known,
        pp_known=pp_known,
        known_poses=known_poses,
        shared=shared,
        views=list(views),
    )


def make_scene(
    prob: Problem,
    T_world_cam: np.ndarray,
    focal: np.ndarray,
    pp: np.ndarray,
    depth: list[np.ndarray | None],
    conf: list[np.ndarray | None],
    registered: np.ndarray,
    info: dict,
) -> Scene:
    """Assemble a ``Scene``; known poses and intrinsics are copied bit-exactly, unregistered views get an
    identity pose, zero depth and zero confidence."""
    n = prob.n
    T = np.asarray(T_world_cam, np.float64).copy()
    K = np.zeros((n, 3, 3))
    K[:, 0, 0] = K[:, 1, 1] = focal
    K[:, :2, 2] = pp
    K[:, 2, 2] = 1
    depths, confs = [], []
    for k in range(n):
        if prob.known_K[k] is not None:
            K[k] = prob.known_K[k]
        if k in prob.known_poses:
            T[k] = prob.known_poses[k]
        H, W = prob.shapes[k]
        if not registered[k] or depth[k] is None:
            registered[k] = False
            if k not in prob.known_poses:
                T[k] = np.eye(4)
            depths.append(np.zeros((H, W), np.float32))
            confs.append(np.zeros((H, W), np.float32))
        else:
            depths.append(np.asarray(depth[k], np.float32))
            if conf[k] is None:
                raise AlignmentError(f"view {k} is registered with a depth map but no confidence map")
            confs.append(np.asarray(conf[k], np.float32).reshape(H, W))
    return Scene(
        T_world_cam=T,
        K=K,
        depth=depths,
        conf=confs,
        registered=np.asarray(registered, bool),
        info=info,
        **scene_view_fields(prob.views),
    )


def finish_scene(prob: Problem, T, scale, intr, depth, reg, n_known: int, info: dict, t_start: float) -> Scene:
    """Common ending of every solver: the output ``Scene``.

    Takes depths from the initialisation (``canon_z · scale``) when no optimisation ran (``intr is None``) and
    re-expresses an ungauged result (no known pose) in the first registered view's camera frame.
    """
    if intr is None:
        focal, pp = prob.focal0.copy(), prob.pp0.copy()
        depth = [prob.canon[k][..., 2] * scale[k] if reg[k] else None for k in range(prob.n)]
    else:
        focal, pp = intr
    T = np.asarray(T, np.float64).copy()
    if n_known == 0 and reg.any():
        # Without known poses the gauge is arbitrary; the first registered view becomes the world frame.
        ref = int(np.flatnonzero(reg)[0])
        T = np.linalg.inv(T[ref]) @ T
        T[ref] = np.eye(4)
    conf = [prob.canon_conf[k] if reg[k] else None for k in range(prob.n)]
    info["t_total_s"] = time.perf_counter() - t_start
    info["n_registered"] = int(reg.sum())
    info["unregistered"] = [prob.names[k] for k in range(prob.n) if not reg[k]]
    if info["unregistered"] and prob.n > 1:
        logger.warning(
            "%d of %d views could not be placed (no pair ties them to the others): %s",
            len(info["unregistered"]),
            prob.n,
            ", ".join(info["unregistered"]),
        )
    return make_scene(prob, T, focal, pp, depth, conf, reg.copy(), info)
