"""Pre-norm transformer block: ``x + ls1(attn(norm1(x)))``, then ``x + ls2(ffn(norm2(x)))``."""

import logging
from typing import Literal

from torch import Tensor, nn

from backbone.layers.attention import Attention
from backbone.layers.layer_scale import LayerScale
from backbone.layers.mlp import Mlp, SwiGLUFFN
from backbone.layers.rope import RopeFn

logger = logging.getLogger(__name__)


class Block(nn.Module):
    """One ViT block with the key layout shared by CroCo, DINOv2, DUNE and MuM.

    Args:
        dim: width D.
        num_heads: attention heads.
        mlp_ratio: hidden width of the feed-forward layer relative to D.
        qkv_bias: bias on the qkv projection.
        proj_bias: bias on the attention output projection.
        ffn_bias: biases in the feed-forward layer.
        norm_eps: LayerNorm epsilon (1e-6 everywhere except MuM's encoder-only entry point, 1e-5).
        layer_scale_init: initial LayerScale gain; ``None`` means no LayerScale (and no ``ls*.gamma`` keys).
        ffn_layer: ``"mlp"`` (GELU) or ``"swiglu"`` (DINOv2 ViT-g).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        ffn_bias: bool = True,
        norm_eps: float = 1e-6,
        layer_scale_init: float | None = None,
        ffn_layer: Literal["mlp", "swiglu"] = "mlp",
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, proj_bias=proj_bias)
        self.ls1 = LayerScale(dim, layer_scale_init) if layer_scale_init is not None else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        hidden = int(dim * mlp_ratio)
        if ffn_layer == "mlp":
            self.mlp = Mlp(dim, hidden, bias=ffn_bias)
        elif ffn_layer == "swiglu":
            self.mlp = SwiGLUFFN(dim, hidden, bias=ffn_bias)
        else:
            raise ValueError(f"unknown ffn_layer {ffn_layer!r}; expected 'mlp' or 'swiglu'")
        self.ls2 = LayerScale(dim, layer_scale_init) if layer_scale_init is not None else nn.Identity()

    def forward(self, x: Tensor, rope: RopeFn | None = None) -> Tensor:
        """x: ``[B, N, D]`` -> ``[B, N, D]``; ``rope`` is handed to the attention."""
        x = x + self.ls1(self.attn(self.norm1(x), rope=rope))
        return x + self.ls2(self.mlp(self.norm2(x)))
