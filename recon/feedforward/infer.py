"""``predict``: one forward pass of the feed-forward network over all views -> ``FeedForwardPrediction``.

All views form one sequence and the first view is the world frame. ``recon.feedforward.scene.to_scene`` (pure
numpy, what ``recon.align.align(method="feedforward")`` calls) turns the prediction into a ``Scene``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from recon.feedforward.camera import decode_pose
from recon.feedforward.model import FeedForwardModel
from recon.feedforward.scene import FeedForwardPrediction
from recon.types import View

logger = logging.getLogger(__name__)


def check_same_size(views: Sequence[View]) -> tuple[int, int]:
    """The common ``(H, W)`` of ``views``.

    Raises:
        ValueError: no views, or views of several sizes (one sentence listing them).
    """
    if not views:
        raise ValueError("feed-forward reconstruction needs at least one view")
    sizes = sorted({v.true_shape for v in views})
    if len(sizes) > 1:
        listed = ", ".join(f"{h}x{w}" for h, w in sizes)
        raise ValueError(
            f"feed-forward reconstruction needs all views at one size (one aspect ratio); got {listed}. "
            "Resize the photos to one orientation or use --align sparse"
        )
    return sizes[0]


@torch.no_grad()
def predict(views: Sequence[View], model: FeedForwardModel) -> FeedForwardPrediction:
    """Run ``model`` once over all ``views`` (``[3, H, W]`` images of one size).

    Raises:
        ValueError: mixed sizes, too many views, or a size that is not a multiple of the patch size.
    """
    H, W = check_same_size(views)
    device = next(p.device for p in model.parameters())
    images = torch.stack([v.image for v in views]).to(device)[None]  # 1 N 3 H W
    model.eval()
    out = model(images)
    T, K = decode_pose(out.pose_enc[-1][0].double(), (H, W))
    return FeedForwardPrediction(
        T_world_cam=T.cpu().numpy(),
        K=K.cpu().numpy(),
        depth=out.depth[0].cpu().numpy().astype(np.float32),
        conf=out.depth_conf[0].cpu().numpy().astype(np.float32),
    )


def predict_resized(views: Sequence[View], model: FeedForwardModel) -> FeedForwardPrediction:
    """``predict`` for views of any one size: resized to the nearest multiple of the patch size for the network,
    the intrinsics, depth and confidence brought back to the views' pixels (``--align feedforward+sparse`` runs the
    pair model's views through the feed-forward model this way).

    Raises:
        ValueError: mixed sizes or too many views.
    """
    H, W = check_same_size(views)
    p = model.patch_size
    Hn, Wn = max(p, round(H / p) * p), max(p, round(W / p) * p)
    if (Hn, Wn) == (H, W):
        return predict(views, model)
    small = [
        View(F.interpolate(v.image[None], size=(Hn, Wn), mode="bilinear", antialias=True)[0], v.idx, v.name)
        for v in views
    ]
    pred = predict(small, model)
    sx, sy = W / Wn, H / Hn
    K = pred.K.copy()  # pixel centres: x = (x_n + 0.5) * sx - 0.5
    K[:, 0, 0] *= sx
    K[:, 1, 1] *= sy
    K[:, 0, 2] = (K[:, 0, 2] + 0.5) * sx - 0.5
    K[:, 1, 2] = (K[:, 1, 2] + 0.5) * sy - 0.5

    def back(x: np.ndarray) -> np.ndarray:
        return F.interpolate(torch.from_numpy(x)[:, None], size=(H, W), mode="bilinear")[:, 0].numpy()

    return FeedForwardPrediction(pred.T_world_cam, K, back(pred.depth), back(pred.conf))
