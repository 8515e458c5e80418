"""Command line of the DUNE distillation recipe: ``python -m training.distill`` and ``recon train distill``.

A declaration (``RECIPE``); ``training.common.cli.Recipe`` implements ``register`` / ``main`` / ``run``.
"""

from __future__ import annotations

from training.common.cli import Recipe, RecipeCode

DESCRIPTION = (
    "DUNE multi-teacher distillation: a ViT student learns DINOv2, MASt3R and Multi-HMR features. "
    "Launch with torchrun for several GPUs; a run resumes automatically from the latest checkpoint in its "
    "output directory."
)


def summary(result) -> str:
    """The final line of a run, from its ``training.distill.train.TrainResult``."""
    return (
        f"{result.iterations} iterations, {result.images_per_second:.1f} images/s, "
        f"{result.skipped_images} unreadable images skipped; final model: {result.final_checkpoint}"
    )


def code() -> RecipeCode:
    """The recipe's config, resolver and train function; imported here, when the recipe runs,
    because they import torch (``recon --help`` must not)."""
    from training.distill.config import DistillConfig, resolve_config
    from training.distill.train import train

    return RecipeCode(DistillConfig, resolve_config, train)


RECIPE = Recipe(
    name="distill",
    prog="python -m training.distill",
    description=DESCRIPTION,
    help="DUNE multi-teacher distillation",
    default_preset="dune_vitb14_336",
    presets=("dune_vitb14_336", "dune_vits14_336", "dune_vitb14_448", "dune_vits14_448", "smoke", "tiny"),
    example_overrides="train.lr=1e-4 --set student.arch=vit_small",
    code=code,
    summary=summary,
)
add_arguments, resolve, run, register, main = (
    RECIPE.add_arguments, RECIPE.resolve, RECIPE.run, RECIPE.register, RECIPE.main
)  # fmt: skip
