"""Gradio viewer over ``recon.pipeline``: upload photos, reconstruct, look at the result, download it.

- ``build_app(model, config=AppConfig(...), defaults=page_defaults())`` builds the ``gr.Blocks`` (tests call
  it); ``launch_app(blocks, host=..., port=...)`` serves it; ``recon app`` / ``python -m app`` do both, with the
  best model present offline (``app.models.choose_startup_model``: cached weights, else recon-tiny).
- Per-session files live in a private temporary ``Workspace`` deleted when the session ends or stays inactive
  (``app.workspace``); uploads are bounded at the HTTP route (``app.guard``), checked and copied under generated
  names (``app.uploads``); the work itself is plain Python in ``app.handlers``.

Importing this package does not import Gradio; ``build_app`` / ``launch_app`` do, on first use.
"""

from __future__ import annotations

from app.config import AppConfig, AppLimits


def build_app(*args, **kwargs):
    """See ``app.ui.build_app``."""
    from app.ui import build_app as _build

    return _build(*args, **kwargs)


def launch_app(*args, **kwargs):
    """See ``app.ui.launch_app``."""
    from app.ui import launch_app as _launch

    return _launch(*args, **kwargs)


__all__ = ["AppConfig", "AppLimits", "build_app", "launch_app"]
