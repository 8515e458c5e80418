"""Command line of the feed-forward recipe: ``python -m training.feedforward`` and ``recon train feedforward``.

A declaration (``RECIPE``); ``training.common.cli.Recipe`` implements ``register`` / ``main`` / ``run``.
"""

from __future__ import annotations

import logging

from training.common.cli import Recipe

logger = logging.getLogger(__name__)

DESCRIPTION = (
    "VGGT-style feed-forward reconstruction heads (cameras, depth and point maps with confidences, all views at "
    "once) trained on a frozen encoder. Launch with torchrun for several GPUs; a run resumes automatically from "
    "the latest checkpoint in its output directory."
)


def summary(result) -> str:
    """The final line of a run, from its ``training.feedforward.train.TrainResult``."""
    return f"{result.iterations} iterations, {result.frames_per_second:.1f} frames/s; final model: {result.final}"


RECIPE = Recipe(
    name="feedforward",
    prog="python -m training.feedforward",
    description=DESCRIPTION,
    help="feed-forward multi-view heads (VGGT-style) on a frozen encoder",
    default_preset="paper",
    presets=("paper", "distill", "small"),
    example_overrides="train.iterations=1000 --set model.encoder=mum_vitl16",
    config_class="training.feedforward.config:FeedForwardTrainConfig",
    resolver="training.feedforward.config:resolve_config",
    train="training.feedforward.train:train",
    user_errors=("training.feedforward.data:DataConfigError", "backbone.checkpoint:CheckpointError"),
    summary=summary,
)
add_arguments, resolve, run, register, main = (
    RECIPE.add_arguments, RECIPE.resolve, RECIPE.run, RECIPE.register, RECIPE.main
)  # fmt: skip
