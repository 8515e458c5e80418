"""User priors on the feed-forward path (``--align feedforward``): what is used, and what is not.

The network predicts every camera itself; afterwards:

- known intrinsics (``K``) replace the predicted ones, and a known fixed focal replaces ``fx`` and ``fy``;
- with shared intrinsics, every view takes the median predicted focal (unless a known value is given);
- known poses move the whole prediction by one similarity (``recon.align.init.gauge_from_known_poses``: a rigid
  motion with one known pose, and the scale too with two or more), then the known poses are written exactly;
  depth scales with it. The other cameras are NOT re-estimated from them;
- start focals (EXIF) are ignored: the predicted focal is kept.

``apply_priors`` returns the prediction and one line per prior it ignored, for the run's output.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from recon.feedforward.scene import FeedForwardPrediction
from recon.types import Priors


def apply_priors(prediction: FeedForwardPrediction, priors: Priors | None) -> tuple[FeedForwardPrediction, list[str]]:
    """``prediction`` with the usable ``priors`` applied (see the module doc) and the notes on ignored ones."""
    if priors is None:
        return prediction, []
    from recon.align.init import Init, gauge_from_known_poses

    n = len(prediction.T_world_cam)
    K, depth, notes = prediction.K.copy(), prediction.depth, []
    if priors.shared_intrinsics:
        f = float(np.median(0.5 * (K[:, 0, 0] + K[:, 1, 1])))
        K[:, 0, 0] = K[:, 1, 1] = f
    for k in range(n):
        if priors.K is not None and priors.K[k] is not None:
            K[k] = np.asarray(priors.K[k], dtype=np.float64)
        elif priors.focal is not None and priors.focal[k] is not None:
            K[k, 0, 0] = K[k, 1, 1] = float(priors.focal[k])
    if priors.focal_init is not None and any(f is not None for f in priors.focal_init):
        notes.append("feed-forward: start focals (EXIF) are ignored; the predicted focal is kept")
    T = prediction.T_world_cam.copy()
    if priors.T_world_cam:
        init = Init(T, np.ones(n), np.ones(n, bool), 0, [])
        gauge_from_known_poses(init, {k: np.asarray(v, np.float64) for k, v in priors.T_world_cam.items()})
        depth = (depth * init.scale[:, None, None]).astype(np.float32)
        if len(priors.T_world_cam) < n:
            notes.append(
                "feed-forward: known poses place the prediction (one similarity) but do not correct the other "
                "cameras; use --align feedforward+sparse to optimise with them"
            )
    return dataclasses.replace(prediction, T_world_cam=T, K=K, depth=depth), notes
