"""The ``recon`` command line: one entry point, one module per subcommand.

Each subcommand lives in ``cli/<name>.py`` and exposes ``register(subparsers)``, which adds its parser
and sets ``func`` (a callable taking the parsed namespace and returning an exit code). ``register`` must stay
cheap: heavy imports (torch, trimesh, gradio) happen inside the handlers, so ``recon --help`` and every
subcommand's ``--help`` import no torch (a test holds this).

Errors: anything deriving from ``recon.errors.UserError`` is printed as one line ``error: <message>`` on stderr
with exit code 2, never a traceback; any other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from cli import app, bench, run, synth, train, viz, weights
from cli import eval as eval_command
from recon import __version__

# Order shown in ``recon --help``.
COMMANDS = (run, synth, weights, bench, eval_command, viz, app, train)


class HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help only when ``X`` says something.

    ``argparse.ArgumentDefaultsHelpFormatter`` also prints ``(default: None)`` and ``(default: False)``, which
    tell the reader nothing; a help text that already mentions its default is left alone.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            not action.option_strings
            or action.nargs == 0  # a switch: its default is the switch being off
            or default is None
            or default is False
            or default == argparse.SUPPRESS
            or default == []
            or "default" in text
        ):
            return text
        return f"{text} (default: %(default)s)"


class ArgumentParser(argparse.ArgumentParser):
    """A parser whose usage errors are one line (``error: recon run: ...``) like every other user error.

    Subparsers inherit the class (``add_subparsers`` builds them with ``type(self)``).
    """

    def error(self, message: str):
        self.exit(2, f"error: {self.prog}: {message} (see `{self.prog} --help`)\n")


def _subparsers(parser: argparse.ArgumentParser):
    """Every parser below ``parser`` (depth first), with ``parser`` itself first."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in dict.fromkeys(action.choices.values()):  # aliases map to the same parser once
                yield from _subparsers(sub)


def build_parser() -> argparse.ArgumentParser:
    """The ``recon`` parser with every subcommand registered (imports no torch)."""
    parser = ArgumentParser(
        prog="recon",
        description="3D reconstruction from photos with a swappable vision backbone. Start with "
        "`recon run demo_data/orbit --out scene.glb` (README: recon-tiny, the small model shipped with recon, "
        "trained on synthetic scenes), then download a release (`recon weights list`) for real photos.",
    )
    parser.add_argument("--version", action="version", version=f"recon3r {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    for p in _subparsers(parser):  # one help style everywhere, whatever each module asked for
        p.formatter_class = HelpFormatter
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``recon`` command with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)  # --help and usage errors exit here, before anything heavy is imported
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from backbone.fileio import sigterm_as_exit
    from recon.errors import UserError  # imports torch (through backbone): only once a command runs

    # SIGTERM (a scheduler, `kill`) unwinds (exit code 143), so temporary files and folders are removed on the way
    try:
        with sigterm_as_exit():
            return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `recon weights list | head`: the reader left; say nothing more
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (interpreter shutdown flushes stdout once more)
        return 141
    except UserError as err:
        message = " ".join(str(err).split()) or type(err).__name__  # one line, whatever the message held
        print(f"error: {message}", file=sys.stderr)
        return 2
