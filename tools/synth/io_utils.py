"""Atomic file writing shared by the dataset writers (temp file in the target folder + ``os.replace``)."""

from __future__ import annotations

import gzip
import io
import json
import logging
import os
from pathlib import Path

import numpy as np

from backbone.fileio import write_bytes_atomic

logger = logging.getLogger(__name__)

IMAGE_FORMATS = ("jpg", "png")


def write_jgz_atomic(path: str | os.PathLike, obj) -> Path:
    """gzip-compressed JSON (CO3D's ``.jgz``); ``mtime=0`` keeps the bytes reproducible."""
    return write_bytes_atomic(path, gzip.compress(json.dumps(obj).encode("utf-8"), mtime=0))


def encode_image(rgb: np.ndarray, fmt: str = "png", quality: int = 90) -> bytes:
    """Encode ``rgb [H, W, 3]`` (or ``[H, W]``) uint8 / uint16 to PNG or JPEG bytes."""
    from PIL import Image

    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"image format must be one of {IMAGE_FORMATS}, got {fmt!r}")
    buf = io.BytesIO()
    img = Image.fromarray(rgb)
    if fmt == "jpg":
        # 4:4:4 chroma keeps the fine colour texture the matchers rely on.
        img.save(buf, format="JPEG", quality=int(quality), subsampling=0)
    else:
        img.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def write_image_atomic(path: str | os.PathLike, rgb: np.ndarray, quality: int = 90) -> Path:
    """Write an image, format from the suffix (``.jpg``/``.jpeg`` or ``.png``)."""
    suffix = Path(path).suffix.lower()
    fmt = {".jpg": "jpg", ".jpeg": "jpg", ".png": "png"}.get(suffix)
    if fmt is None:
        raise ValueError(f"cannot tell the image format of {path}; use .jpg or .png")
    return write_bytes_atomic(path, encode_image(rgb, fmt, quality))
