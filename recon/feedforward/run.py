"""``recon run --align feedforward``: photos -> one feed-forward pass -> ``Scene`` (instead of pairs + alignment).

Called by ``recon.pipeline.reconstruct`` when ``config.align == "feedforward"``; the model is a
``FeedForwardModel`` or a ``feedforward_final.pth`` file (``--checkpoint``). User priors are not used: the network
predicts every camera itself.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import torch

from recon.feedforward.checkpoint import load_feedforward
from recon.feedforward.infer import predict
from recon.feedforward.model import FeedForwardModel
from recon.pipeline import ReconstructConfig, ReconstructionError, RunReport, _stage
from recon.types import Scene, View

logger = logging.getLogger(__name__)


def reconstruct_feedforward(
    images: str | os.PathLike | Sequence[str | os.PathLike] | Sequence[View],
    model: FeedForwardModel | str | os.PathLike | None,
    config: ReconstructConfig,
    device: torch.device,
    progress=None,
) -> tuple[Scene, RunReport]:
    """``reconstruct`` with one feed-forward pass; see the module doc.

    Raises:
        ReconstructionError: no feed-forward model given, fewer than two usable images, views of several sizes.
    """
    from recon.align import align
    from recon.images import load_images

    report = RunReport(graph="feedforward")
    with _stage(report, "load", device, progress):
        if model is None:
            raise ReconstructionError("--align feedforward needs --checkpoint FILE (a feedforward_final.pth)")
        if not isinstance(model, FeedForwardModel):
            model = load_feedforward(model, device)
        model.eval()
        if images and isinstance(images, Sequence) and not isinstance(images, str) and isinstance(images[0], View):
            views, skipped = list(images), []
        else:
            size = config.image_size or model.encoder.spec.image_size
            views, skipped = load_images(images, size=size, patch_size=model.patch_size, square_ok=True)
        report.skipped = [(str(s[0]), str(s[1])) for s in skipped]
        if len(views) < 2:
            raise ReconstructionError(f"need at least 2 usable images, got {len(views)}")
        report.n_images = report.n_encoder_images = len(views)
    with _stage(report, "inference", device, progress):
        try:
            prediction = predict(views, model)
        except ValueError as err:
            raise ReconstructionError(str(err)) from None
    with _stage(report, "alignment", device, progress):
        scene = align(views, prediction, method="feedforward")
    report.registered = len(scene)
    report.mean_conf = float(np.mean([c.mean() for c in scene.conf]))
    return scene, report
