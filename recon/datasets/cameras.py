"""Camera conversions of the benchmark datasets to recon's ``T_world_cam`` (4x4 camera-to-world, OpenCV) and
pixel ``K``.

CO3D stores PyTorch3D cameras: ``X_cam = X_world @ R + T`` (row vectors) with +X left, +Y up, and NDC
intrinsics; RealEstate10K stores OpenCV world-to-camera ``[R|t]`` with intrinsics normalised by the image size.
The CO3D maths is ``recon.geometry.co3d_to_opencv`` / ``opencv_to_co3d``; here the ``viewpoint`` records of the
annotations are read and written, and bad records raise ``CameraFormatError``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from recon import geometry
from recon.errors import UserError

logger = logging.getLogger(__name__)

INTRINSICS_FORMATS = geometry.CO3D_INTRINSICS_FORMATS


class CameraFormatError(UserError, ValueError):
    """A camera record that cannot be converted (unknown format, wrong shape, non-finite values)."""


def co3d_viewpoint_to_opencv(viewpoint: Mapping, shape_hw: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """``(T_world_cam [4, 4], K [3, 3])`` of a CO3D ``viewpoint`` record (maths in ``recon.geometry.co3d_to_opencv``).

    A missing ``intrinsics_format`` means the annotation dataclass default, ``"ndc_norm_image_bounds"``.

    Args:
        viewpoint: ``{"R", "T", "focal_length", "principal_point"[, "intrinsics_format"]}``.
        shape_hw: ``image.size``, i.e. ``(H, W)``.

    Raises:
        CameraFormatError: a missing field, wrong shapes, an unknown format or a non-positive image size.
    """
    try:
        return geometry.co3d_to_opencv(
            viewpoint["R"], viewpoint["T"], viewpoint["focal_length"], viewpoint["principal_point"], shape_hw,
            viewpoint.get("intrinsics_format", "ndc_norm_image_bounds"),
        )  # fmt: skip
    except KeyError as err:
        raise CameraFormatError(f"CO3D viewpoint has no {err.args[0]!r} field") from None
    except ValueError as err:
        raise CameraFormatError(str(err)) from None


def opencv_to_co3d_viewpoint(
    T_world_cam: np.ndarray, K: np.ndarray, shape_hw: Sequence[int], intrinsics_format: str = "ndc_isotropic"
) -> dict:
    """CO3D ``viewpoint`` record of one OpenCV camera (the inverse of ``co3d_viewpoint_to_opencv``).

    Returns:
        ``{"R": 3x3 rows, "T": [3], "focal_length": [2], "principal_point": [2], "intrinsics_format": str}``.

    Raises:
        CameraFormatError: unknown format, a skewed ``K`` or a non-positive image size.
    """
    try:
        R, T, focal, pp = geometry.opencv_to_co3d(T_world_cam, K, shape_hw, intrinsics_format)
    except ValueError as err:
        raise CameraFormatError(str(err)) from None
    return {
        "R": R.tolist(),
        "T": T.tolist(),
        "focal_length": focal.tolist(),
        "principal_point": pp.tolist(),
        "intrinsics_format": intrinsics_format,
    }


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
