"""Decoders for the depth and image encodings of the training datasets, and the error a wrong root raises."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from training.common.config import DataConfigError


class LayoutError(DataConfigError):
    """A dataset root does not hold the expected layout; the one-line message names the layout and the missing path."""


def require(path: Path, dataset: str, layout: str) -> Path:
    """``path`` if it exists, else ``LayoutError("<dataset>: <path> not found; expected <layout>")``."""
    if not path.exists():
        raise LayoutError(f"{dataset}: {path} not found; expected {layout}")
    return path


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """An image file as ``[H, W, 3]`` uint8 RGB (no EXIF rotation: the datasets' cameras refer to stored pixels)."""
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def read_png16(path: str | os.PathLike) -> np.ndarray:
    """A 16-bit (or 8-bit) single-channel PNG as ``[H, W]`` float32 of its raw integer values."""
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im)
    if arr.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel PNG, got shape {arr.shape}")
    return arr.astype(np.float32)


def read_exr(path: str | os.PathLike) -> np.ndarray:
    """A single-channel float EXR (as ``cv2.imwrite`` of a float32 map writes it: channel ``Y``) as ``[H, W]``.

    Multi-channel files give their first of ``Y``, ``R``, ``Z``, ``depth`` or the only channel.

    Raises:
        ImportError: the ``OpenEXR`` package is missing (with the install command).
    """
    try:
        import OpenEXR
    except ImportError:
        raise ImportError("reading .exr depth maps needs OpenEXR: pip install 'recon3r[datasets]'") from None
    with OpenEXR.File(str(path)) as f:
        channels = f.channels()
        for name in ("Y", "R", "Z", "depth", "RGB", "RGBA"):
            if name in channels:
                pixels = np.asarray(channels[name].pixels)
                break
        else:
            if len(channels) != 1:
                raise ValueError(f"{path}: cannot tell the depth channel among {sorted(channels)}")
            pixels = np.asarray(next(iter(channels.values())).pixels)
    if pixels.ndim == 3:
        pixels = pixels[..., 0]
    return pixels.astype(np.float32)


def write_exr(path: str | os.PathLike, depth: np.ndarray) -> None:
    """Write ``[H, W]`` float32 as a single-channel ``Y`` EXR (the layout ``read_exr`` reads; used by tests)."""
    import OpenEXR

    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, {"Y": np.ascontiguousarray(depth, dtype=np.float32)}) as f:
        f.write(str(path))


def clean_depth(depth: np.ndarray) -> np.ndarray:
    """Non-finite and negative depths -> 0 (invalid), float32."""
    depth = np.asarray(depth, dtype=np.float32).copy()
    depth[~np.isfinite(depth) | (depth < 0)] = 0.0
    return depth
