"""Command line of the viewer, shared by ``recon app`` and ``python -m app``."""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path

from app.config import AppConfig
from recon.config import Flag, add_flags, from_flags

logger = logging.getLogger(__name__)

# The fields of ``AppConfig`` offered as flags (types, defaults and help come from the fields).
SERVER_FLAGS = (
    Flag("device", help="auto | cpu | cuda | cuda:K"),
    Flag("concurrency_limit", "--concurrency"),
    Flag("max_queue"),
    Flag("session_ttl_s", "--session-ttl", help="seconds without activity before a session is deleted"),
)
LIMIT_FLAGS = (
    Flag("limits.max_images"),
    Flag("limits.max_file_mb"),
    Flag("limits.max_upload_mb"),
    Flag("limits.max_zip_uncompressed_mb", "--max-zip-mb"),
    Flag("limits.max_video_mb"),
    Flag("limits.video_fps"),
    Flag("limits.max_pending_upload_mb", "--max-pending-mb"),
)
EXAMPLES_FLAG = Flag("examples_dir", "--examples", help="folder of example scenes (default: the repo's demo_data)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``recon app``."""
    m = p.add_mutually_exclusive_group()
    m.add_argument(
        "--model",
        help="weights name (see `recon weights list`). Default: the first model release in the weights cache, else "
        "a seeded random micro model (random weights: the geometry is meaningless; this checks the install)",
    )
    m.add_argument("--checkpoint", type=Path, help="a checkpoint file (any supported format)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860, help="port to listen on")
    p.add_argument("--share", action="store_true", help="also serve through a temporary public Gradio link")
    add_flags(p, AppConfig, SERVER_FLAGS)
    add_flags(p.add_argument_group("upload limits"), AppConfig, LIMIT_FLAGS)
    add_flags(p, AppConfig, [EXAMPLES_FLAG])


def run(args) -> int:
    """Build and serve the app until interrupted."""
    from recon.errors import UserError

    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UserError("the viewer needs Gradio: pip install gradio") from None
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise UserError(f"checkpoint not found: {args.checkpoint}")
    config = from_flags(AppConfig, args, (*SERVER_FLAGS, *LIMIT_FLAGS, EXAMPLES_FLAG))

    from app.models import choose_startup_model
    from app.ui import build_app, launch_app

    choice = choose_startup_model(args.model, args.checkpoint)
    logger.info("model: %s", choice.reason)
    demo = build_app(choice.model, config=config, reason=choice.reason)  # a model that cannot load: a UserError
    previous = _stop_on_signals()
    try:
        launch_app(demo, host=args.host, port=args.port, share=args.share)
    finally:
        # Every session's photos and results go with the server, whatever stopped it (Ctrl-C, SIGTERM, an error).
        demo.close()
        demo.recon_workspaces.close_all()
        demo.recon_uploads.clear()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0


def _stop_on_signals() -> dict:
    """Make SIGTERM (and SIGINT, SIGHUP) stop the server like Ctrl-C, so the cleanup in ``run`` happens; the default
    SIGTERM action kills the process on the spot, leaving every session's files on disk."""

    def stop(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        previous[sig] = signal.signal(sig, stop)
    return previous


def main(argv: list[str] | None = None) -> int:
    """``python -m app``."""
    import sys

    from recon.errors import UserError

    parser = argparse.ArgumentParser(prog="python -m app", description="recon's Gradio viewer")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
