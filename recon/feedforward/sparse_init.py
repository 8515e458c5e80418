"""``--align feedforward+sparse``: the sparse aligner's start taken from a feed-forward prediction (pure numpy).

``recon.align.sparse.sparse_align(..., start=prediction)`` calls ``start_from_prediction`` after its own
kinematic-tree initialisation and before the known poses set the gauge. For every view with a canonical point map
(``recon.align.problem``):

- pose: the predicted camera-to-world ``T_world_cam`` (the feed-forward world: first camera, network scale);
- scale: the factor that brings the canonical depth to the predicted depth, the median of
  ``depth_pred / canon_z`` over pixels where both are positive and both confidences exceed 1 (all positive pixels
  when fewer than 16 pass);
- focal: NOT taken from the prediction: the pair model's own estimate (Weiszfeld on the canonical point maps,
  or the priors) stays the start. Measured on the test's oracle orbit (6 views): a start 3 deg / 5 % off with exact
  focals ends at 0.17 deg mean pair rotation error (default start: 0.50 deg); the same start with 5 % focal
  errors taken as the start focal ends at 1.08 deg: the coarse stage cannot fix a wrong focal and the fine stage
  does not recover within its iterations. The coarse 3D stage needs the focal that matches the canonical depth.

Every such view is registered: the prediction places views the match graph leaves disconnected too (they keep
their predicted pose when no match or pair ties them to the others). The kinematic tree stays in ``info`` for
reference only.
"""

from __future__ import annotations

import logging

import numpy as np

from recon.feedforward.scene import FeedForwardPrediction

logger = logging.getLogger(__name__)

MIN_PIXELS = 16


def check_start(prediction: FeedForwardPrediction, shapes: list[tuple[int, int]]) -> None:
    """Raise ``ValueError`` (one line) when ``prediction`` does not cover ``shapes`` (one ``(H, W)`` per view)."""
    n = len(shapes)
    if prediction.T_world_cam.shape != (n, 4, 4) or len(prediction.depth) != n:
        raise ValueError(f"the start cameras hold {len(prediction.T_world_cam)} views, the alignment {n}")
    for k, (d, hw) in enumerate(zip(prediction.depth, shapes, strict=True)):
        if tuple(d.shape) != tuple(hw):
            raise ValueError(f"start depth of view {k} is {tuple(d.shape)}, the view is {tuple(hw)}")
    if not np.isfinite(prediction.T_world_cam).all():
        raise ValueError("the start cameras hold non-finite poses")


def depth_scale(canon_z: np.ndarray, canon_conf: np.ndarray, depth: np.ndarray, conf: np.ndarray) -> float:
    """Median of ``depth / canon_z`` over confident positive pixels (``nan`` when no pixel is positive)."""
    pos = (canon_z > 0) & (depth > 0) & np.isfinite(depth)
    sure = pos & (canon_conf > 1) & (conf > 1)
    use = sure if sure.sum() >= MIN_PIXELS else pos
    return float(np.median(depth[use] / canon_z[use])) if use.any() else float("nan")


def start_from_prediction(prob, init, prediction: FeedForwardPrediction) -> int:
    """Overwrite ``init`` (poses, scales, registration) from ``prediction``, in place.

    Args:
        prob: the sparse problem (``recon.align.problem.Problem``).
        init: its ``recon.align.init.Init``.
        prediction: cameras (and depth) of the same views, in network pixels.

    Returns:
        The number of views placed from the prediction.
    """
    check_start(prediction, prob.shapes)
    placed = []
    for k in range(prob.n):
        if prob.canon[k] is None:
            continue
        s = depth_scale(prob.canon[k][..., 2], prob.canon_conf[k], prediction.depth[k], prediction.conf[k])
        if not (np.isfinite(s) and s > 0):
            logger.warning("feed-forward start: no usable depth for view %s; its own start is kept", prob.names[k])
            continue
        init.T_world_cam[k] = prediction.T_world_cam[k]
        init.scale[k] = s
        init.registered[k] = True
        placed.append(k)
    if not placed:
        return 0
    if init.root < 0 or init.root not in placed:
        init.root = placed[0]
    init.registered[[k for k in range(prob.n) if k not in placed]] = False
    return len(placed)
