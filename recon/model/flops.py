"""Analytic FLOP count of a forward pass from layer shapes (multiply-add = 2 FLOPs).

Counts what dominates a ViT + DPT: ``nn.Linear``, ``nn.Conv2d``, ``nn.ConvTranspose2d`` and the two attention
matmuls (``q k^T`` and ``attn v``) of every module that has a ``num_heads`` attribute and takes ``x [B, N, D]``
(self-attention) or ``x, y [B, M, D]`` (cross-attention). Norms, activations, RoPE and interpolations are
ignored (a few percent). Run it on the meta device: nothing is allocated or computed, only shapes flow.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch
from torch import nn

logger = logging.getLogger(__name__)


def count_flops(model: nn.Module, fn: Callable[[], object]) -> int:
    """FLOPs of ``fn()`` (which must run ``model``'s modules), counted with forward hooks.

    Args:
        model: the module tree whose layers are counted.
        fn: a closure running the forward pass, e.g. ``lambda: model.encode(images)``.

    Returns:
        Total FLOPs (int).
    """
    total = 0

    def linear(m: nn.Linear, args, out):
        nonlocal total
        total += 2 * out.numel() * m.in_features

    def conv(m: nn.Conv2d, args, out):
        nonlocal total
        total += 2 * out.numel() * (m.in_channels // m.groups) * math.prod(m.kernel_size)

    def deconv(m: nn.ConvTranspose2d, args, out):
        nonlocal total
        total += 2 * args[0].numel() * (m.out_channels // m.groups) * math.prod(m.kernel_size)

    def attention(m: nn.Module, args, out):
        nonlocal total
        x = args[0]
        y = args[1] if len(args) > 1 and isinstance(args[1], torch.Tensor) else x
        B, N, D = x.shape
        total += 2 * 2 * B * N * y.shape[1] * D  # q k^T and attn v over all heads

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear))
        elif isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv))
        elif isinstance(m, nn.ConvTranspose2d):
            handles.append(m.register_forward_hook(deconv))
        elif hasattr(m, "num_heads") and not isinstance(m, nn.MultiheadAttention):
            handles.append(m.register_forward_hook(attention))
    try:
        with torch.no_grad():
            fn()
    finally:
        for h in handles:
            h.remove()
    return total
