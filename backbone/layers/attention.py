"""Multi-head self-attention with an optional rotary position embedding on queries and keys."""

import logging

import torch.nn.functional as F
from torch import Tensor, nn

from backbone.layers.rope import RopeFn

logger = logging.getLogger(__name__)


class Attention(nn.Module):
    """timm-layout attention: ``qkv`` Linear(D, 3D) whose rows are ``[q | k | v] x heads x head_dim``, then ``proj``.

    Softmax attention is ``F.scaled_dot_product_attention`` with the default scale ``head_dim ** -0.5`` (CroCo's
    explicit softmax computes the same function; differences are float rounding, ~1e-7).

    Args:
        dim: width D.
        num_heads: heads; D must be divisible by it.
        qkv_bias: bias on ``qkv``.
        proj_bias: bias on ``proj``.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, proj_bias: bool = True) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(self, x: Tensor, rope: RopeFn | None = None) -> Tensor:
        """x: ``[B, N, D]``; rope: maps ``[B, heads, N, head_dim]`` q or k to itself. Returns ``[B, N, D]``."""
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, D // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each B heads N Dh
        if rope is not None:
            q, k = rope(q), rope(k)
        x = F.scaled_dot_product_attention(q, k, v)  # B heads N Dh
        return self.proj(x.transpose(1, 2).reshape(B, N, D))
