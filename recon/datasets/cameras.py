"""Camera conversions of the benchmark datasets to recon's ``T_world_cam`` (4x4 camera-to-world, OpenCV) and
pixel ``K``.

CO3D stores PyTorch3D cameras: ``X_cam = X_world @ R + T`` (row vectors) with +X left, +Y up, and NDC
intrinsics; RealEstate10K stores OpenCV world-to-camera ``[R|t]`` with intrinsics normalised by the image size.
The formulas follow the reference's section 2.6 (PyTorch3D ``_opencv_from_cameras_projection``).
"""

from __future__ import annotations

import logging

import numpy as np

from recon.errors import UserError

logger = logging.getLogger(__name__)

# PyTorch3D -> OpenCV camera axes: x and y flip, z stays.
_F = np.diag([-1.0, -1.0, 1.0])
INTRINSICS_FORMATS = ("ndc_isotropic", "ndc_norm_image_bounds")


class CameraFormatError(UserError, ValueError):
    """A camera record that cannot be converted (unknown format, wrong shape, non-finite values)."""


def co3d_to_opencv(
    R: np.ndarray,
    T: np.ndarray,
    focal_length: np.ndarray,
    principal_point: np.ndarray,
    image_size_hw: tuple[int, int],
    intrinsics_format: str = "ndc_isotropic",
) -> tuple[np.ndarray, np.ndarray]:
    """Convert one CO3D ``viewpoint`` to ``(T_world_cam [4,4], K [3,3])``, both float64.

    Args:
        R: ``[3, 3]`` PyTorch3D rotation (rows as stored in the annotation; ``X_cam = X_world R + T``).
        T: ``[3]`` PyTorch3D translation.
        focal_length: ``[2]`` NDC focal ``(fx, fy)``.
        principal_point: ``[2]`` NDC principal point ``(px, py)``.
        image_size_hw: ``(H, W)`` in pixels (CO3D's ``image.size`` is height first).
        intrinsics_format: ``"ndc_isotropic"`` (CO3Dv2) or ``"ndc_norm_image_bounds"`` (legacy).
    """
    R = np.asarray(R, dtype=np.float64)
    T = np.asarray(T, dtype=np.float64).reshape(-1)
    f = np.asarray(focal_length, dtype=np.float64).reshape(-1)
    p = np.asarray(principal_point, dtype=np.float64).reshape(-1)
    if R.shape != (3, 3) or T.shape != (3,) or f.shape != (2,) or p.shape != (2,):
        raise CameraFormatError(
            f"CO3D viewpoint has wrong shapes: R {R.shape} (3,3), T {T.shape} (3,), "
            f"focal_length {f.shape} (2,), principal_point {p.shape} (2,)"
        )
    H, W = (float(v) for v in image_size_hw)
    if H <= 0 or W <= 0:
        raise CameraFormatError(f"image size must be positive (H, W), got {image_size_hw}")
    s = min(W, H) / 2.0
    if intrinsics_format == "ndc_norm_image_bounds":
        # Legacy: NDC spans [-1, 1] on both axes; rescale to the isotropic convention first.
        scale = np.array([W, H]) / min(W, H)
        f = f * scale
        p = p * scale
    elif intrinsics_format != "ndc_isotropic":
        raise CameraFormatError(
            f"unknown CO3D intrinsics_format {intrinsics_format!r}; expected one of {INTRINSICS_FORMATS}"
        )
    K = np.array(
        [[f[0] * s, 0.0, W / 2.0 - p[0] * s], [0.0, f[1] * s, H / 2.0 - p[1] * s], [0.0, 0.0, 1.0]],
    )
    R_w2c = _F @ R.T
    t_w2c = _F @ T
    T_world_cam = np.eye(4)
    T_world_cam[:3, :3] = R_w2c.T
    T_world_cam[:3, 3] = -R_w2c.T @ t_w2c
    return T_world_cam, K


def opencv_to_co3d(
    T_world_cam: np.ndarray, K: np.ndarray, image_size_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Inverse of ``co3d_to_opencv`` in the isotropic format (used to write fixtures).

    Returns:
        ``(R [3,3], T [3], focal_length [2], principal_point [2])`` in PyTorch3D / isotropic NDC.
    """
    T_world_cam = np.asarray(T_world_cam, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    H, W = (float(v) for v in image_size_hw)
    s = min(W, H) / 2.0
    R_w2c = T_world_cam[:3, :3].T
    t_w2c = -R_w2c @ T_world_cam[:3, 3]
    R = R_w2c.T @ _F
    T = _F @ t_w2c
    focal = np.array([K[0, 0], K[1, 1]]) / s
    pp = np.array([(W / 2.0 - K[0, 2]) / s, (H / 2.0 - K[1, 2]) / s])
    return R, T, focal, pp


def re10k_to_opencv(
    intrinsics_norm: np.ndarray, w2c_3x4: np.ndarray, image_size_hw: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Convert one RealEstate10K camera line to ``(T_world_cam [4,4], K [3,3])``.

    Args:
        intrinsics_norm: ``[4]`` ``(fx, fy, cx, cy)`` normalised by image width / height.
        w2c_3x4: ``[3, 4]`` or ``[12]`` row-major OpenCV world-to-camera ``[R|t]``.
        image_size_hw: ``(H, W)`` of the extracted frame in pixels.
    """
    fx, fy, cx, cy = (float(v) for v in np.asarray(intrinsics_norm, dtype=np.float64).reshape(4))
    P = np.asarray(w2c_3x4, dtype=np.float64).reshape(3, 4)
    H, W = (float(v) for v in image_size_hw)
    K = np.array([[fx * W, 0.0, cx * W], [0.0, fy * H, cy * H], [0.0, 0.0, 1.0]])
    T_world_cam = np.eye(4)
    T_world_cam[:3, :3] = P[:, :3].T
    T_world_cam[:3, 3] = -P[:, :3].T @ P[:, 3]
    return T_world_cam, K
