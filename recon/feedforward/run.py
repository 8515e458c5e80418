"""``recon run --align feedforward``: photos -> one feed-forward pass -> ``Scene`` (instead of pairs + alignment).

Called by ``recon.pipeline.reconstruct`` when ``config.align == "feedforward"``; the model is a
``FeedForwardModel`` or a ``feedforward_final.pth`` file (``--checkpoint``). The network predicts every camera
itself; user priors are applied afterwards as ``recon.feedforward.priors`` says (known K / focal replace the
predicted ones, known poses move the prediction by one similarity; the rest is logged as ignored).

``--align feedforward+sparse`` uses ``load_start_model`` (before any work) and ``start_prediction`` (on the pair
model's views) from ``recon.pipeline.reconstruct``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np
import torch

from recon.feedforward.checkpoint import load_feedforward
from recon.feedforward.infer import predict, predict_resized
from recon.feedforward.model import FeedForwardModel
from recon.feedforward.priors import apply_priors
from recon.feedforward.scene import FeedForwardPrediction
from recon.pipeline import ReconstructConfig, ReconstructionError, RunReport, UserPriors, _stage, build_priors
from recon.types import Scene, View

logger = logging.getLogger(__name__)


def reconstruct_feedforward(
    images: str | os.PathLike | Sequence[str | os.PathLike] | Sequence[View],
    model: FeedForwardModel | str | os.PathLike | None,
    config: ReconstructConfig,
    device: torch.device,
    progress=None,
    priors=None,
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
        user_priors = build_priors(views, priors or UserPriors())
    with _stage(report, "inference", device, progress):
        try:
            prediction = predict(views, model)
        except ValueError as err:
            raise ReconstructionError(str(err)) from None
    with _stage(report, "alignment", device, progress):
        prediction, notes = apply_priors(prediction, user_priors)
        for note in notes:
            logger.warning(note)
        scene = align(views, prediction, method="feedforward")
        scene.info["ignored_priors"] = notes
    report.registered = len(scene)
    report.mean_conf = float(np.mean([c.mean() for c in scene.conf]))
    return scene, report


def load_start_model(model: FeedForwardModel | str | os.PathLike | None, device: torch.device) -> FeedForwardModel:
    """The feed-forward model of ``--align feedforward+sparse``, checked before any work.

    Raises:
        ReconstructionError: none given, or a file that is not a feed-forward model (no feed-forward heads).
    """
    if model is None:
        raise ReconstructionError("--align feedforward+sparse needs --feedforward FILE (a feedforward_final.pth)")
    if isinstance(model, FeedForwardModel):
        return model.eval()
    from backbone.checkpoint import CheckpointError

    try:
        return load_feedforward(model, device)
    except (CheckpointError, FileNotFoundError) as err:
        raise ReconstructionError(f"--feedforward: {err} (it has no feed-forward heads)") from None


def start_prediction(views: Sequence[View], model: FeedForwardModel) -> FeedForwardPrediction:
    """The feed-forward cameras and depth of the pair model's ``views`` (resized for the network as needed).

    Raises:
        ReconstructionError: views of several sizes, or more views than the model accepts.
    """
    try:
        return predict_resized(views, model)
    except ValueError as err:
        raise ReconstructionError(f"--align feedforward+sparse: {err}") from None
