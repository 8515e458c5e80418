"""Command line of the decoder-finetuning recipe: ``python -m training.finetune`` and ``recon train finetune``.

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
    "MASt3R-decoder finetuning on a frozen backbone (DUNE, CroCo, MuM, DINOv2): confidence-weighted 3D "
    "regression + InfoNCE matching on image pairs. Launch with torchrun for several GPUs; a run resumes "
    "automatically from the latest checkpoint in its output directory."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="JSON config file (keys it omits keep the preset's values)")
    parser.add_argument(
        "--preset",
        default="dune_vitb14_448",
        help="base config: dune_vitb14_448 (default), dune_vits14_448, dune_vitb14_336, croco_vitl16, mum_vitl16, "
        "dinov2_vitb14, smoke",
    )
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one field, e.g. --set train.lr=1e-4 --set model.init_from=PATH (repeatable)",
    )  # fmt: skip
    parser.add_argument("--output-dir", help="shortcut for --set train.output_dir=DIR")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    parser.add_argument("--list-fields", action="store_true", help="list every config field with its doc and exit")


def resolve(args):
    """The ``FinetuneConfig`` selected by parsed arguments."""
    import json

    from training.common.config import ConfigError, apply_overrides
    from training.finetune.config import resolve_config

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
    from training.finetune.config import FinetuneConfig

    if args.list_fields:
        for name, default, doc in describe(FinetuneConfig):
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
    from training.finetune.datasets import DataConfigError
    from training.finetune.train import train

    setup_logging(int(os.environ.get("RANK", "0")))
    from backbone.checkpoint import CheckpointError
    from training.finetune.export import ExportError

    try:
        result = train(cfg)
        rank = distributed.get_rank()
    except (DataConfigError, ExportError, CheckpointError) as err:
        raise _user_error(str(err)) from None
    finally:
        distributed.cleanup()
    if rank == 0:
        extra = f" (backbone: {result.backbone_path})" if result.backbone_path else ""
        print(
            f"{result.iterations} steps, {result.pairs_per_second:.2f} pairs/s; final model "
            f"({result.layout} layout): {result.final_model}{extra}"
        )
        if result.validation:
            print("validation: " + ", ".join(f"{k} {v:.4g}" for k, v in result.validation.items()))
    return 0


def _user_error(message: str) -> Exception:
    try:
        from recon.cli import UserError
    except ImportError:  # the recipe can run without the recon CLI
        return SystemExit(f"error: {message}")
    return UserError(message)


def register(subparsers) -> None:
    """Add ``finetune`` to ``recon train``'s subcommands."""
    parser = subparsers.add_parser(
        "finetune", help="MASt3R-decoder finetuning on a frozen backbone", description=DESCRIPTION
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.finetune", description=DESCRIPTION)
    add_arguments(parser)
    args = parser.parse_args(argv)
    from recon.cli import UserError

    try:
        return run(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
