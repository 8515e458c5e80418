"""Records shared by the dataset readers, the sampler, the predictors and the runner."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from recon.errors import UserError

logger = logging.getLogger(__name__)


class DatasetError(UserError, ValueError):
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
