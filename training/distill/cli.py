"""Command line of the DUNE distillation recipe: ``python -m training.distill`` and ``recon train distill``.

``register(subparsers)`` is what ``recon train`` calls (cheap: no torch import); ``main(argv)`` is the module
entry point. Both parse the same options and call ``run(args)``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

logger = logging.getLogger(__name__)

DESCRIPTION = (
    "DUNE multi-teacher distillation: a ViT student learns DINOv2, MASt3R and Multi-HMR features. "
    "Launch with torchrun for several GPUs; a run resumes automatically from the latest checkpoint in its "
    "output directory."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="JSON config file (keys it omits keep the preset's values)")
    parser.add_argument(
        "--preset",
        default="dune_vitb14_336",
        help="base config: dune_vitb14_336 (default), dune_vits14_336, dune_vitb14_448, dune_vits14_448, smoke",
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one field, e.g. --set train.lr=1e-4 --set student.arch=vit_small (repeatable)",
    )  # fmt: skip
    parser.add_argument("--output-dir", help="shortcut for --set train.output_dir=DIR")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    parser.add_argument("--list-fields", action="store_true", help="list every config field with its doc and exit")


def resolve(args):
    """The ``DistillConfig`` selected by parsed arguments."""
    import json

    from training.common.config import ConfigError, apply_overrides
    from training.distill.config import resolve_config

    data = None
    if args.config:
        try:
            with open(args.config) as f:
                data = json.load(f)
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {args.config}") from None
        except json.JSONDecodeError as err:
            raise ConfigError(f"{args.config}: invalid JSON at line {err.lineno}: {err.msg}") from None
    cfg = resolve_config(args.preset, data)
    overrides = list(args.overrides) + ([f"train.output_dir={args.output_dir}"] if args.output_dir else [])
    return apply_overrides(cfg, overrides) if overrides else cfg


def run(args) -> int:
    """Resolve the config and train (or print it). Returns an exit code."""
    import json

    from training.common.config import ConfigError, describe, to_dict
    from training.distill.config import DistillConfig

    if args.list_fields:
        for name, default, doc in describe(DistillConfig):
            print(f"{name} = {default}\n    {doc}")
        return 0
    try:
        cfg = resolve(args)
    except (ConfigError, ValueError) as err:
        raise _user_error(str(err)) from None
    if args.print_config:
        print(json.dumps(to_dict(cfg), indent=2))
        return 0
    from training.common import distributed
    from training.common.logging import setup_logging
    from training.distill.datasets import DataConfigError
    from training.distill.train import train

    setup_logging(int(os.environ.get("RANK", "0")))
    try:
        result = train(cfg)
    except DataConfigError as err:
        raise _user_error(str(err)) from None
    finally:
        distributed.cleanup()
    if distributed.get_rank() == 0:
        print(
            f"{result.iterations} iterations, {result.images_per_second:.1f} images/s, "
            f"{result.skipped_images} unreadable images skipped; final model: {result.final_checkpoint}"
        )
    return 0


def _user_error(message: str) -> Exception:
    try:
        from recon.cli import UserError
    except ImportError:  # the recipe can run without the recon CLI
        return SystemExit(f"error: {message}")
    return UserError(message)


def register(subparsers) -> None:
    """Add ``distill`` to ``recon train``'s subcommands."""
    parser = subparsers.add_parser("distill", help="DUNE multi-teacher distillation", description=DESCRIPTION)
    add_arguments(parser)
    parser.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.distill", description=DESCRIPTION)
    add_arguments(parser)
    args = parser.parse_args(argv)
    from recon.cli import UserError

    try:
        return run(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
