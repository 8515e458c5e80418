"""Feed-forward multi-view reconstruction (VGGT-style heads on a frozen recon backbone); see docs/feedforward.md.

Importing the package loads nothing heavy: ``recon.align`` uses ``recon.feedforward.scene`` (numpy only) and the
network modules load on first use of their names.
"""

import importlib

_EXPORTS = {
    "POSE_DIM": "camera",
    "decode_pose": "camera",
    "encode_pose": "camera",
    "PRESETS": "model",
    "FeedForwardConfig": "model",
    "FeedForwardModel": "model",
    "FeedForwardOutput": "model",
    "build_model": "model",
    "FeedForwardPrediction": "scene",
    "to_scene": "scene",
    "predict": "infer",
    "load_feedforward": "checkpoint",
    "save_feedforward": "checkpoint",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'recon.feedforward' has no attribute {name!r}")
    return getattr(importlib.import_module(f"recon.feedforward.{_EXPORTS[name]}"), name)
