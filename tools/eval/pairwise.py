"""Pairwise relative poses as the MASt3R and DUNE papers evaluate them: per pair, descriptor matches, an
essential matrix by RANSAC (OpenCV) and ``recoverPose``, with focal lengths estimated from the network's own
point maps (no ground-truth focal).

Everything here is geometry over ``recon.types.PairPrediction`` / ``Matches`` and NumPy, so it is testable with
synthetic correspondences; ``tools.eval.model_predictors`` wires it to a network.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from recon.geometry import K_from_focal, check_shape, focal_bounds, weiszfeld_focal
from recon.types import Matches, PairPrediction

logger = logging.getLogger(__name__)

# DUSt3R's focal search range: [0.5, 3.5] x the focal of a 60 deg field of view on the long side.
MIN_FOCAL_FACTOR, MAX_FOCAL_FACTOR = 0.5, 3.5
# "ransac": OpenCV's plain RANSAC (the papers say "RANSAC"; no local optimisation, so the pose is the best
# minimal-sample model); "usac_accurate": GC-RANSAC with local optimisation, markedly more accurate.
RANSAC_METHODS = ("ransac", "usac_accurate")


def estimate_focal(
    pts3d_cam: np.ndarray,
    conf: np.ndarray | None = None,
    pp: tuple[float, float] | None = None,
    n_iter: int = 10,
    min_conf: float = 0.0,
) -> float:
    """Focal length (pixels) that best re-projects a camera-frame point map onto its pixel grid.

    ``recon.geometry.weiszfeld_focal`` (the robust estimate DUSt3R / MASt3R use) over the pixels above ``min_conf``,
    clamped to ``[0.5, 3.5]`` x the focal of a 60 deg field of view (``recon.geometry.focal_bounds``); that 60 deg
    focal when fewer than 2 pixels count.

    Args:
        pts3d_cam: ``[H, W, 3]`` points in the camera frame of the pixel grid (e.g. ``PairPrediction.pts3d_i``).
        conf: ``[H, W]`` confidences; pixels at or below ``min_conf`` are ignored.
        pp: principal point ``(cx, cy)``; the image centre ``(W/2, H/2)`` by default.
        n_iter: re-weighting iterations.
        min_conf: confidence threshold.

    Returns:
        The focal length in pixels of the point map's grid.
    """
    P = np.asarray(pts3d_cam, dtype=np.float64)
    check_shape(P, "H W 3", "pts3d_cam")
    lo, hi, base = focal_bounds(P.shape[:2], MIN_FOCAL_FACTOR, MAX_FOCAL_FACTOR)
    ok = np.isfinite(P).all(-1) & (P[..., 2] > 0)
    if conf is not None:
        ok &= np.asarray(conf, dtype=np.float64) > min_conf
    if ok.sum() < 2:
        logger.debug("estimate_focal: fewer than 2 valid points; returning the 60 deg focal")
        return float(base)
    return float(np.clip(weiszfeld_focal(P, pp, ok.astype(np.float64), n_iter), lo, hi))


@dataclass
class RelativePose:
    """One pair's estimated relative pose.

    Attributes:
        T_j_i: ``[4, 4]`` transform from camera-i to camera-j coordinates; unit-norm translation (scale is
            unobservable from two views), or zero translation when the estimation failed.
        inliers: essential-matrix inliers that passed the cheirality check.
        matches: correspondences given.
        ok: False when there were too few matches or no essential matrix was found.
    """

    T_j_i: np.ndarray
    inliers: int
    matches: int
    ok: bool
    reason: str = ""
    """Why the pose could not be estimated (empty when ``ok``)."""


def relative_pose_from_matches(
    xy_i: np.ndarray,
    xy_j: np.ndarray,
    K_i: np.ndarray,
    K_j: np.ndarray,
    *,
    ransac_px: float = 1.0,
    prob: float = 0.9999,
    min_matches: int = 8,
    max_matches: int | None = 5000,
    weights: np.ndarray | None = None,
    method: str = "ransac",
    seed: int = 0,
) -> RelativePose:
    """Essential matrix by RANSAC on calibrated correspondences, then ``cv2.recoverPose``.

    Args:
        xy_i, xy_j: ``[M, 2]`` pixel coordinates ``(x, y)`` of the matches in images i and j.
        K_i, K_j: ``[3, 3]`` intrinsics of the two images (same pixel grid as the matches).
        ransac_px: RANSAC inlier threshold in pixels (converted to normalised units with the mean focal).
        prob: RANSAC confidence.
        min_matches: fewer matches than this count as a failure.
        max_matches: keep at most this many matches (the highest ``weights`` first) to bound RANSAC time.
        weights: ``[M]`` match confidences used to choose which matches to keep.
        method: one of ``RANSAC_METHODS``.
        seed: OpenCV RNG seed, so RANSAC repeats exactly.

    Returns:
        A ``RelativePose`` (``T_j_i`` with ``x_j = R x_i + t``). A pair whose pose cannot be estimated (too few
        distinct finite matches, a degenerate configuration OpenCV rejects, too few inliers) is returned with
        ``ok=False`` and a ``reason``, never raised: the evaluator counts it as a failed pair.
    """
    import cv2

    flags = {"ransac": cv2.RANSAC, "usac_accurate": cv2.USAC_ACCURATE}
    if method not in flags:
        raise ValueError(f"unknown RANSAC method {method!r}; expected one of {RANSAC_METHODS}")
    xy_i = np.asarray(xy_i, dtype=np.float64).reshape(-1, 2)
    xy_j = np.asarray(xy_j, dtype=np.float64).reshape(-1, 2)
    if xy_i.shape != xy_j.shape:
        raise ValueError(f"xy_i {xy_i.shape} and xy_j {xy_j.shape} must have the same shape [M, 2]")
    M = len(xy_i)

    def failed(reason: str) -> RelativePose:
        return RelativePose(np.eye(4), 0, M, False, reason)

    finite = np.isfinite(xy_i).all(1) & np.isfinite(xy_j).all(1)
    if not finite.all():
        xy_i, xy_j = xy_i[finite], xy_j[finite]
        weights = None if weights is None else np.asarray(weights)[finite]
    # The five-point solver needs five distinct correspondences; OpenCV asserts (cv2.error in solvePoly) on
    # repeated or collinear points instead of returning no solution.
    distinct = len(np.unique(np.concatenate([xy_i, xy_j], 1), axis=0))
    if distinct < max(min_matches, 5):
        return failed(f"{distinct} distinct finite matches (need {max(min_matches, 5)})")
    K_i, K_j = np.asarray(K_i, dtype=np.float64), np.asarray(K_j, dtype=np.float64)
    focals = [K_i[0, 0], K_i[1, 1], K_j[0, 0], K_j[1, 1]]
    if not (np.isfinite(K_i).all() and np.isfinite(K_j).all() and min(focals) > 0):
        return failed("no valid focal length")
    if max_matches is not None and len(xy_i) > max_matches:
        order = np.argsort(-np.asarray(weights)) if weights is not None else np.arange(len(xy_i))
        keep = np.sort(order[:max_matches])
        xy_i, xy_j = xy_i[keep], xy_j[keep]

    def normalise(xy, K):
        K = np.asarray(K, dtype=np.float64)
        return (xy - K[:2, 2]) / np.array([K[0, 0], K[1, 1]])

    n_i, n_j = normalise(xy_i, K_i), normalise(xy_j, K_j)
    mean_f = float(np.mean([K_i[0, 0], K_i[1, 1], K_j[0, 0], K_j[1, 1]]))
    # OpenCV's RANSAC draws from its global RNG; seeding it makes every run (and shard) repeat exactly.
    cv2.setRNGSeed(int(seed))
    try:
        E, mask = cv2.findEssentialMat(
            n_i, n_j, cameraMatrix=np.eye(3), method=flags[method], prob=prob, threshold=ransac_px / mean_f
        )
        if E is None or E.shape != (3, 3):
            # findEssentialMat may return several stacked 3x3 solutions or none; take the first if any.
            if E is None or E.shape[0] < 3:
                return failed("no essential matrix")
            E = E[:3]
        n_inl, R, t, mask_pose = cv2.recoverPose(E, n_i, n_j, cameraMatrix=np.eye(3), mask=mask)
    except cv2.error as err:  # degenerate configurations that OpenCV asserts on (e.g. solvePoly in 5.x)
        return failed(f"OpenCV: {str(err).strip().splitlines()[-1][:160]}")
    if not (np.isfinite(R).all() and np.isfinite(t).all()):
        return failed("non-finite pose")
    T = np.eye(4)
    T[:3, :3] = R
    t = t.reshape(3)
    T[:3, 3] = t / max(np.linalg.norm(t), 1e-12)
    ok = int(n_inl) >= min_matches
    return RelativePose(T, int(n_inl), M, ok, "" if ok else f"{int(n_inl)} inliers (need {min_matches})")


def pair_relative_pose(
    pred_ij: PairPrediction,
    matches: Matches,
    pred_ji: PairPrediction | None = None,
    *,
    focal_i: float | None = None,
    focal_j: float | None = None,
    min_conf: float = 0.0,
    **ransac,
) -> tuple[RelativePose, float, float]:
    """Relative pose of one pair from the decoder's outputs (MASt3R paper mode).

    Focals default to ``estimate_focal`` on each view's point map in its own camera frame: view i from
    ``pred_ij.pts3d_i``, view j from ``pred_ji.pts3d_i`` (the reversed pair). Without ``pred_ji``, view j
    gets view i's focal (one camera for both images, which a video sequence usually is).

    Args:
        pred_ij: decoder output for the ordered pair ``(i, j)``.
        matches: correspondences between ``i`` and ``j`` (network pixels).
        pred_ji: decoder output for ``(j, i)``, for view j's focal.
        focal_i, focal_j: known focals (pixels) that override the estimates.
        min_conf: point-map confidence threshold for the focal estimate.
        **ransac: passed to ``relative_pose_from_matches``.

    Returns:
        ``(RelativePose, focal_i, focal_j)``.
    """
    if (matches.i, matches.j) != (pred_ij.i, pred_ij.j):
        raise ValueError(f"matches ({matches.i}, {matches.j}) do not belong to pair ({pred_ij.i}, {pred_ij.j})")
    shape_i = tuple(pred_ij.pts3d_i.shape[:2])
    shape_j = tuple(pred_ij.pts3d_j.shape[:2])
    if focal_i is None:
        focal_i = estimate_focal(_np(pred_ij.pts3d_i), _np(pred_ij.conf_i), min_conf=min_conf)
    if focal_j is None:
        if pred_ji is not None:
            if (pred_ji.i, pred_ji.j) != (pred_ij.j, pred_ij.i):
                raise ValueError(f"pred_ji must be the ({pred_ij.j}, {pred_ij.i}) prediction")
            focal_j = estimate_focal(_np(pred_ji.pts3d_i), _np(pred_ji.conf_i), min_conf=min_conf)
        else:
            focal_j = focal_i
    K_i = K_from_focal(focal_i, shape_i)
    K_j = K_from_focal(focal_j, shape_j)
    if "weights" not in ransac:
        ransac["weights"] = matches.conf
    pose = relative_pose_from_matches(matches.xy_i, matches.xy_j, K_i, K_j, **ransac)
    return pose, float(focal_i), float(focal_j)


def _np(t) -> np.ndarray | None:
    if t is None:
        return None
    if hasattr(t, "detach"):
        return t.detach().float().cpu().numpy()
    return np.asarray(t)


def star_poses(T_rel: np.ndarray, n: int) -> np.ndarray:
    """``[n, 4, 4]`` camera-to-world poses from the pairs ``(0, j)``: camera 0 is the world, and camera j sits
    at the unit-distance direction of pair (0, j). Only for the record; pairwise metrics use ``T_rel``.

    Args:
        T_rel: ``[P, 4, 4]`` relative poses ``T_j_i`` in ``all_pairs(n)`` order (the first ``n - 1`` are (0, j)).
    """
    from tools.eval.metrics import invert_rigid

    T = np.tile(np.eye(4), (n, 1, 1))
    T[1:] = invert_rigid(np.asarray(T_rel[: n - 1], dtype=np.float64))
    return T
