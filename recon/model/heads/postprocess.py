"""Turning raw head channels into points, confidences and descriptors, exactly as DUSt3R / MASt3R do.

Modes are the official tuples ``(name, vmin, vmax)`` read from the checkpoints' constructor strings:

- depth ``('exp', -inf, inf)``: ``pts = xyz / max(|xyz|, 1e-8) * expm1(|xyz|)`` (direction times a distance
  that grows exponentially); ``'linear'`` and ``'square'`` also exist;
- conf ``('exp', 1, inf)``: ``1 + exp(c)`` (so conf > 1); ``('exp', 0, inf)`` for the descriptor confidence;
  ``'sigmoid'`` maps to ``(vmin, vmax)``;
- descriptors ``'norm'``: divided by their L2 norm **without** epsilon (the official maths, reproduced).
"""

from __future__ import annotations

import logging
import math

import torch

logger = logging.getLogger(__name__)


def reg_points(xyz: torch.Tensor, mode: tuple) -> torch.Tensor:
    """Raw ``[..., 3]`` -> 3D points ``[..., 3]`` (float32 maths)."""
    name, vmin, vmax = mode
    if not (vmin == -math.inf and vmax == math.inf):
        raise ValueError(f"bounded depth modes are not supported (official code asserts this too): {mode}")
    if name == "linear":
        return xyz
    d = xyz.norm(dim=-1, keepdim=True)
    direction = xyz / d.clamp(min=1e-8)
    if name == "square":
        return direction * d.square()
    if name == "exp":
        return direction * torch.expm1(d)
    raise ValueError(f"unknown depth mode {name!r} (expected exp, linear or square)")


def reg_conf(x: torch.Tensor, mode: tuple) -> torch.Tensor:
    """Raw confidence logits ``[...]`` -> confidences in ``(vmin, vmax)``."""
    name, vmin, vmax = mode
    if name == "exp":
        return vmin + x.exp().clamp(max=vmax - vmin)
    if name == "sigmoid":
        return (vmax - vmin) * torch.sigmoid(x) + vmin
    raise ValueError(f"unknown confidence mode {name!r} (expected exp or sigmoid)")


def reg_desc(desc: torch.Tensor, mode: str) -> torch.Tensor:
    """Raw descriptors ``[..., D]`` -> L2-normalised descriptors (``mode='norm'``) or unchanged (``'none'``)."""
    if "norm" in mode:
        return desc / desc.norm(dim=-1, keepdim=True)
    if mode == "none":
        return desc
    raise ValueError(f"unknown descriptor mode {mode!r} (expected norm)")
