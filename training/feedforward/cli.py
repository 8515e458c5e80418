"""Command line of the feed-forward recipe: ``python -m training.feedforward`` and ``recon train feedforward``.

A declaration (``RECIPE``); ``training.common.cli.Recipe`` implements ``register`` / ``main`` / ``run``.
"""

from __future__ import annotations

from training.common.cli import Recipe, RecipeCode

DESCRIPTION = (
    "VGGT-style feed-forward reconstruction heads (cameras, depth and point maps with confidences, all views at "
    "once) trained on a frozen encoder. Launch with torchrun for several GPUs; a run resumes automatically from "
    "the latest checkpoint in its output directory."
)


def summary(result) -> str:
    """The final line of a run, from its ``training.feedforward.train.TrainResult``."""
    return f"{result.iterations} iterations, {result.frames_per_second:.1f} frames/s; final model: {result.final}"


def code() -> RecipeCode:
    """The recipe's config, resolver and train function; imported here, when the recipe runs,
    because they import torch (``recon --help`` must not)."""
    from training.feedforward.config import FeedForwardTrainConfig, resolve_config
    from training.feedforward.train import train

    return RecipeCode(FeedForwardTrainConfig, resolve_config, train)


RECIPE = Recipe(
    name="feedforward",
    prog="python -m training.feedforward",
    description=DESCRIPTION,
    help="feed-forward multi-view heads (VGGT-style) on a frozen encoder",
    default_preset="paper",
    presets=("paper", "distill", "small"),
    example_overrides="train.iterations=1000 --set model.encoder=mum_vitl16",
    code=code,
    summary=summary,
)
add_arguments, resolve, run, register, main = (
    RECIPE.add_arguments, RECIPE.resolve, RECIPE.run, RECIPE.register, RECIPE.main
)  # fmt: skip
