"""Command line of the viewer, shared by ``recon app`` and ``python -m app``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

logger = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of ``recon app``."""
    m = p.add_mutually_exclusive_group()
    m.add_argument("--model", help="weights name (see `recon weights list`); default: every cached model")
    m.add_argument("--checkpoint", type=Path, help="a checkpoint file (any supported format)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=int, default=7860, help="port to listen on")
    p.add_argument("--share", action="store_true", help="also serve through a temporary public Gradio link")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:K")
    p.add_argument("--concurrency", type=int, default=1, help="reconstructions running at once (others queue)")
    p.add_argument("--max-queue", type=int, default=32, help="waiting requests before new ones are refused")
    p.add_argument("--session-ttl", type=float, default=3600.0, help="seconds before an idle session is deleted")
    g = p.add_argument_group("upload limits")
    g.add_argument("--max-images", type=int, default=50, help="images (or video frames) per reconstruction")
    g.add_argument("--max-file-mb", type=float, default=30.0, help="largest photo")
    g.add_argument("--max-upload-mb", type=float, default=300.0, help="largest total upload per session")
    g.add_argument("--max-zip-mb", type=float, default=500.0, help="largest uncompressed zip")
    g.add_argument("--max-video-mb", type=float, default=200.0, help="largest video")
    g.add_argument("--video-fps", type=float, default=1.0, help="frames sampled per second of video")
    p.add_argument("--examples", type=Path, help="folder of example scenes (default: the repository's demo_data)")


def run(args) -> int:
    """Build and serve the app until interrupted."""
    from app.config import AppConfig, AppLimits
    from app.handlers import RunError
    from recon.cli import UserError

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

    from app.ui import build_app, launch_app
    from backbone.checkpoint import CheckpointError
    from backbone.hub import WeightsError

    model = str(args.checkpoint) if args.checkpoint else args.model
    try:
        demo = build_app(model, config=config)
    except (RunError, CheckpointError, WeightsError, FileNotFoundError) as err:
        raise UserError(str(err)) from None
    try:
        launch_app(demo, host=args.host, port=args.port, share=args.share)
    finally:
        demo.recon_workspaces.close_all()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m app``."""
    import sys

    from recon.cli import UserError

    parser = argparse.ArgumentParser(prog="python -m app", description="recon's Gradio viewer")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
