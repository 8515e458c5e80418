"""Binocular 3D models: the MASt3R / DUSt3R decoder and heads on any backbone, and their checkpoint loaders.

- ``ReconModel(backbone, ModelConfig(...))``: ``pred1, pred2 = model(img1, img2)``; ``model.encode`` /
  ``model.decode`` for encoding each image once;
- ``load_model(path_or_name, backbone=None)``: official MASt3R / DUSt3R / DUNE-MASt3R checkpoints (``.pth`` or
  Hugging Face safetensors) and recon's own; ``save_model(model, path)``;
- ``build_model(name)``: a named architecture with random weights (``mast3r_vitl16``, ``dune_vitb14``, ...).

Imports are lazy so that ``import recon.model`` stays cheap.
"""

_LAZY = {
    "ReconModel": "recon.model.recon_model",
    "ModelConfig": "recon.model.recon_model",
    "DecoderConfig": "recon.model.decoder",
    "HeadConfig": "recon.model.heads",
    "load_model": "recon.model.loading",
    "save_model": "recon.model.loading",
    "build_model": "recon.model.presets",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'recon.model' has no attribute {name!r}")
