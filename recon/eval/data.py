"""Records shared by the dataset readers, the sampler, the predictors and the runner."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


class DatasetError(ValueError):
    """A dataset on disk is missing files or holds records that cannot be read; the message names the path."""


@dataclass(frozen=True)
class EvalFrame:
    """One ground-truth frame of an evaluation sequence.

    Attributes:
        frame_id: the frame's id as in the annotations (CO3D ``frame_number``, RealEstate10K timestamp in us).
        rel_path: image path as written in the annotations (CO3D: relative to the root); PoseDiffusion sorts the
            sampled frames by this string.
        image_path: absolute image path.
        T_world_cam: ``[4, 4]`` float64 camera-to-world pose (OpenCV camera).
        K: ``[3, 3]`` float64 intrinsics in pixels of the image on disk.
        image_size: ``(H, W)`` of the image on disk.
    """

    frame_id: int
    rel_path: str
    image_path: str
    T_world_cam: np.ndarray
    K: np.ndarray
    image_size: tuple[int, int]


@dataclass(frozen=True)
class EvalSequence:
    """A sequence (CO3D) or clip (RealEstate10K) with its frames in the dataset's order."""

    category: str
    name: str
    frames: list[EvalFrame]

    @property
    def key(self) -> tuple[str, str]:
        return self.category, self.name


def write_json_atomic(path: str | os.PathLike, obj, indent: int | None = 1) -> Path:
    """Write JSON through a temporary file in the same folder and ``os.replace`` it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(obj, indent=indent) + "\n")
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write text atomically (temporary file + ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
