"""One parametrised Vision Transformer behind every backbone family (CroCo, DUNE, DINOv2, MuM).

Token layout ``[cls?, registers x R, patches (row-major)]``. Families differ only in their ``ViTConfig``:
learned absolute position embedding (DINOv2, DUNE) or RoPE (CroCo's RoPE2D, MuM's axial RoPE), LayerScale,
prefix tokens, LayerNorm epsilon, input normalisation.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from backbone.layers import AxialRoPE, Block, CroCoRoPE2D, PatchEmbed, RopeFn, check_image_size, interpolate_pos_embed
from backbone.registry import IMAGENET_MEAN, IMAGENET_STD, BackboneSpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ViTConfig:
    """Architecture of a ViT backbone. Every field can be overridden through ``backbone.create(name, **kw)``."""

    name: str = "vit"
    """Family name reported in ``spec.name``."""
    patch_size: int = 16
    """Patch side p in pixels."""
    embed_dim: int = 768
    """Token width D."""
    depth: int = 12
    """Number of transformer blocks."""
    num_heads: int = 12
    """Attention heads; D must be divisible by it."""
    mlp_ratio: float = 4.0
    """Feed-forward hidden width relative to D."""
    qkv_bias: bool = True
    """Bias on the qkv projection."""
    proj_bias: bool = True
    """Bias on the attention output projection."""
    ffn_bias: bool = True
    """Biases in the feed-forward layer."""
    ffn_layer: Literal["mlp", "swiglu"] = "mlp"
    """``"mlp"`` (GELU) everywhere except DINOv2 ViT-g (``"swiglu"``)."""
    norm_eps: float = 1e-6
    """Epsilon of every LayerNorm."""
    layer_scale_init: float | None = None
    """LayerScale init value; ``None`` = no LayerScale (CroCo, MuM)."""
    cls_token: bool = False
    """Whether a cls token leads the sequence."""
    num_register_tokens: int = 0
    """Register tokens after cls (DINOv2-reg, DUNE: 4)."""
    mask_token: bool = False
    """A ``mask_token [1, D]`` parameter (DINOv2 layout; unused at inference, present in checkpoints)."""
    pos_embed_grid: int | None = None
    """Side M of a learned absolute position embedding ``[1, 1 + M*M, D]`` (cls + patches); ``None`` = none."""
    interpolate_offset: float = 0.1
    """Offset of the position-embedding resampling (see ``interpolate_pos_embed``)."""
    interpolate_antialias: bool = False
    """Antialias flag of the position-embedding resampling."""
    rope: Literal["croco", "axial"] | None = None
    """Rotary embedding on q/k: CroCo RoPE2D, MuM axial RoPE, or none."""
    rope_base: float = 100.0
    """RoPE frequency / period base."""
    rope_dtype: Literal["float32", "bfloat16"] = "float32"
    """Dtype of the axial RoPE computation (MuM's encoder-only release: bfloat16)."""
    mean: tuple[float, float, float] = IMAGENET_MEAN
    """Input normalisation mean (applied to [0, 1] RGB)."""
    std: tuple[float, float, float] = IMAGENET_STD
    """Input normalisation std."""
    image_size: int = 224
    """Native training resolution in pixels (``spec.image_size``)."""


def apply_overrides(config: ViTConfig, overrides: dict) -> ViTConfig:
    """``dataclasses.replace`` with an error listing the valid fields for an unknown override."""
    names = {f.name for f in dataclasses.fields(ViTConfig)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise TypeError(f"unknown backbone override(s) {unknown}; valid: {sorted(names)}")
    return dataclasses.replace(config, **overrides)


class VisionTransformer(nn.Module):
    """The ViT backbone. ``forward`` takes RGB in [0, 1] and returns normalised patch tokens.

    State-dict keys follow the DINOv2 hub layout: ``cls_token``, ``register_tokens``, ``pos_embed``,
    ``mask_token``, ``patch_embed.proj.*``, ``blocks.{i}.{norm1, attn.qkv, attn.proj, ls1.gamma, norm2, mlp.*,
    ls2.gamma}``, ``norm.*``, plus ``rope_embed.periods`` for the axial RoPE. Foreign layouts are mapped onto
    these names by each family's loader.
    """

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        c = config
        if c.embed_dim % c.num_heads:
            raise ValueError(f"embed_dim {c.embed_dim} is not divisible by num_heads {c.num_heads}")
        if c.pos_embed_grid is not None and not c.cls_token:
            raise ValueError("a learned position embedding needs the cls token (DINOv2 layout: cls + patches)")
        self.config = c
        head_dim = c.embed_dim // c.num_heads
        self.patch_embed = PatchEmbed(c.patch_size, c.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim)) if c.cls_token else None
        self.register_tokens = (
            nn.Parameter(torch.zeros(1, c.num_register_tokens, c.embed_dim)) if c.num_register_tokens else None
        )
        self.pos_embed = (
            nn.Parameter(torch.zeros(1, 1 + c.pos_embed_grid**2, c.embed_dim)) if c.pos_embed_grid else None
        )
        self.mask_token = nn.Parameter(torch.zeros(1, c.embed_dim)) if c.mask_token else None
        if c.rope == "croco":
            self.rope_embed = CroCoRoPE2D(head_dim, base=c.rope_base)
        elif c.rope == "axial":
            self.rope_embed = AxialRoPE(head_dim, base=c.rope_base, dtype=getattr(torch, c.rope_dtype))
        elif c.rope is None:
            self.rope_embed = None
        else:
            raise ValueError(f"unknown rope {c.rope!r}; expected 'croco', 'axial' or None")
        self.blocks = nn.ModuleList(
            Block(
                c.embed_dim,
                c.num_heads,
                mlp_ratio=c.mlp_ratio,
                qkv_bias=c.qkv_bias,
                proj_bias=c.proj_bias,
                ffn_bias=c.ffn_bias,
                norm_eps=c.norm_eps,
                layer_scale_init=c.layer_scale_init,
                ffn_layer=c.ffn_layer,
            )
            for _ in range(c.depth)
        )
        self.norm = nn.LayerNorm(c.embed_dim, eps=c.norm_eps)
        self.num_prefix_tokens = int(c.cls_token) + c.num_register_tokens
        self.spec = BackboneSpec(
            name=c.name,
            patch_size=c.patch_size,
            embed_dim=c.embed_dim,
            mean=tuple(c.mean),
            std=tuple(c.std),
            num_prefix_tokens=self.num_prefix_tokens,
            image_size=c.image_size,
        )
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Random init for training from scratch (DINOv2 scheme); a no-op on the meta device."""
        if self.patch_embed.proj.weight.is_meta:
            return
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for p in (self.cls_token, self.register_tokens):
            if p is not None:
                nn.init.normal_(p, std=1e-6)
        if self.pos_embed is not None:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)

    # ---------------------------------------------------------------- tokens
    def normalize(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W]`` RGB in [0, 1] -> normalised with ``spec.mean`` / ``spec.std``."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images [B, 3, H, W] in [0, 1], got shape {tuple(images.shape)}")
        mean = torch.tensor(self.spec.mean, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.spec.std, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        return (images - mean) / std

    def prepare_tokens(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Normalised ``[B, 3, H, W]`` -> (tokens ``[B, P + h*w, D]``, grid ``(h, w)``)."""
        x, (h, w) = self.patch_embed(x)  # B hw D
        B = x.shape[0]
        if self.cls_token is not None:
            x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)
        if self.pos_embed is not None:
            # Added to cls + patches before the registers are inserted (registers carry no position).
            x = x + interpolate_pos_embed(
                self.pos_embed,
                h,
                w,
                num_prefix=1,
                offset=self.config.interpolate_offset,
                antialias=self.config.interpolate_antialias,
            )
        if self.register_tokens is not None:
            x = torch.cat((x[:, :1], self.register_tokens.expand(B, -1, -1), x[:, 1:]), dim=1)
        return x, (h, w)

    def rope_for(self, h: int, w: int, device: torch.device) -> RopeFn | None:
        """The RoPE closure for an ``h x w`` grid after the prefix tokens, or ``None``."""
        if isinstance(self.rope_embed, CroCoRoPE2D):
            return self.rope_embed.for_grid(h, w, device, num_prefix=self.num_prefix_tokens)
        if isinstance(self.rope_embed, AxialRoPE):
            return self.rope_embed.for_grid(h, w, num_prefix=self.num_prefix_tokens)
        return None

    def _run_blocks(self, images: Tensor, keep: set[int] | None = None) -> tuple[Tensor, list[Tensor]]:
        """Normalise, tokenise and run every block; return the last output and the outputs of blocks in ``keep``."""
        check_image_size(images.shape[-2], images.shape[-1], self.spec.patch_size)
        x, (h, w) = self.prepare_tokens(self.normalize(images))
        rope = self.rope_for(h, w, x.device)
        kept = []
        for i, blk in enumerate(self.blocks):
            x = blk(x, rope=rope)
            if keep is not None and i in keep:
                kept.append(x)
        return x, kept

    # ---------------------------------------------------------------- public API
    def forward_features(self, images: Tensor) -> dict[str, Tensor]:
        """Run the encoder.

        Args:
            images: ``[B, 3, H, W]`` RGB in [0, 1]; H and W multiples of ``spec.patch_size``.

        Returns:
            ``x_prenorm`` ``[B, P + N, D]`` (all tokens after the last block, before the final norm),
            ``x_norm_patchtokens`` ``[B, N, D]`` (row-major), and where the family has them
            ``x_norm_clstoken`` ``[B, D]``, ``x_norm_regtokens`` ``[B, R, D]``. N = (H/p)(W/p).
        """
        x, _ = self._run_blocks(images)
        x_norm = self.norm(x)
        out = {"x_prenorm": x, "x_norm_patchtokens": x_norm[:, self.num_prefix_tokens :]}
        if self.cls_token is not None:
            out["x_norm_clstoken"] = x_norm[:, 0]
        if self.register_tokens is not None:
            out["x_norm_regtokens"] = x_norm[:, int(self.cls_token is not None) : self.num_prefix_tokens]
        return out

    def forward(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W]`` RGB in [0, 1] -> patch tokens after the final norm ``[B, h*w, D]`` (row-major)."""
        return self.forward_features(images)["x_norm_patchtokens"]

    def get_intermediate_layers(
        self, images: Tensor, n: int | list[int] = 1, norm: bool = True, reshape: bool = False
    ) -> tuple[Tensor, ...]:
        """Patch tokens of the last ``n`` blocks (or of the block indices in ``n``), DINOv2-style, for DPT heads.

        Returns:
            One tensor per selected block: ``[B, h*w, D]``, or ``[B, D, h, w]`` with ``reshape=True``.
        """
        depth = len(self.blocks)
        keep = set(range(depth - n, depth)) if isinstance(n, int) else set(n)
        if not keep or min(keep) < 0 or max(keep) >= depth:
            raise ValueError(f"block indices {sorted(keep)} out of range for depth {depth}")
        _, kept = self._run_blocks(images, keep)
        outs = [(self.norm(x) if norm else x)[:, self.num_prefix_tokens :] for x in kept]
        if reshape:
            h, w = images.shape[-2] // self.spec.patch_size, images.shape[-1] // self.spec.patch_size
            outs = [o.transpose(1, 2).reshape(o.shape[0], -1, h, w) for o in outs]  # B D h w
        return tuple(outs)
