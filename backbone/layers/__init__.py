"""Building blocks of the ViT backbones, one module per block (dinov2 layout)."""

from backbone.layers.attention import Attention
from backbone.layers.block import Block
from backbone.layers.layer_scale import LayerScale
from backbone.layers.mlp import Mlp, SwiGLUFFN
from backbone.layers.patch_embed import PatchEmbed, check_image_size
from backbone.layers.pos_embed import interpolate_pos_embed
from backbone.layers.rope import AxialRoPE, CroCoRoPE2D, RopeFn

__all__ = [
    "Attention",
    "AxialRoPE",
    "Block",
    "CroCoRoPE2D",
    "LayerScale",
    "Mlp",
    "PatchEmbed",
    "RopeFn",
    "SwiGLUFFN",
    "check_image_size",
    "interpolate_pos_embed",
]
