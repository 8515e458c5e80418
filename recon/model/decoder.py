"""The MASt3R / DUSt3R binocular decoder: two transformer stacks that read each other.

View 1 goes through ``dec_blocks``, view 2 through ``dec_blocks2``; at layer ``l`` each view cross-attends to
the *previous* layer's output of the other view (``f1_l = blk1_l(f1_{l-1}, f2_{l-1})``,
``f2_l = blk2_l(f2_{l-1}, f1_{l-1})``). ``decoder_embed`` maps any backbone width to the decoder width, and
the RoPE positions come from the patch grid, so the decoder plugs onto any backbone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from backbone.layers.attention import Attention
from backbone.layers.mlp import Mlp
from backbone.layers.rope import CroCoRoPE2D, RopeFn
from recon.model.attention import CrossAttention

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DecoderConfig:
    """Size of the binocular decoder (defaults: the MASt3R / DUSt3R "BaseDecoder")."""

    embed_dim: int = 768
    """Decoder token width (``dec_embed_dim``)."""
    depth: int = 12
    """Blocks per view (``dec_depth``); the DPT head needs at least 10 (official assert ``dec_depth > 9``)."""
    num_heads: int = 12
    """Attention heads; ``embed_dim / num_heads`` must be divisible by 4 for RoPE2D."""
    mlp_ratio: float = 4.0
    """MLP hidden width / ``embed_dim``."""
    rope_base: float = 100.0
    """RoPE2D frequency base (``pos_embed='RoPE100'``)."""
    norm_eps: float = 1e-6
    """LayerNorm epsilon (CroCo uses 1e-6 everywhere)."""


class DecoderBlock(nn.Module):
    """Self-attention, cross-attention to the (normalised) other view, MLP; all pre-norm residual."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.cross_attn = CrossAttention(dim, num_heads)
        self.norm3 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        # CroCo's norm_im2_in_dec=True: the memory (other view) is normalised before cross-attention.
        self.norm_y = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, y: torch.Tensor, rope_x: RopeFn, rope_y: RopeFn) -> torch.Tensor:
        """Args: x ``[B, N, C]`` this view, y ``[B, M, C]`` other view, rope_x / rope_y: their grids' RoPE.

        Returns:
            ``[B, N, C]`` updated tokens of this view (``y`` is not modified).
        """
        x = x + self.attn(self.norm1(x), rope_x)
        y_ = self.norm_y(y)
        x = x + self.cross_attn(self.norm2(x), y_, rope_x, rope_y)
        return x + self.mlp(self.norm3(x))


class BinocularDecoder(nn.Module):
    """``decoder_embed`` + two decoder stacks + a shared final norm.

    Args:
        in_dim: backbone token width ``D``.
        patch_size: backbone patch size (to turn image shapes into patch grids).
        config: decoder sizes.
    """

    def __init__(self, in_dim: int, patch_size: int, config: DecoderConfig = DecoderConfig()):
        super().__init__()
        c = config
        if (c.embed_dim // c.num_heads) % 4 or c.embed_dim % c.num_heads:
            raise ValueError(f"decoder head dim {c.embed_dim}/{c.num_heads} must be an integer divisible by 4")
        self.config = config
        self.in_dim = in_dim
        self.patch_size = patch_size
        self.rope = CroCoRoPE2D(c.embed_dim // c.num_heads, c.rope_base)
        self.decoder_embed = nn.Linear(in_dim, c.embed_dim)
        self.dec_blocks = nn.ModuleList(
            DecoderBlock(c.embed_dim, c.num_heads, c.mlp_ratio, c.norm_eps) for _ in range(c.depth)
        )
        self.dec_blocks2 = nn.ModuleList(
            DecoderBlock(c.embed_dim, c.num_heads, c.mlp_ratio, c.norm_eps) for _ in range(c.depth)
        )
        self.dec_norm = nn.LayerNorm(c.embed_dim, eps=c.norm_eps)

    def grid(self, shape: tuple[int, int]) -> tuple[int, int]:
        """Patch grid ``(h, w)`` of an image of ``shape = (H, W)`` pixels."""
        H, W = shape
        p = self.patch_size
        if H % p or W % p:
            raise ValueError(f"image size {H}x{W} (HxW) is not a multiple of the patch size {p}")
        return H // p, W // p

    def forward(
        self, feat1: torch.Tensor, feat2: torch.Tensor, shape1: tuple[int, int], shape2: tuple[int, int]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Decode a pair of views simultaneously.

        Args:
            feat1: ``[B, h1*w1, D]`` backbone tokens of view 1 (row-major patch grid).
            feat2: ``[B, h2*w2, D]`` backbone tokens of view 2.
            shape1, shape2: ``(H, W)`` pixel sizes of the two views.

        Returns:
            Two lists (view 1, view 2) of ``depth + 1`` tensors each, what the heads read:
            ``[feat (D-wide), block 1 out, ..., block depth-1 out, dec_norm(block depth out)]``; only the last
            entry is normalised (official layout, the DPT hooks index into it).
        """
        (h1, w1), (h2, w2) = self.grid(shape1), self.grid(shape2)
        B = feat1.shape[0]
        for name, f, n in (("feat1", feat1, h1 * w1), ("feat2", feat2, h2 * w2)):
            if f.ndim != 3 or f.shape[1] != n or f.shape[2] != self.in_dim or f.shape[0] != B:
                raise ValueError(
                    f"{name} has shape {tuple(f.shape)}, expected [{B}, {n}, {self.in_dim}] for the given image shape"
                )
        # RoPE tables once per grid; both views use (y, x) on their own grid, no offset between views.
        rope1 = self.rope.for_grid(h1, w1, feat1.device)
        rope2 = self.rope.for_grid(h2, w2, feat2.device)
        out1, out2 = [feat1], [feat2]
        x1, x2 = self.decoder_embed(feat1), self.decoder_embed(feat2)
        for blk1, blk2 in zip(self.dec_blocks, self.dec_blocks2, strict=True):
            x1, x2 = blk1(x1, x2, rope1, rope2), blk2(x2, x1, rope2, rope1)
            out1.append(x1)
            out2.append(x2)
        out1[-1] = self.dec_norm(out1[-1])
        out2[-1] = self.dec_norm(out2[-1])
        return out1, out2
