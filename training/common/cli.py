"""The command line every training recipe shares: ``python -m training.<recipe>`` and ``recon train <recipe>``.

A recipe declares itself as a ``Recipe`` (names, texts, presets, where its config class, resolver and train function
live, how to word the final summary) and exposes the bound methods as its module's
``add_arguments`` / ``resolve`` / ``run`` / ``register`` / ``main``::

    RECIPE = Recipe(name="distill", ...)
    add_arguments, resolve, run, register, main = (
        RECIPE.add_arguments, RECIPE.resolve, RECIPE.run, RECIPE.register, RECIPE.main
    )

Options: ``--config FILE.json`` (merged over ``--preset``), ``--set a.b=value`` (repeatable), ``--output-dir``
(shortcut for ``--set train.output_dir=DIR``), ``--print-config``, ``--list-fields``. A bad config, a bad override
or a data error is a ``recon.errors.UserError`` (``ConfigError``, ``DataConfigError``, ``CheckpointError``,
``TrainingDiverged``, ...): ``error: <message>`` on stderr and exit code 2, no traceback.

A recipe's code (config class, resolver, train function) imports torch, so the recipe hands it over
through ``code()``, a function that imports it when the recipe runs: ``register`` (what ``recon train`` calls to
build its parser) then imports no torch.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RecipeCode:
    """What a recipe runs; its modules import torch, so ``Recipe.code`` builds this only when the recipe runs."""

    config_class: type
    """The root config dataclass (for ``--list-fields``)."""
    resolve_config: Callable[[str, Any], Any]
    """``resolve_config(preset, data) -> config`` (preset + JSON data, validated)."""
    train: Callable[[Any], Any]
    """``train(cfg) -> result``; what the user can fix raises a ``recon.errors.UserError``."""


@dataclass(frozen=True)
class Recipe:
    """A training recipe's command line, declared as data."""

    name: str
    """Subcommand of ``recon train`` (``distill``)."""
    prog: str
    """Program name of the module entry point (``python -m training.distill``)."""
    description: str
    """Paragraph shown by ``--help``."""
    help: str
    """One line shown in ``recon train --help``."""
    default_preset: str
    """``--preset`` when none is given."""
    presets: tuple[str, ...]
    """Preset names in the order ``--help`` lists them (the keys of the recipe's ``PRESETS``)."""
    example_overrides: str
    """What follows ``e.g. --set`` in the help of ``--set`` (``train.lr=1e-4 --set student.arch=vit_small``)."""
    code: Callable[[], RecipeCode]
    """Imports and returns the recipe's code (called when the recipe runs, never when its parser is built)."""
    summary: Callable[[Any], str]
    """The line(s) printed by rank 0 after training, from ``train``'s result."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the recipe's options to ``parser``."""
        parser.add_argument("--config", help="JSON config file (keys it omits keep the preset's values)")
        others = [p for p in self.presets if p != self.default_preset]
        parser.add_argument(
            "--preset",
            default=self.default_preset,
            help="base config: " + ", ".join([f"{self.default_preset} (default)", *others]),
        )
        parser.add_argument(
            "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
            help=f"override one field, e.g. --set {self.example_overrides} (repeatable)",
        )  # fmt: skip
        parser.add_argument("--output-dir", help="shortcut for --set train.output_dir=DIR")
        parser.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
        parser.add_argument("--list-fields", action="store_true", help="list every config field with its doc and exit")

    def resolve(self, args: argparse.Namespace):
        """The config selected by parsed arguments: preset, then the ``--config`` file, then the overrides.

        Raises:
            ConfigError: unreadable or invalid config file, unknown preset, bad override.
        """
        from training.common.config import ConfigError, apply_overrides

        data = None
        if args.config:
            try:
                with open(args.config) as f:
                    data = json.load(f)
            except FileNotFoundError:
                raise ConfigError(f"config file not found: {args.config}") from None
            except json.JSONDecodeError as err:
                raise ConfigError(f"{args.config}: invalid JSON at line {err.lineno}: {err.msg}") from None
        try:
            cfg = self.code().resolve_config(args.preset, data)
        except ConfigError:
            raise
        except ValueError as err:  # a config class's own check (``__post_init__``)
            raise ConfigError(str(err)) from None
        overrides = list(args.overrides) + ([f"train.output_dir={args.output_dir}"] if args.output_dir else [])
        return apply_overrides(cfg, overrides) if overrides else cfg

    def run(self, args: argparse.Namespace) -> int:
        """Resolve the config and train (or list the fields, or print the config). Returns an exit code.

        Raises:
            UserError: (``recon.errors``) a config or data error, worded for the user.
        """
        from training.common.config import describe, to_dict

        if args.list_fields:
            for name, default, doc in describe(self.code().config_class):
                print(f"{name} = {default}\n    {doc}")
            return 0
        cfg = self.resolve(args)
        if args.print_config:
            print(json.dumps(to_dict(cfg), indent=2))
            return 0
        from training.common import distributed
        from training.common.logging import setup_logging

        setup_logging(int(os.environ.get("RANK", "0")))
        finished = False
        try:
            result = self.code().train(cfg)
            rank = distributed.get_rank()  # before cleanup: without a process group every process is rank 0
            finished = True
        finally:
            distributed.cleanup(wait=finished)
        if rank == 0:
            print(self.summary(result))
        return 0

    def register(self, subparsers) -> None:
        """Add the recipe to ``recon train``'s subcommands (cheap: no torch import)."""
        parser = subparsers.add_parser(self.name, help=self.help, description=self.description)
        self.add_arguments(parser)
        parser.set_defaults(func=self.run)

    def main(self, argv: list[str] | None = None) -> int:
        """The module entry point (``python -m training.<recipe>``); returns the exit code (2: user error)."""
        parser = argparse.ArgumentParser(prog=self.prog, description=self.description)
        self.add_arguments(parser)
        args = parser.parse_args(argv)
        from recon.errors import UserError  # imports torch (through backbone): only once the recipe runs

        try:
            return self.run(args)
        except UserError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
