"""Command line of the decoder-finetuning recipe: ``python -m training.finetune`` and ``recon train finetune``.

A declaration (``RECIPE``); ``training.common.cli.Recipe`` implements ``register`` / ``main`` / ``run``.
"""

from __future__ import annotations

from training.common.cli import Recipe, RecipeCode

DESCRIPTION = (
    "MASt3R-decoder finetuning on a frozen backbone (DUNE, CroCo, MuM, DINOv2): confidence-weighted 3D "
    "regression + InfoNCE matching on image pairs. Launch with torchrun for several GPUs; a run resumes "
    "automatically from the latest checkpoint in its output directory."
)


def summary(result) -> str:
    """The final line(s) of a run, from its ``training.finetune.train.TrainResult``."""
    extra = f" (backbone: {result.backbone_path})" if result.backbone_path else ""
    lines = [
        f"{result.iterations} steps, {result.pairs_per_second:.2f} pairs/s; final model "
        f"({result.layout} layout): {result.final_model}{extra}"
    ]
    if result.validation:
        lines.append("validation: " + ", ".join(f"{k} {v:.4g}" for k, v in result.validation.items()))
    return "\n".join(lines)


def code() -> RecipeCode:
    """The recipe's config, resolver and train function; imported here, when the recipe runs,
    because they import torch (``recon --help`` must not)."""
    from training.finetune.config import FinetuneConfig, resolve_config
    from training.finetune.train import train

    return RecipeCode(FinetuneConfig, resolve_config, train)


RECIPE = Recipe(
    name="finetune",
    prog="python -m training.finetune",
    description=DESCRIPTION,
    help="MASt3R-decoder finetuning on a frozen backbone",
    default_preset="dune_vitb14_448",
    presets=(
        "dune_vitb14_448",
        "dune_vits14_448",
        "dune_vitb14_336",
        "croco_vitl16",
        "mum_vitl16",
        "dinov2_vitb14",
        "smoke",
        "smoke_release",
        "tiny",
    ),
    example_overrides="train.lr=1e-4 --set model.init_from=PATH",
    code=code,
    summary=summary,
)
add_arguments, resolve, run, register, main = (
    RECIPE.add_arguments, RECIPE.resolve, RECIPE.run, RECIPE.register, RECIPE.main
)  # fmt: skip
