"""Write synthetic clips in the RealEstate10K layout (camera text files + extracted frames).

Layout written under ``root`` (PoseDiffusion's, reference ``co3d_eval.md`` section 5)::

    <split>/<clip_id>.txt                       camera file
    frames/<split>/<clip_id>/<timestamp>.png    one frame per camera line, named by its integer timestamp
    <split>_clips.txt                           the clip ids, one per line (like re10k_test_1800.txt)

A camera file's first line is a (placeholder) video URL; each further line is one frame, 19 space-separated
values: ``timestamp_us fx/W fy/H cx/W cy/H 0 0`` then the 12 entries, row-major, of the OpenCV world-to-camera
``[R | t]`` (3x4). Pixel intrinsics are recovered as ``K = [[fx*W, 0, cx*W], [0, fy*H, cy*H], [0, 0, 1]]``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from backbone.fileio import write_bytes_atomic
from tools.synth.io_utils import IMAGE_FORMATS, write_image_atomic
from tools.synth.render import SynthView

logger = logging.getLogger(__name__)

FPS = 30.0
URL = "https://www.youtube.com/watch?v=synthetic"


def camera_line(timestamp_us: int, K: np.ndarray, T_world_cam: np.ndarray, size: tuple[int, int]) -> str:
    """One camera-file line for a frame of ``size (W, H)``; floats written with full precision (``repr``)."""
    W, H = size
    K = np.asarray(K, dtype=np.float64)
    T = np.asarray(T_world_cam, dtype=np.float64)
    R_w2c = T[:3, :3].T
    P = np.concatenate([R_w2c, (-R_w2c @ T[:3, 3])[:, None]], axis=1)
    vals = [K[0, 0] / W, K[1, 1] / H, K[0, 2] / W, K[1, 2] / H, 0.0, 0.0, *P.reshape(-1)]
    return " ".join([str(int(timestamp_us))] + [repr(float(v)) for v in vals])


def write_re10k(
    root: str | os.PathLike,
    clips: Mapping[str, Sequence[SynthView]],
    split: str = "test",
    image_format: str = "png",
    fps: float = FPS,
    progress=None,
) -> Path:
    """Write clips as RealEstate10K camera files plus frames (module docstring gives the layout).

    Frame ``i`` of a clip gets the timestamp ``round(i * 1e6 / fps)`` microseconds.

    Args:
        root: dataset root (created).
        clips: clip id -> views in temporal order. All views of a clip must share one image size.
        split: split folder name.
        image_format: ``"png"`` (as PoseDiffusion extracts) or ``"jpg"``.
        fps: frame rate used for the timestamps.
        progress: optional callable invoked once per written frame.

    Returns:
        ``root``.
    """
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    root = Path(root)
    for clip, views in clips.items():
        sizes = {v.size for v in views}
        if len(sizes) != 1:
            raise ValueError(f"clip {clip!r}: RealEstate10K clips have one image size, got {sorted(sizes)}")
        lines = [f"{URL}-{clip}"]
        for i, v in enumerate(views):
            ts = int(round(i * 1e6 / fps))
            write_image_atomic(root / "frames" / split / clip / f"{ts}.{image_format}", v.rgb)
            lines.append(camera_line(ts, v.K, v.T_world_cam, v.size))
            if progress is not None:
                progress()
        write_bytes_atomic(root / split / f"{clip}.txt", ("\n".join(lines) + "\n").encode("utf-8"))
    ids = sorted(clips)
    write_bytes_atomic(root / f"{split}_clips.txt", ("\n".join(ids) + "\n").encode("utf-8"))
    return root


def read_re10k_clip(root: str | os.PathLike, clip: str, split: str = "test") -> list[SynthView]:
    """Read back one clip written by ``write_re10k`` (cameras and frames; no depth).

    Returns:
        Views named by timestamp, with ``rgb``, ``K [3, 3]`` and ``T_world_cam [4, 4]`` float64.
    """
    from PIL import Image

    root = Path(root)
    rows = (root / split / f"{clip}.txt").read_text(encoding="utf-8").splitlines()[1:]
    views = []
    for row in rows:
        vals = row.split()
        if len(vals) != 19:
            raise ValueError(f"{clip}: camera line has {len(vals)} values, expected 19")
        ts = int(vals[0])
        fx, fy, cx, cy = (float(x) for x in vals[1:5])
        P = np.array([float(x) for x in vals[7:]]).reshape(3, 4)
        frame = next((root / "frames" / split / clip).glob(f"{ts}.*"))
        with Image.open(frame) as im:
            rgb = np.asarray(im.convert("RGB"))
        H, W = rgb.shape[:2]
        K = np.array([[fx * W, 0.0, cx * W], [0.0, fy * H, cy * H], [0.0, 0.0, 1.0]])
        T = np.eye(4)
        T[:3, :3] = P[:, :3].T
        T[:3, 3] = -P[:, :3].T @ P[:, 3]
        views.append(SynthView(str(ts), rgb, None, None, K, T))
    return views
