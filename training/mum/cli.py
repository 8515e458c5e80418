"""Command line of the MuM pre-training recipe: ``python -m training.mum`` and ``recon train mum``.

A declaration (``RECIPE``); ``training.common.cli.Recipe`` implements ``register`` / ``main`` / ``run``.
"""

from __future__ import annotations

from training.common.cli import Recipe, RecipeCode

DESCRIPTION = (
    "MuM multi-view masked image modelling: a ViT encoder and a light multi-view decoder reconstruct the masked "
    "patches of image sequences. Launch with torchrun for several GPUs; a run resumes automatically from the "
    "latest checkpoint in its output directory."
)


def summary(result) -> str:
    """The final line of a run, from its ``training.mum.train.TrainResult``."""
    final = result.outputs["autoencoder"] if result.outputs else None
    return (
        f"{result.iterations} iterations, {result.frames_per_second:.1f} frames/s, "
        f"{result.skipped_images} unreadable images skipped; final model: {final}"
    )


def code() -> RecipeCode:
    """The recipe's config, resolver and train function; imported here, when the recipe runs,
    because they import torch (``recon --help`` must not)."""
    from training.mum.config import MuMConfig, resolve_config
    from training.mum.train import train

    return RecipeCode(MuMConfig, resolve_config, train)


RECIPE = Recipe(
    name="mum",
    prog="python -m training.mum",
    description=DESCRIPTION,
    help="MuM multi-view masked image modelling",
    default_preset="mum_vitl16",
    presets=("mum_vitl16", "mum_vitb16", "smoke", "tiny"),
    example_overrides="train.iterations=1000 --set data.frame_budget=64",
    code=code,
    summary=summary,
)
add_arguments, resolve, run, register, main = (
    RECIPE.add_arguments, RECIPE.resolve, RECIPE.run, RECIPE.register, RECIPE.main
)  # fmt: skip
