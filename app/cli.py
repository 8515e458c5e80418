"""Command line of the viewer, shared by ``recon app`` and ``python -m app``."""

from __future__ import annotations

import argparse
import logging
import signal
from pathlib import Path

logger = logging.getLogger(__name__)


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
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:K")
    p.add_argument("--concurrency", type=int, default=1, help="reconstructions running at once (others queue)")
    p.add_argument("--max-queue", type=int, default=32, help="waiting requests before new ones are refused")
    p.add_argument(
        "--session-ttl", type=float, default=3600.0, help="seconds without activity before a session is deleted"
    )
    g = p.add_argument_group("upload limits")
    g.add_argument("--max-images", type=int, default=50, help="images (or video frames) per reconstruction")
    g.add_argument("--max-file-mb", type=float, default=30.0, help="largest photo")
    g.add_argument("--max-upload-mb", type=float, default=300.0, help="largest total upload per session")
    g.add_argument("--max-zip-mb", type=float, default=500.0, help="largest uncompressed zip")
    g.add_argument("--max-video-mb", type=float, default=200.0, help="largest video")
    g.add_argument("--video-fps", type=float, default=1.0, help="frames sampled per second of video")
    g.add_argument(
        "--max-pending-mb",
        type=float,
        default=2000.0,
        help="largest total of uploads not yet used, all clients together (the upload route refuses more)",
    )
    p.add_argument("--examples", type=Path, help="folder of example scenes (default: the repository's demo_data)")


def run(args) -> int:
    """Build and serve the app until interrupted."""
    from app.config import AppConfig, AppLimits
    from recon.errors import UserError

    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UserError("the viewer needs Gradio: pip install gradio") from None
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise UserError(f"checkpoint not found: {args.checkpoint}")
    try:
        limits = AppLimits(
            max_images=args.max_images,
            max_file_mb=args.max_file_mb,
            max_upload_mb=args.max_upload_mb,
            max_zip_uncompressed_mb=args.max_zip_mb,
            max_video_mb=args.max_video_mb,
            video_fps=args.video_fps,
            max_pending_upload_mb=args.max_pending_mb,
        )
        config = AppConfig(
            limits=limits,
            concurrency_limit=args.concurrency,
            max_queue=args.max_queue,
            session_ttl_s=args.session_ttl,
            device=args.device,
            examples_dir=args.examples,
        )
    except ValueError as err:
        raise UserError(str(err)) from None

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
