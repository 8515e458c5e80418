"""Camera geometry, each operation once: pixel grids, (un)projection, rigid transforms, intrinsics, focal
estimation, similarity registration, resection, rotation averaging and the CO3D <-> OpenCV camera conversion.

Conventions (DESIGN.md): pixel centres on integer coordinates, pixel ``(x, y)`` = (column, row); ``K [3, 3]`` in
pixels, skew ``K[0, 1]`` included everywhere; ``depth`` is z-depth; ``T_world_cam`` a ``[4, 4]`` OpenCV
camera-to-world (+X right, +Y down, +Z forward).

Array type: NumPy throughout. Every caller (scenes, exports, oracle, evaluation, synthetic data, training data)
holds NumPy arrays, and the closed forms run in float64 there. Results follow the inputs' dtype: float32 when all
floating inputs are float32, float64 otherwise.

Libraries: kornia's ``depth_to_3d_v2`` / ``unproject_points`` / ``project_points`` ignore the skew ``K[0, 1]``
(their docstrings say so) and take torch tensors, so ``unproject`` / ``project`` are written here with the full
``K``; ``tests/geometry`` checks they agree with kornia for skew-free cameras. Similarity registration and the
nearest rotation come from roma (``rigid_points_registration``, ``special_procrustes``), called on float64 tensors.
Written by hand because neither library has them: the Weiszfeld focal, the DLT resection and the CO3D conversion.
roma and torch are imported inside the two functions that use them, so that importing this module stays
torch-free for the layers that do not need torch (dataset readers, the ``recon --help`` path).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

__all__ = [
    "K_from_focal",
    "average_rotations",
    "check_shape",
    "co3d_to_opencv",
    "focal_bounds",
    "invert",
    "opencv_to_co3d",
    "pixel_grid",
    "project",
    "resection_dlt",
    "transform",
    "umeyama",
    "unproject",
    "unproject_points",
    "weiszfeld_focal",
]

CO3D_INTRINSICS_FORMATS = ("ndc_isotropic", "ndc_norm_image_bounds")
# PyTorch3D -> OpenCV camera axes: x and y flip, z stays.
_FLIP_XY = np.diag([-1.0, -1.0, 1.0])


# --- shape contracts -------------------------------------------------------------------------------------------


def check_shape(x: np.ndarray, spec: str, name: str = "array") -> None:
    """Raise a ``ValueError`` naming ``name``, the expected and the actual shape unless ``x`` matches ``spec``.

    ``spec`` is a space-separated list of axes: an integer is an exact size, a letter any size (the same letter
    twice must match), and a leading ``...`` any number of leading axes. Example: ``check_shape(K, "... 3 3", "K")``.
    """
    tokens = spec.split()
    shape = tuple(np.shape(x))
    leading = bool(tokens) and tokens[0] == "..."
    axes = tokens[1:] if leading else tokens
    ok = len(shape) >= len(axes) if leading else len(shape) == len(axes)
    bound: dict[str, int] = {}
    if ok:
        for tok, size in zip(axes, shape[len(shape) - len(axes) :], strict=True):
            if tok.isdigit():
                ok = size == int(tok)
            else:
                ok = bound.setdefault(tok, size) == size
            if not ok:
                break
    if not ok:
        raise ValueError(f"{name} must have shape [{', '.join(tokens)}], got {list(shape)}")


def _float_dtype(*arrays: np.ndarray) -> np.dtype:
    """float32 when every floating input is float32 (integers count as float32), float64 otherwise."""
    return np.result_type(np.float32, *(a.dtype for a in arrays))


def _batched_points(M: np.ndarray, X: np.ndarray, fn) -> np.ndarray:
    """Apply ``fn(M [B, r, c], X [B, P, d])`` with ``M [r, c]`` (one matrix for every point) or ``M [B, r, c]``
    paired with ``X [B, ..., d]`` (one matrix per leading index); returns ``[..., d_out]`` in ``X``'s layout."""
    if M.ndim == 2:
        out = fn(M[None], X.reshape(1, -1, X.shape[-1]))
        return out.reshape(*X.shape[:-1], out.shape[-1])
    if M.ndim != 3 or X.ndim < 2 or X.shape[0] != M.shape[0]:
        raise ValueError(
            f"a batch of B matrices pairs with points [B, ..., {X.shape[-1]}]; "
            f"got matrices {list(M.shape)} and points {list(X.shape)}"
        )
    out = fn(M, X.reshape(X.shape[0], -1, X.shape[-1]))
    return out.reshape(*X.shape[:-1], out.shape[-1])


def _affine(M: np.ndarray, P: np.ndarray) -> np.ndarray:
    """``M[:, :, :d] P + M[:, :, d]`` for ``M [B, r, d + 1]`` and points ``P [B, N, d]`` -> ``[B, N, r]``."""
    d = P.shape[-1]
    return P @ M[:, :, :d].transpose(0, 2, 1) + M[:, None, :, d]


# --- pixels, cameras, transforms -------------------------------------------------------------------------------


def pixel_grid(H: int, W: int, homogeneous: bool = False, dtype=np.float64) -> np.ndarray:
    """Pixel coordinates ``[H, W, 2]`` as ``(x, y)``, or ``[H, W, 3]`` as ``(x, y, 1)`` when ``homogeneous``.

    The centre of the top-left pixel is ``(0, 0)``.
    """
    if H < 0 or W < 0:
        raise ValueError(f"pixel_grid: H and W must be >= 0, got {H}, {W}")
    y, x = np.mgrid[0:H, 0:W].astype(dtype)
    return np.stack([x, y, np.ones_like(x)] if homogeneous else [x, y], axis=-1)


def unproject(depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Camera-frame points of every pixel of a z-depth map, with the full ``K`` (skew included).

    Args:
        depth: ``[..., H, W]`` z-depth.
        K: ``[..., 3, 3]`` intrinsics in pixels; its leading axes broadcast against ``depth``'s.

    Returns:
        ``[..., H, W, 3]`` points ``depth · K⁻¹ (x, y, 1)``.
    """
    depth, K = np.asarray(depth), np.asarray(K)
    check_shape(depth, "... H W", "depth")
    check_shape(K, "... 3 3", "K")
    dtype = _float_dtype(depth, K)
    H, W = depth.shape[-2:]
    Ki = np.linalg.inv(K.astype(np.float64)).astype(dtype)[..., None, None, :, :]  # ... 1 1 3 3
    x = np.arange(W, dtype=dtype)  # W
    y = np.arange(H, dtype=dtype)[:, None]  # H 1
    d = depth.astype(dtype, copy=False)
    # depth · K⁻¹ (x, y, 1), one output coordinate at a time: no [H, W, 3] pixel grid is built.
    return np.stack([(Ki[..., r, 0] * x + Ki[..., r, 1] * y + Ki[..., r, 2]) * d for r in range(3)], axis=-1)


def unproject_points(xy: np.ndarray, z: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Camera-frame points of pixels ``xy`` at z-depths ``z`` (full ``K``).

    Args:
        xy: ``[..., 2]`` pixel coordinates (any real values).
        z: ``[...]`` z-depth of each pixel.
        K: ``[3, 3]``, or ``[B, 3, 3]`` paired with ``xy [B, ..., 2]``.

    Returns:
        ``[..., 3]`` points.
    """
    xy, z, K = np.asarray(xy), np.asarray(z), np.asarray(K)
    check_shape(xy, "... 2", "xy")
    check_shape(K, "... 3 3", "K")
    if z.shape != xy.shape[:-1]:
        raise ValueError(f"z must have shape {list(xy.shape[:-1])} (xy without its last axis), got {list(z.shape)}")
    dtype = _float_dtype(xy, z, K)
    Ki = np.linalg.inv(K.astype(np.float64)).astype(dtype)
    rays = _batched_points(Ki, xy.astype(dtype, copy=False), _affine)  # K⁻¹ (x, y, 1)
    return rays * z.astype(dtype, copy=False)[..., None]


def project(X: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixels of camera-frame points with the full ``K`` (skew included).

    Args:
        X: ``[..., 3]`` points in the camera frame.
        K: ``[3, 3]``, or ``[B, 3, 3]`` paired with ``X [B, ..., 3]``.

    Returns:
        ``[..., 2]`` pixels ``(x, y)``. No clamping: ``z = 0`` gives inf / nan and ``z < 0`` the mirrored pixel,
        so callers keep only points with ``z > 0``.
    """
    X, K = np.asarray(X), np.asarray(K)
    check_shape(X, "... 3", "X")
    check_shape(K, "... 3 3", "K")
    dtype = _float_dtype(X, K)
    X, K = X.astype(dtype, copy=False), K.astype(dtype, copy=False)
    with np.errstate(divide="ignore", invalid="ignore"):
        xy = X[..., :2] / X[..., 2:3]
    return _batched_points(K[..., :2, :], xy, _affine)


def transform(T: np.ndarray, X: np.ndarray) -> np.ndarray:
    """Points ``X`` mapped by the affine ``[4, 4]`` matrix ``T`` (rigid or similarity): ``R X + t``.

    Args:
        T: ``[4, 4]``, or ``[B, 4, 4]`` paired with ``X [B, ..., 3]``.
        X: ``[..., 3]`` points.

    Returns:
        ``[..., 3]`` points.
    """
    T, X = np.asarray(T), np.asarray(X)
    check_shape(T, "... 4 4", "T")
    check_shape(X, "... 3", "X")
    dtype = _float_dtype(T, X)
    T, X = T.astype(dtype, copy=False), X.astype(dtype, copy=False)
    return _batched_points(T[..., :3, :], X, _affine)


def invert(T: np.ndarray) -> np.ndarray:
    """Inverse of affine ``[..., 4, 4]`` transforms (rigid or similarity) without a general 4x4 inverse."""
    T = np.asarray(T)
    check_shape(T, "... 4 4", "T")
    dtype = _float_dtype(T)
    A_inv = np.linalg.inv(T[..., :3, :3].astype(np.float64))
    out = np.zeros(T.shape, np.float64)
    out[..., :3, :3] = A_inv
    out[..., :3, 3] = -(A_inv @ T[..., :3, 3:].astype(np.float64))[..., 0]
    out[..., 3, 3] = 1.0
    return out.astype(dtype, copy=False)


def K_from_focal(focal, shape_hw: Sequence[int]) -> np.ndarray:
    """Pinhole intrinsics with square pixels, no skew and the principal point at the image centre ``(W/2, H/2)``.

    Args:
        focal: focal in pixels, a scalar or ``[...]`` array.
        shape_hw: ``(H, W)`` of the image in pixels.

    Returns:
        ``[..., 3, 3]`` float64.
    """
    if len(shape_hw) != 2:
        raise ValueError(f"shape_hw must be (H, W), got {shape_hw}")
    H, W = (float(v) for v in shape_hw)
    f = np.asarray(focal, dtype=np.float64)
    K = np.zeros((*f.shape, 3, 3))
    K[..., 0, 0] = K[..., 1, 1] = f
    K[..., 0, 2], K[..., 1, 2], K[..., 2, 2] = W / 2.0, H / 2.0, 1.0
    return K


# --- focal estimation ------------------------------------------------------------------------------------------


def focal_bounds(shape_hw: Sequence[int], lo: float = 0.5, hi: float = 3.5) -> tuple[float, float, float]:
    """DUSt3R's focal search range: ``(lo · base, hi · base, base)`` with ``base`` the focal of a 60° field of view
    on the image's long side, ``max(H, W) / (2 tan 30°)``."""
    base = max(shape_hw) / (2.0 * math.tan(math.radians(60.0) / 2.0))
    return lo * base, hi * base, base


def weiszfeld_focal(
    pts3d: np.ndarray, pp: Sequence[float] | None = None, weights: np.ndarray | None = None, n_iter: int = 10
) -> float:
    """Focal length that best explains a camera-frame point map, principal point known (square pixels, no skew).

    Minimises ``Σ w·‖(x, y) − pp − f·(X/Z, Y/Z)‖`` over pixels (an L1 norm of 2D residuals) by iteratively
    reweighted least squares started from the L2 solution: the "Weiszfeld" estimator of DUSt3R / MASt3R. Only
    points in front of the camera (``Z > 0``), finite and with positive weight count.

    Args:
        pts3d: ``[H, W, 3]`` points in the camera frame of the pixel grid.
        pp: principal point ``(cx, cy)``; the image centre ``(W/2, H/2)`` when ``None``.
        weights: ``[H, W]`` non-negative weights (confidences or a mask), or ``None``.
        n_iter: re-weighting iterations after the L2 start.

    Returns:
        The focal in pixels; ``nan`` when no point counts.
    """
    P = np.asarray(pts3d, np.float64)
    check_shape(P, "H W 3", "pts3d")
    H, W = P.shape[:2]
    if weights is not None:
        check_shape(weights, f"{H} {W}", "weights")
    c = np.array([W / 2.0, H / 2.0]) if pp is None else np.asarray(pp, np.float64).reshape(2)
    uv = (pixel_grid(H, W) - c).reshape(-1, 2)
    P = P.reshape(-1, 3)
    w = np.ones(len(P)) if weights is None else np.asarray(weights, np.float64).reshape(-1)
    ok = (P[:, 2] > 0) & np.isfinite(P).all(1) & (w > 0)
    if not ok.any():
        return float("nan")
    xy = P[ok, :2] / P[ok, 2:3]
    uv, w = uv[ok], w[ok]
    # Closed-form minimiser of Σ w ‖uv − f·xy‖²: f = Σ w uv·xy / Σ w xy·xy; then re-weight by 1 / residual.
    f = float((w * (uv * xy).sum(1)).sum() / max((w * (xy * xy).sum(1)).sum(), 1e-300))
    for _ in range(n_iter):
        wi = w / np.maximum(np.linalg.norm(uv - f * xy, axis=1), 1e-8)
        f = float((wi * (uv * xy).sum(1)).sum() / max((wi * (xy * xy).sum(1)).sum(), 1e-300))
    return f


# --- registration, resection, rotations ------------------------------------------------------------------------


def umeyama(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None, with_scale: bool = True):
    """Weighted similarity ``dst ≈ s·R·src + t`` in the least-squares sense (Umeyama 1991), by roma.

    Args:
        src, dst: ``[P, 3]`` corresponding points.
        weights: ``[P]`` non-negative weights (uniform when ``None``).
        with_scale: estimate ``s``; otherwise ``s = 1``.

    Returns:
        ``(s, R [3, 3], t [3])`` as float, float64, float64.

    Raises:
        ValueError: wrong shapes, or fewer than 3 points with positive weight.
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3 or w.shape != (len(src),):
        raise ValueError(f"umeyama: expected src, dst [P,3] and weights [P]; got {src.shape}, {dst.shape}, {w.shape}")
    if int((w > 0).sum()) < 3:
        raise ValueError("umeyama: need at least 3 points with positive weight")
    import roma
    import torch

    out = roma.rigid_points_registration(
        torch.from_numpy(src), torch.from_numpy(dst), weights=torch.from_numpy(w), compute_scaling=with_scale
    )
    R, t = out[0].numpy(), out[1].numpy()
    return (float(out[2]) if with_scale else 1.0), R, t


def average_rotations(Rs: np.ndarray) -> np.ndarray:
    """Chordal L2 mean of ``[N, 3, 3]`` rotations -> ``[3, 3]`` (the rotation nearest their sum, by roma)."""
    Rs = np.asarray(Rs, np.float64)
    check_shape(Rs, "N 3 3", "Rs")
    import roma
    import torch

    return roma.special_procrustes(torch.from_numpy(Rs.sum(0))).numpy()


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
    check_shape(X, "P 3", "X")
    check_shape(uv, f"{len(X)} 2", "uv")
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


# --- CO3D (PyTorch3D) <-> OpenCV -------------------------------------------------------------------------------


def _co3d_ndc_half(shape_hw: Sequence[int], intrinsics_format: str) -> tuple[float, float, np.ndarray]:
    """``(H, W, half [2])``: pixels per NDC unit along x and y for a CO3D intrinsics format."""
    if intrinsics_format not in CO3D_INTRINSICS_FORMATS:
        raise ValueError(
            f"unknown CO3D intrinsics_format {intrinsics_format!r}; expected one of {CO3D_INTRINSICS_FORMATS}"
        )
    if len(shape_hw) != 2:
        raise ValueError(f"image size must be (H, W), got {shape_hw}")
    H, W = (float(v) for v in shape_hw)
    if not (H > 0 and W > 0):
        raise ValueError(f"image size must be positive (H, W), got {shape_hw}")
    # "ndc_isotropic" (CO3Dv2): one unit = min(W, H) / 2 pixels on both axes; legacy: [-1, 1] spans each axis.
    half = np.full(2, min(W, H) / 2.0) if intrinsics_format == "ndc_isotropic" else np.array([W / 2.0, H / 2.0])
    return H, W, half


def co3d_to_opencv(
    R: np.ndarray,
    T: np.ndarray,
    focal_length: np.ndarray,
    principal_point: np.ndarray,
    shape_hw: Sequence[int],
    intrinsics_format: str = "ndc_isotropic",
) -> tuple[np.ndarray, np.ndarray]:
    """One CO3D (PyTorch3D) camera as ``(T_world_cam [4, 4], K [3, 3])``, both float64.

    CO3D stores ``X_cam = X_world @ R + T`` (row vectors) with camera axes +X left, +Y up, and NDC intrinsics
    (reference ``co3d_eval.md`` section 2.6, PyTorch3D ``_opencv_from_cameras_projection``). With
    ``F = diag(-1, -1, 1)``: ``R_w2c = F Rᵀ``, ``t_w2c = F T``; ``K = (f · half, (W/2, H/2) − p · half)``.

    Args:
        R: ``[3, 3]`` PyTorch3D rotation as stored.
        T: ``[3]`` PyTorch3D translation.
        focal_length: ``[2]`` NDC focal ``(fx, fy)``.
        principal_point: ``[2]`` NDC principal point ``(px, py)``.
        shape_hw: ``(H, W)`` in pixels (CO3D's ``image.size`` is height first).
        intrinsics_format: ``"ndc_isotropic"`` (CO3Dv2) or ``"ndc_norm_image_bounds"`` (legacy).

    Raises:
        ValueError: wrong shapes, unknown format or a non-positive image size.
    """
    R = np.asarray(R, dtype=np.float64)
    T = np.asarray(T, dtype=np.float64).reshape(-1)
    f = np.asarray(focal_length, dtype=np.float64).reshape(-1)
    p = np.asarray(principal_point, dtype=np.float64).reshape(-1)
    if R.shape != (3, 3) or T.shape != (3,) or f.shape != (2,) or p.shape != (2,):
        raise ValueError(
            f"CO3D viewpoint has wrong shapes: R {R.shape} (3,3), T {T.shape} (3,), "
            f"focal_length {f.shape} (2,), principal_point {p.shape} (2,)"
        )
    H, W, half = _co3d_ndc_half(shape_hw, intrinsics_format)
    fx, fy = f * half
    cx, cy = np.array([W / 2.0, H / 2.0]) - p * half
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    R_w2c = _FLIP_XY @ R.T
    t_w2c = _FLIP_XY @ T
    T_world_cam = np.eye(4)
    T_world_cam[:3, :3] = R_w2c.T
    T_world_cam[:3, 3] = -R_w2c.T @ t_w2c
    return T_world_cam, K


def opencv_to_co3d(
    T_world_cam: np.ndarray, K: np.ndarray, shape_hw: Sequence[int], intrinsics_format: str = "ndc_isotropic"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of ``co3d_to_opencv``: ``(R [3, 3], T [3], focal_length [2], principal_point [2])``, float64.

    Raises:
        ValueError: wrong shapes, unknown format, or a skewed ``K`` (CO3D cannot represent skew).
    """
    T_world_cam = np.asarray(T_world_cam, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    check_shape(T_world_cam, "4 4", "T_world_cam")
    check_shape(K, "3 3", "K")
    if abs(K[0, 1]) > 1e-9:
        raise ValueError("CO3D viewpoints cannot represent a skewed K")
    H, W, half = _co3d_ndc_half(shape_hw, intrinsics_format)
    R_w2c = T_world_cam[:3, :3].T
    t_w2c = -R_w2c @ T_world_cam[:3, 3]
    R = R_w2c.T @ _FLIP_XY
    T = _FLIP_XY @ t_w2c
    focal = np.array([K[0, 0], K[1, 1]]) / half
    pp = (np.array([W / 2.0, H / 2.0]) - K[:2, 2]) / half
    return R, T, focal, pp
