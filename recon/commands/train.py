"""``recon train <recipe>``: training recipes, one module ``training.<recipe>.cli`` each.

A recipe module exposes ``register(subparsers)`` adding its subcommand (and setting ``func``); recipes whose
module is absent from this installation are simply not listed. Registration imports no torch.
"""

from __future__ import annotations

import importlib

# Order shown in ``recon train --help``; finetune and mum are added by their recipes.
RECIPES = ("training.distill.cli", "training.finetune.cli", "training.mum.cli", "training.feedforward.cli")


def register(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train backbones and decoders (DUNE distillation, ...)")
    sub = parser.add_subparsers(dest="train_command", metavar="RECIPE", required=True)
    for module_name in RECIPES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name is not None and module_name.startswith(err.name):
                continue  # recipe not part of this build
            raise
        module.register(sub)
