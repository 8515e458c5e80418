"""Pose metrics of the "10 random frames" benchmark (PoseDiffusion protocol; see docs/eval.md).

All maths is float64 NumPy. Cameras are ``T_world_cam`` (4x4 camera-to-world, OpenCV). For a pair ``(i, j)``
with ``i < j`` the relative pose is the transform from camera-``i`` to camera-``j`` coordinates,
``T_j_i = inv(T_world_cam[j]) @ T_world_cam[i]`` (rotation ``R_j R_i^T``, translation ``R_j (C_i - C_j)``, the
direction to camera ``i`` seen from camera ``j``): this is PoseDiffusion's convention. VGGT's evaluation uses
the inverse, ``T_i_j``; rotation errors agree, translation errors differ when a frame's rotation is wrong.

Errors are in degrees. Accuracies and mAA are percentages in [0, 100].
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

logger = logging.getLogger(__name__)

CONVENTIONS = ("pd", "vggt")
ROTATION_NUMERICS = ("exact", "pd")
# PoseDiffusion's translation_angle: unit vectors use ||t|| + 1e-15, the squared sine is clamped at 1e-15,
# and a NaN/inf angle becomes 1e6 rad before the degree conversion.
_T_EPS = 1e-15
_T_DEFAULT_ERR_RAD = 1e6
# PyTorch3D so3_relative_angle(eps=1e-4) -> acos_linear_extrapolation with cos_bound=1e-4.
_PD_COS_BOUND = 1.0 - 1e-4


def all_pairs(n: int) -> np.ndarray:
    """``[n(n-1)/2, 2]`` int64 index pairs ``(i, j)``, ``i < j``, in ``torch.combinations`` order (0,1), (0,2)..."""
    i, j = np.triu_indices(n, k=1)
    return np.stack([i, j], axis=1).astype(np.int64)


def _check_poses(T: np.ndarray, name: str) -> np.ndarray:
    T = np.asarray(T, dtype=np.float64)
    if T.ndim != 3 or T.shape[1:] != (4, 4):
        raise ValueError(f"{name} must be [N, 4, 4] camera-to-world matrices, got shape {T.shape}")
    return T


def relative_poses(T_world_cam: np.ndarray, pairs: np.ndarray | None = None, convention: str = "pd") -> np.ndarray:
    """Relative poses of camera pairs.

    Args:
        T_world_cam: ``[N, 4, 4]`` camera-to-world poses (OpenCV).
        pairs: ``[P, 2]`` index pairs; all ``i < j`` pairs when ``None``.
        convention: ``"pd"`` -> ``T_j_i`` (camera i to camera j, PoseDiffusion); ``"vggt"`` -> ``T_i_j``.

    Returns:
        ``[P, 4, 4]`` float64 rigid transforms.
    """
    T = _check_poses(T_world_cam, "T_world_cam")
    if pairs is None:
        pairs = all_pairs(T.shape[0])
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown pair convention {convention!r}; expected one of {CONVENTIONS}")
    src, dst = (pairs[:, 0], pairs[:, 1]) if convention == "pd" else (pairs[:, 1], pairs[:, 0])
    return invert_rigid(T[dst]) @ T[src]


def invert_rigid(T: np.ndarray) -> np.ndarray:
    """Closed-form inverse of ``[..., 4, 4]`` rigid transforms (more accurate than a generic inverse; RE10K's
    translations are tiny, see the reference's note on precision)."""
    T = np.asarray(T, dtype=np.float64)
    R = T[..., :3, :3]
    t = T[..., :3, 3]
    out = np.zeros_like(T)
    Rt = np.swapaxes(R, -1, -2)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", Rt, t)
    out[..., 3, 3] = 1.0
    return out


def rotation_error_deg(R_gt: np.ndarray, R_pred: np.ndarray, numerics: str = "exact") -> np.ndarray:
    """Geodesic angle between rotations, ``arccos((tr(R_gt^T R_pred) - 1) / 2)``.

    Args:
        R_gt, R_pred: ``[P, 3, 3]`` rotation matrices.
        numerics: ``"exact"`` (robust atan2 form, 0 for identical rotations) or ``"pd"`` (PyTorch3D's
            ``acos_linear_extrapolation`` near 0: identical rotations give 0.4051 deg; differs from exact only
            below 0.8103 deg).

    Returns:
        ``[P]`` float64 degrees in [0, 180].
    """
    R_gt = np.asarray(R_gt, dtype=np.float64)
    R_pred = np.asarray(R_pred, dtype=np.float64)
    if R_gt.shape != R_pred.shape or R_gt.shape[-2:] != (3, 3):
        raise ValueError(f"rotation shapes differ or are not [P, 3, 3]: {R_gt.shape} vs {R_pred.shape}")
    R_err = np.swapaxes(R_gt, -1, -2) @ R_pred
    cos = (np.trace(R_err, axis1=-2, axis2=-1) - 1.0) / 2.0
    if numerics == "exact":
        # sin from the skew part keeps precision near 0 and 180 deg, where arccos alone loses it.
        A = R_err - np.swapaxes(R_err, -1, -2)
        skew = np.stack([A[..., 2, 1], A[..., 0, 2], A[..., 1, 0]], axis=-1)
        sin = np.linalg.norm(skew, axis=-1) / 2.0
        angle = np.arctan2(sin, cos)
    elif numerics == "pd":
        b = _PD_COS_BOUND
        clipped = np.clip(cos, -b, b)
        angle = np.arccos(clipped)
        hi = cos >= b
        lo = cos <= -b
        slope = 1.0 / np.sqrt(1.0 - b * b)
        angle = np.where(hi, np.arccos(b) - (cos - b) * slope, angle)
        angle = np.where(lo, np.arccos(-b) - (cos + b) * slope, angle)
    else:
        raise ValueError(f"unknown rotation numerics {numerics!r}; expected one of {ROTATION_NUMERICS}")
    return np.degrees(angle)


def translation_error_deg(t_gt: np.ndarray, t_pred: np.ndarray) -> np.ndarray:
    """Sign-agnostic angle between translation directions, ``arccos(|u_gt . u_pred|)`` in [0, 90] degrees.

    Reproduces PoseDiffusion's ``compare_translation_by_angle``: a zero vector has no direction (its unit vector
    is 0), so it scores 90 deg; NaN/inf scores 1e6 rad.

    Args:
        t_gt, t_pred: ``[P, 3]`` translations (any scale).

    Returns:
        ``[P]`` float64 degrees.
    """
    t_gt = np.asarray(t_gt, dtype=np.float64)
    t_pred = np.asarray(t_pred, dtype=np.float64)
    if t_gt.shape != t_pred.shape or t_gt.shape[-1] != 3:
        raise ValueError(f"translation shapes differ or are not [P, 3]: {t_gt.shape} vs {t_pred.shape}")
    with np.errstate(invalid="ignore"):
        u_gt = t_gt / (np.linalg.norm(t_gt, axis=-1, keepdims=True) + _T_EPS)
        u_pred = t_pred / (np.linalg.norm(t_pred, axis=-1, keepdims=True) + _T_EPS)
        dot = np.sum(u_gt * u_pred, axis=-1)
        angle = np.arccos(np.sqrt(1.0 - np.maximum(1.0 - dot * dot, _T_EPS)))
    angle = np.where(np.isfinite(angle), angle, _T_DEFAULT_ERR_RAD)
    return np.degrees(angle)


def pair_errors(
    T_gt: np.ndarray,
    T_pred: np.ndarray | None = None,
    *,
    T_rel_pred: np.ndarray | None = None,
    convention: str = "pd",
    rotation_numerics: str = "exact",
) -> tuple[np.ndarray, np.ndarray]:
    """Rotation and translation errors of all ``i < j`` pairs of one sequence.

    Args:
        T_gt: ``[N, 4, 4]`` ground-truth camera-to-world poses.
        T_pred: ``[N, 4, 4]`` predicted camera-to-world poses (any similarity frame).
        T_rel_pred: ``[P, 4, 4]`` predicted relative poses ``T_j_i`` (camera i -> camera j, pair order of
            ``all_pairs``) for pairwise methods; used instead of ``T_pred`` when given. Under the ``"vggt"``
            convention they are inverted before comparison.
        convention: pair convention, ``"pd"`` or ``"vggt"``.
        rotation_numerics: see ``rotation_error_deg``.

    Returns:
        ``(rot_err [P], trans_err [P])`` in degrees, pairs in ``all_pairs(N)`` order.
    """
    T_gt = _check_poses(T_gt, "T_gt")
    pairs = all_pairs(T_gt.shape[0])
    rel_gt = relative_poses(T_gt, pairs, convention)
    if T_rel_pred is not None:
        rel_pred = np.asarray(T_rel_pred, dtype=np.float64)
        if rel_pred.shape != rel_gt.shape:
            raise ValueError(f"T_rel_pred must be [{len(pairs)}, 4, 4] (one per i<j pair), got {rel_pred.shape}")
        if convention == "vggt":
            rel_pred = invert_rigid(rel_pred)
    elif T_pred is not None:
        T_pred = _check_poses(T_pred, "T_pred")
        if T_pred.shape != T_gt.shape:
            raise ValueError(f"T_pred {T_pred.shape} and T_gt {T_gt.shape} differ in shape")
        rel_pred = relative_poses(T_pred, pairs, convention)
    else:
        raise ValueError("pair_errors needs T_pred or T_rel_pred")
    rot = rotation_error_deg(rel_gt[:, :3, :3], rel_pred[:, :3, :3], rotation_numerics)
    trans = translation_error_deg(rel_gt[:, :3, 3], rel_pred[:, :3, 3])
    return rot, trans


def accuracy(err_deg: np.ndarray, tau: float) -> float:
    """``100 * mean(err < tau)`` (strict, as RRA@tau / RTA@tau)."""
    err = np.asarray(err_deg, dtype=np.float64)
    if err.size == 0:
        raise ValueError("accuracy of an empty set of pairs")
    return float(100.0 * np.mean(err < tau))


def mean_average_accuracy(rot_err: np.ndarray, trans_err: np.ndarray, max_threshold: int = 30) -> float:
    """mAA(max_threshold) = AUC of the accuracy of ``max(rot_err, trans_err)`` over 1..max_threshold degrees.

    Reproduces PoseDiffusion's ``calculate_auc_np``: a histogram with integer bin edges 0..max_threshold,
    normalised by *all* pairs (those above the last edge count as failures), cumulated and averaged. NumPy's
    last bin is closed, so an error of exactly ``max_threshold`` counts at the last threshold.

    Args:
        rot_err, trans_err: ``[P]`` degrees.
        max_threshold: largest threshold in whole degrees.

    Returns:
        Percentage in [0, 100].
    """
    m = np.maximum(np.asarray(rot_err, dtype=np.float64), np.asarray(trans_err, dtype=np.float64))
    if m.size == 0:
        raise ValueError("mAA of an empty set of pairs")
    hist, _ = np.histogram(m, bins=np.arange(max_threshold + 1))
    return float(100.0 * np.mean(np.cumsum(hist / m.size)))


THRESHOLDS = (5, 15, 30)


def pooled_metrics(rot_err: np.ndarray, trans_err: np.ndarray, thresholds: Sequence[int] = THRESHOLDS) -> dict:
    """RRA@tau, RTA@tau for each threshold and mAA(30) over one pool of pairs.

    Returns:
        ``{"pairs": P, "RRA@5": .., "RTA@5": .., ..., "mAA(30)": ..}``.
    """
    rot = np.asarray(rot_err, dtype=np.float64).ravel()
    trans = np.asarray(trans_err, dtype=np.float64).ravel()
    if rot.shape != trans.shape:
        raise ValueError(f"rotation and translation errors differ in length: {rot.shape} vs {trans.shape}")
    out: dict = {"pairs": int(rot.size)}
    for tau in thresholds:
        out[f"RRA@{tau}"] = accuracy(rot, tau)
        out[f"RTA@{tau}"] = accuracy(trans, tau)
    out["mAA(30)"] = mean_average_accuracy(rot, trans, 30)
    return out


METRIC_KEYS = tuple(f"{k}@{t}" for t in THRESHOLDS for k in ("RRA", "RTA")) + ("mAA(30)",)


def aggregate(per_category_errors: Mapping[str, Iterable[tuple[np.ndarray, np.ndarray]]]) -> dict:
    """Pool pairs per category, then take the unweighted mean over categories (PoseDiffusion's ``"mean"``).

    Args:
        per_category_errors: category -> iterable of per-sequence ``(rot_err [P], trans_err [P])``.

    Returns:
        ``{"categories": {cat: metrics}, "mean": metrics}``; the mean's ``"pairs"`` is the total pair count.
    """
    cats: dict[str, dict] = {}
    for cat, seqs in per_category_errors.items():
        seqs = list(seqs)
        if not seqs:
            continue
        rot = np.concatenate([np.asarray(r, dtype=np.float64).ravel() for r, _ in seqs])
        trans = np.concatenate([np.asarray(t, dtype=np.float64).ravel() for _, t in seqs])
        cats[cat] = pooled_metrics(rot, trans) | {"sequences": len(seqs)}
    if not cats:
        raise ValueError("no results to aggregate")
    mean = {k: float(np.mean([m[k] for m in cats.values()])) for k in METRIC_KEYS}
    mean["pairs"] = int(sum(m["pairs"] for m in cats.values()))
    mean["sequences"] = int(sum(m["sequences"] for m in cats.values()))
    return {"categories": cats, "mean": mean}
