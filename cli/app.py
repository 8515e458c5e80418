"""``recon app``: serve the Gradio viewer (``app.cli``; importing it is cheap: Gradio loads when the command runs)."""

from __future__ import annotations

from app.cli import add_arguments, run


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "app",
        help="start the web viewer (upload photos, reconstruct, explore, download)",
        description="Serve recon's Gradio viewer. The model loads once at start; each browser session gets a "
        "private temporary workspace, deleted when the session ends. Needs `pip install gradio`. Without "
        "downloaded weights, `recon app --model random:mast3r_tiny` serves a seeded random-weight model: it checks "
        "the install, its geometry is meaningless (`recon weights list` names the real models).",
    )
    add_arguments(p)  # the option list lives with the app (shared with `python -m app`)
    p.set_defaults(func=run)
