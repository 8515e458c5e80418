"""Closed-form geometry used to initialise the alignment (float64 NumPy) and its differentiable twins (torch).

Everything here is small and vectorised: weighted similarity registration (Umeyama), focal estimation from a
point map (Weiszfeld IRLS), camera resection (DLT), rotation averaging, and torch helpers for rotation vectors.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

logger = logging.getLogger(__name__)


def pixel_grid(H: int, W: int) -> np.ndarray:
    """``[H, W, 2]`` float64 pixel coordinates ``(x, y)`` (centre of the top-left pixel at ``(0, 0)``)."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    return np.stack([x, y], axis=-1)


def project_to_so3(M: np.ndarray) -> np.ndarray:
    """Nearest rotation (Frobenius) to ``M [..., 3, 3]``; returns ``[..., 3, 3]`` with det +1."""
    U, _, Vt = np.linalg.svd(M)
    d = np.sign(np.linalg.det(U @ Vt))
    D = np.ones(U.shape[:-1])
    D[..., -1] = d
    return (U * D[..., None, :]) @ Vt


def umeyama(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None, with_scale: bool = True):
    """Weighted similarity ``dst ≈ s·R·src + t`` in the least-squares sense (Umeyama 1991).

    Args:
        src, dst: ``[P, 3]`` corresponding points.
        weights: ``[P]`` non-negative weights (uniform when ``None``).
        with_scale: estimate ``s``; otherwise ``s = 1``.

    Returns:
        ``(s, R [3, 3], t [3])`` as float64.

    Raises:
        ValueError: fewer than 3 points with positive weight.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3 or w.shape != (len(src),):
        raise ValueError(f"umeyama: expected src, dst [P,3] and weights [P]; got {src.shape}, {dst.shape}, {w.shape}")
    if int((w > 0).sum()) < 3:
        raise ValueError("umeyama: need at least 3 points with positive weight")
    w = w / w.sum()
    mu_s, mu_d = w @ src, w @ dst
    s0, d0 = src - mu_s, dst - mu_d
    cov = (d0 * w[:, None]).T @ s0  # [3,3] = Σ w d sᵀ
    U, S, Vt = np.linalg.svd(cov)
    D = np.ones(3)
    D[2] = np.sign(np.linalg.det(U) * np.linalg.det(Vt)) or 1.0
    R = (U * D) @ Vt
    var_s = float(w @ (s0**2).sum(1))
    s = float((S * D).sum() / max(var_s, 1e-300)) if with_scale else 1.0
    t = mu_d - s * R @ mu_s
    return s, R, t


def similarity_matrix(s: float, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``[4, 4]`` matrix of ``x -> s·R·x + t``."""
    M = np.eye(4)
    M[:3, :3] = s * R
    M[:3, 3] = t
    return M


def weiszfeld_focal(pts3d: np.ndarray, pp: np.ndarray, weights: np.ndarray | None = None, n_iter: int = 10) -> float:
    """Focal length that best explains a camera-frame point map, principal point known.

    Minimises ``Σ w·‖(u, v) − pp − f·(X/Z, Y/Z)‖`` (an L1 norm of 2D residuals) by iteratively reweighted least
    squares started from the L2 solution — the "Weiszfeld" estimator used by DUSt3R.

    Args:
        pts3d: ``[H, W, 3]`` points in the camera frame.
        pp: ``[2]`` principal point (pixels).
        weights: ``[H, W]`` confidences, or ``None``.
        n_iter: IRLS iterations.

    Returns:
        The focal in pixels (``nan`` when no point lies in front of the camera).
    """
    H, W = pts3d.shape[:2]
    uv = (pixel_grid(H, W) - np.asarray(pp, np.float64)).reshape(-1, 2)
    P = np.asarray(pts3d, np.float64).reshape(-1, 3)
    w = np.ones(len(P)) if weights is None else np.asarray(weights, np.float64).reshape(-1)
    ok = (P[:, 2] > 0) & np.isfinite(P).all(1) & (w > 0)
    if not ok.any():
        return float("nan")
    xy = P[ok, :2] / P[ok, 2:3]
    uv, w = uv[ok], w[ok]
    # Closed-form minimiser of Σ w ‖uv − f·xy‖²: f = Σ w uv·xy / Σ w xy·xy.
    f = float((w * (uv * xy).sum(1)).sum() / max((w * (xy * xy).sum(1)).sum(), 1e-300))
    for _ in range(n_iter):
        r = np.linalg.norm(uv - f * xy, axis=1)
        wi = w / np.maximum(r, 1e-8)
        f = float((wi * (uv * xy).sum(1)).sum() / max((wi * (xy * xy).sum(1)).sum(), 1e-300))
    return f


def resection_dlt(X: np.ndarray, uv: np.ndarray, weights: np.ndarray | None = None):
    """Camera from 2D-3D correspondences by the normalised DLT, split into ``K`` and a pose.

    Args:
        X: ``[P, 3]`` points (world frame), ``P >= 6``.
        uv: ``[P, 2]`` their pixel positions.
        weights: ``[P]`` weights, or ``None``.

    Returns:
        ``(K [3, 3], T_world_cam [4, 4])``; ``K`` has square pixels (mean of fx, fy) and no skew.
    """
    X = np.asarray(X, np.float64)
    uv = np.asarray(uv, np.float64)
    w = np.ones(len(X)) if weights is None else np.sqrt(np.asarray(weights, np.float64))
    if len(X) < 6:
        raise ValueError(f"resection needs at least 6 correspondences, got {len(X)}")

    def _normaliser(p):
        mu = p.mean(0)
        scale = np.sqrt(p.shape[1]) / max(np.linalg.norm(p - mu, axis=1).mean(), 1e-12)
        T = np.eye(p.shape[1] + 1)
        T[:-1, :-1] *= scale
        T[:-1, -1] = -scale * mu
        return T

    T3, T2 = _normaliser(X), _normaliser(uv)
    Xh = np.c_[X, np.ones(len(X))] @ T3.T
    uh = np.c_[uv, np.ones(len(uv))] @ T2.T
    z = np.zeros_like(Xh)
    rows1 = np.c_[Xh, z, -uh[:, :1] * Xh]
    rows2 = np.c_[z, Xh, -uh[:, 1:2] * Xh]
    A = np.concatenate([rows1 * w[:, None], rows2 * w[:, None]])
    P = np.linalg.svd(A, full_matrices=False)[2][-1].reshape(3, 4)
    P = np.linalg.inv(T2) @ P @ T3
    M = P[:, :3]
    if np.linalg.det(M) < 0:
        P, M = -P, -M
    # RQ decomposition of M = K R via QR of the flipped transpose.
    Fl = np.eye(3)[::-1]
    Q, Rr = np.linalg.qr((Fl @ M).T)
    K = Fl @ Rr.T @ Fl
    R = Fl @ Q.T
    S = np.diag(np.sign(np.diag(K)))
    K, R = K @ S, S @ R
    t = np.linalg.solve(K, P[:, 3])
    if np.linalg.det(R) < 0:  # P was only known up to sign; keep the points in front of the camera
        R, t = -R, -t
    K = K / K[2, 2]
    f = 0.5 * (K[0, 0] + K[1, 1])
    K = np.array([[f, 0, K[0, 2]], [0, f, K[1, 2]], [0, 0, 1.0]])
    T = np.eye(4)
    T[:3, :3] = R.T
    T[:3, 3] = -R.T @ t
    return K, T


def rotvec_to_matrix(rv: torch.Tensor) -> torch.Tensor:
    """Rodrigues: ``[..., 3]`` rotation vectors -> ``[..., 3, 3]`` matrices (differentiable at 0)."""
    theta2 = (rv * rv).sum(-1, keepdim=True)[..., None]  # [...,1,1]
    small = theta2 < 1e-12
    safe2 = torch.where(small, torch.ones_like(theta2), theta2)
    theta = torch.sqrt(safe2)
    # Taylor expansions near zero keep the gradient finite.
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / safe2)
    x, y, z = rv.unbind(-1)
    zero = torch.zeros_like(x)
    Kx = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], -1).reshape(*rv.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=rv.dtype, device=rv.device).expand_as(Kx)
    return eye + a * Kx + b * (Kx @ Kx)


def average_rotations(Rs: np.ndarray) -> np.ndarray:
    """Chordal L2 mean of ``[K, 3, 3]`` rotations -> ``[3, 3]``."""
    return project_to_so3(np.asarray(Rs, np.float64).sum(0))


def rotation_angle_deg(R1: np.ndarray, R2: np.ndarray) -> np.ndarray:
    """Geodesic angle in degrees between ``[..., 3, 3]`` rotations."""
    c = (np.einsum("...ij,...ij->...", R1, R2) - 1) / 2
    return np.degrees(np.arccos(np.clip(c, -1.0, 1.0)))
