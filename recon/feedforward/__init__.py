"""Feed-forward multi-view reconstruction (VGGT-style heads on a frozen recon backbone); see docs/feedforward.md."""

from recon.feedforward.camera import POSE_DIM, decode_pose, encode_pose
from recon.feedforward.model import PRESETS, FeedForwardConfig, FeedForwardModel, FeedForwardOutput, build_model

__all__ = [
    "POSE_DIM",
    "PRESETS",
    "FeedForwardConfig",
    "FeedForwardModel",
    "FeedForwardOutput",
    "build_model",
    "decode_pose",
    "encode_pose",
]
