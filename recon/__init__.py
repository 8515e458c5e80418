"""recon: 3D reconstruction from photos with MASt3R-style decoders on a swappable backbone.

The two entry points most users need are re-exported here lazily (importing ``recon`` stays cheap):

- ``recon.load_model(path_or_name, backbone=None, device="cpu")`` -> a binocular model;
- ``recon.reconstruct(views, model, config, priors)`` -> a ``recon.types.Scene``, the views from
  ``recon.pipeline.load_views`` (see ``recon.pipeline``).
"""

__version__ = "0.1.0"

_LAZY = {
    "load_model": ("recon.model.loading", "load_model"),
    "reconstruct": ("recon.pipeline", "reconstruct"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'recon' has no attribute {name!r}")
