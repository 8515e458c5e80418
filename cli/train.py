"""``recon train <recipe>``: training recipes, one module ``training.<recipe>.cli`` each.

A recipe module exposes ``register(subparsers)`` adding its subcommand (and setting ``func``); registration
imports no torch.
"""

from __future__ import annotations

import importlib

# Order shown in ``recon train --help``; finetune and mum are added by their recipes.
RECIPES = ("training.distill.cli", "training.finetune.cli", "training.mum.cli", "training.feedforward.cli")


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train backbones and decoders (DUNE distillation, ...)")
    sub = parser.add_subparsers(dest="train_command", metavar="RECIPE", required=True)
    for module_name in RECIPES:
        importlib.import_module(module_name).register(sub)
