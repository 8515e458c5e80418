"""Command line of the MuM pre-training recipe: ``python -m training.mum`` and ``recon train mum``.

``register(subparsers)`` is what ``recon train`` calls (cheap: no torch import); ``main(argv)`` is the module
entry point. Both parse the same options and call ``run(args)``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

logger = logging.getLogger(__name__)

DESCRIPTION = (
    "MuM multi-view masked image modelling: a ViT encoder and a light multi-view decoder reconstruct the masked "
    "patches of image sequences. Launch with torchrun for several GPUs; a run resumes automatically from the "
    "latest checkpoint in its output directory."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="JSON config file (keys it omits keep the preset's values)")
    parser.add_argument("--preset", default="mum_vitl16", help="base config: mum_vitl16 (default), mum_vitb16, smoke")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one field, e.g. --set train.iterations=1000 --set data.frame_budget=64 (repeatable)",
    )  # fmt: skip
    parser.add_argument("--output-dir", help="shortcut for --set train.output_dir=DIR")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    parser.add_argument("--list-fields", action="store_true", help="list every config field with its doc and exit")


def resolve(args):
    """The ``MuMConfig`` selected by parsed arguments."""
    from training.common.config import ConfigError, apply_overrides
    from training.mum.config import resolve_config

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
    from training.common.config import ConfigError, describe, to_dict
    from training.mum.config import MuMConfig

    if args.list_fields:
        for name, default, doc in describe(MuMConfig):
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
    from training.mum.sequences import DataConfigError
    from training.mum.train import train

    setup_logging(int(os.environ.get("RANK", "0")))
    try:
        result = train(cfg)
    except DataConfigError as err:
        raise _user_error(str(err)) from None
    finally:
        distributed.cleanup()
    if int(os.environ.get("RANK", "0")) == 0:
        final = result.outputs["autoencoder"] if result.outputs else None
        print(
            f"{result.iterations} iterations, {result.frames_per_second:.1f} frames/s, "
            f"{result.skipped_images} unreadable images skipped; final model: {final}"
        )
    return 0


def _user_error(message: str) -> Exception:
    try:
        from recon.cli import UserError
    except ImportError:  # the recipe can run without the recon CLI
        return SystemExit(f"error: {message}")
    return UserError(message)


def register(subparsers) -> None:
    """Add ``mum`` to ``recon train``'s subcommands."""
    parser = subparsers.add_parser("mum", help="MuM multi-view masked image modelling", description=DESCRIPTION)
    add_arguments(parser)
    parser.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.mum", description=DESCRIPTION)
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except Exception as err:
        if type(err).__name__ == "UserError":
            print(f"error: {err}", file=sys.stderr)
            return 2
        raise
