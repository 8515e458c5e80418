"""Cross-attention of the binocular decoder (CroCo layout, so official weights load by name).

Self-attention and the MLP are the backbone's layers (``backbone.layers``): same parameter names as the official
modules (``qkv``, ``proj``, ``fc1``/``fc2``); cross-attention adds ``projq``/``projk``/``projv``, so the checkpoint
key map is a prefix rename. Attention runs through ``scaled_dot_product_attention``
(flash / memory-efficient kernels on GPU); its default scale ``head_dim ** -0.5`` is CroCo's.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from backbone.layers.rope import RopeFn

logger = logging.getLogger(__name__)


class CrossAttention(nn.Module):
    """Multi-head cross-attention from ``x`` (queries) to ``y`` (keys/values, the other view).

    q is rotated with the query view's own grid positions, k with the other view's: both views use ``(y, x)``
    on their own grid, with no offset between views.
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.projq = nn.Linear(dim, dim)
        self.projk = nn.Linear(dim, dim)
        self.projv = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        B, N, C = t.shape
        return t.reshape(B, N, self.num_heads, C // self.num_heads).transpose(1, 2)  # B heads N dh

    def forward(self, x: torch.Tensor, y: torch.Tensor, rope_x: RopeFn, rope_y: RopeFn) -> torch.Tensor:
        """Args: x ``[B, N, C]``, y ``[B, M, C]``, rope_x / rope_y: rotations for x's / y's grid.

        Returns:
            ``[B, N, C]``.
        """
        B, N, C = x.shape
        q = rope_x(self._heads(self.projq(x)))
        k = rope_y(self._heads(self.projk(y)))
        v = self._heads(self.projv(y))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(B, N, C))
