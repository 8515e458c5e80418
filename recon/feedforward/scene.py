"""The feed-forward prediction as plain arrays, and the ``Scene`` built from it (pure numpy: no network here).

Scale is the network's normalised scale (the valid points of the sequence at mean distance ~1 from the first
camera), as for any uncalibrated reconstruction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from recon.types import Scene, View, scene_view_fields


@dataclass
class FeedForwardPrediction:
    """The feed-forward network's answer for N views of one size ``H x W``.

    Attributes:
        T_world_cam: ``[N, 4, 4]`` float64 camera-to-world (world = first camera), OpenCV cameras.
        K: ``[N, 3, 3]`` float64 intrinsics in network pixels (principal point at the image centre).
        depth: ``[N, H, W]`` float32 z-depth.
        conf: ``[N, H, W]`` float32 depth confidence (> 1).
    """

    T_world_cam: np.ndarray
    K: np.ndarray
    depth: np.ndarray
    conf: np.ndarray


def to_scene(views: Sequence[View], prediction: FeedForwardPrediction) -> Scene:
    """The ``Scene`` of ``views`` with the predicted cameras, depth and confidence (pure numpy).

    Raises:
        ValueError: the prediction does not match the views in number or size.
    """
    n = len(views)
    if prediction.T_world_cam.shape != (n, 4, 4) or prediction.depth.shape[0] != n:
        raise ValueError(f"prediction holds {prediction.depth.shape[0]} views, {n} given")
    for v, d in zip(views, prediction.depth, strict=True):
        if d.shape != v.true_shape:
            raise ValueError(f"view {v.name}: depth {d.shape} does not match the image {v.true_shape}")
    return Scene(
        T_world_cam=prediction.T_world_cam.astype(np.float64),
        K=prediction.K.astype(np.float64),
        depth=[d.astype(np.float32) for d in prediction.depth],
        conf=[c.astype(np.float32) for c in prediction.conf],
        info={"align": "feedforward"},
        **scene_view_fields(views),
    )
