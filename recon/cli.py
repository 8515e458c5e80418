"""The ``recon`` command line: one entry point, one module per subcommand.

Each subcommand lives in ``recon/commands/<name>.py`` and exposes ``register(subparsers)``, which adds its parser
and sets ``func`` (a callable taking the parsed namespace and returning an exit code). ``register`` must stay
cheap: heavy imports (torch, trimesh, gradio) happen inside the handlers, so ``recon --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

# Order shown in ``recon --help``.
COMMANDS = ("run", "synth", "weights", "bench", "eval", "viz", "app", "train")


def build_parser() -> argparse.ArgumentParser:
    from recon import __version__

    parser = argparse.ArgumentParser(
        prog="recon", description="3D reconstruction from photos with a swappable vision backbone."
    )
    parser.add_argument("--version", action="version", version=f"recon3r {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"recon.commands.{name}")
        except ModuleNotFoundError as err:
            if err.name == f"recon.commands.{name}":
                continue  # subcommand not part of this build
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


class UserError(Exception):
    """An error caused by the user's input; the CLI prints its message (no traceback) and exits with 2."""


if __name__ == "__main__":
    sys.exit(main())
