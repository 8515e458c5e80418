"""``recon train <recipe>``: training recipes, one module ``training.<recipe>.cli`` each.

A recipe module exposes ``register(subparsers)`` adding its subcommand (and setting ``func``); registration
imports no torch.
"""

from __future__ import annotations

from training.distill import cli as distill
from training.feedforward import cli as feedforward
from training.finetune import cli as finetune
from training.mum import cli as mum

# Order shown in ``recon train --help``.
RECIPES = (distill, finetune, mum, feedforward)


def register(subparsers) -> None:
    """Add ``recon train`` and one subcommand per recipe."""
    parser = subparsers.add_parser("train", help="train backbones and decoders (DUNE distillation, ...)")
    sub = parser.add_subparsers(dest="train_command", metavar="RECIPE", required=True)
    for recipe in RECIPES:
        recipe.register(sub)
