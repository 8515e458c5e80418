"""Feed-forward model files: plain data, read with ``weights_only=True``.

A model is two files side by side: ``<name>.pth`` = ``{"arch": "recon.feedforward", "format": FORMAT, "config":
FeedForwardConfig fields, "encoder": file name of the frozen encoder, "model": aggregator + heads state}`` and the
encoder in recon's backbone format (``backbone.save``), so that the frozen weights are stored once and every
backbone family round-trips.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import torch

import backbone as bb
from backbone.checkpoint import CheckpointError, load_strict, safe_load
from backbone.fileio import atomic_file
from recon.feedforward.model import FeedForwardConfig, FeedForwardModel

logger = logging.getLogger(__name__)

ARCH = "recon.feedforward"
FORMAT = "recon.feedforward/1"


def save_feedforward(model: FeedForwardModel, path: str | os.PathLike, encoder_file: str | None = None) -> Path:
    """Write the model to ``path``; the encoder goes to ``<stem>_encoder.pth`` beside it.

    Args:
        model: the model.
        path: destination ``.pth``.
        encoder_file: name of an encoder file already written beside ``path`` (then it is not written again).

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if encoder_file is None:
        encoder_file = f"{path.stem}_encoder.pth"
        bb.save(model.encoder, path.parent / encoder_file)
    ckpt = {
        "arch": ARCH,
        "format": FORMAT,
        "config": dataclasses.asdict(model.config),
        "encoder": encoder_file,
        "model": {k: v.detach().cpu() for k, v in model.trainable_state_dict().items()},
    }
    with atomic_file(path) as tmp:
        torch.save(ckpt, tmp)
    return path


def is_feedforward_checkpoint(ckpt) -> bool:
    return isinstance(ckpt, dict) and ckpt.get("format") == FORMAT


def load_feedforward(path: str | os.PathLike, device: str | torch.device = "cpu") -> FeedForwardModel:
    """Read a file written by ``save_feedforward`` (strict: missing / unexpected / mis-shaped keys are named).

    Raises:
        CheckpointError: not a feed-forward file, an encoder name that leaves its folder, or key mismatches.
    """
    path = Path(path)
    ckpt = safe_load(path)
    if not is_feedforward_checkpoint(ckpt):
        raise CheckpointError(f"{path} is not a feed-forward model file (format {FORMAT!r})")
    encoder_name = ckpt.get("encoder")
    if not isinstance(encoder_name, str) or Path(encoder_name).name != encoder_name:
        raise CheckpointError(f"{path}: 'encoder' must be a file name beside it, got {encoder_name!r}")
    try:
        config = FeedForwardConfig(**ckpt["config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: invalid feed-forward config ({err})") from None
    encoder = bb.load(path.parent / encoder_name)
    model = FeedForwardModel(encoder, config)
    state = {**{f"encoder.{k}": v for k, v in encoder.state_dict().items()}, **ckpt["model"]}
    load_strict(model, state, str(path))
    return model.to(device).eval()
