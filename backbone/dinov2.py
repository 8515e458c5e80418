"""DINOv2 encoders (facebookresearch/dinov2 hub): ``dinov2_vit{s,b,l,g}14`` and the ``*_reg`` variants.

Patch 14, cls token, learned position embedding for 518 px (37x37 grid), LayerScale (hub ``init_values=1.0``),
LayerNorm eps 1e-6, ImageNet normalisation; ViT-g uses the fused SwiGLU MLP (``mlp.w12`` / ``mlp.w3``). The
``*_reg`` hub models have 4 registers **and** resample the position embedding differently (``antialias=True``,
offset 0 i.e. a target *size*), the others use DINOv2's historical scale factor ``(h + 0.1) / M`` without
antialiasing. The hub state-dict layout is ours key for key (``blocks.{i}.*`` without chunks).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import torch
from torch import Tensor

from backbone.checkpoint import CheckpointError, load_strict, safe_load
from backbone.limits import check_vit_config, count_blocks
from backbone.registry import register
from backbone.vit import VisionTransformer, ViTConfig, apply_overrides

logger = logging.getLogger(__name__)

_BASE = ViTConfig(
    name="dinov2",
    patch_size=14,
    layer_scale_init=1.0,
    cls_token=True,
    mask_token=True,
    pos_embed_grid=37,
    interpolate_offset=0.1,
    interpolate_antialias=False,
    image_size=518,
)
# (embed_dim, depth, heads, ffn) of the four hub sizes; head dim 64 throughout.
SIZES = {
    "s": (384, 12, 6, "mlp"),
    "b": (768, 12, 12, "mlp"),
    "l": (1024, 24, 16, "mlp"),
    "g": (1536, 40, 24, "swiglu"),
}
_REG = {"num_register_tokens": 4, "interpolate_antialias": True, "interpolate_offset": 0.0}


def dinov2_config(size: str, registers: bool) -> ViTConfig:
    """Hub config of ``dinov2_vit{size}14[_reg]``."""
    dim, depth, heads, ffn = SIZES[size]
    name = f"dinov2_vit{size}14" + ("_reg" if registers else "")
    fields = {"name": name, "embed_dim": dim, "depth": depth, "num_heads": heads, "ffn_layer": ffn}
    return apply_overrides(_BASE, {**fields, **(_REG if registers else {})})


def _make_factory(size: str, registers: bool):
    config = dinov2_config(size, registers)

    def factory(**overrides) -> VisionTransformer:
        return VisionTransformer(apply_overrides(config, overrides))

    factory.__doc__ = f"DINOv2 {config.name}: {config.embed_dim}-d, {config.depth} blocks, {config.num_heads} heads."
    return factory


for _size in SIZES:
    for _registers in (False, True):
        _cfg = dinov2_config(_size, _registers)
        register(_cfg.name)(_make_factory(_size, _registers))


def dinov2_config_from_state(state: Mapping[str, Tensor]) -> ViTConfig:
    """Hub config matching a DINOv2 state dict's shapes (size from the width, registers from the keys)."""
    try:
        dim = state["cls_token"].shape[-1]
    except KeyError:
        raise CheckpointError("not a DINOv2 state dict: no 'cls_token'") from None
    size = next((s for s, (d, *_) in SIZES.items() if d == dim), None)
    registers = "register_tokens" in state
    depth = count_blocks(state, "blocks.")
    n_pos = state["pos_embed"].shape[1] - 1
    overrides = {
        "depth": depth,
        "patch_size": state["patch_embed.proj.weight"].shape[-1],
        "pos_embed_grid": round(n_pos**0.5),
        "ffn_layer": "swiglu" if "blocks.0.mlp.w12.weight" in state else "mlp",
    }
    if registers:
        overrides["num_register_tokens"] = state["register_tokens"].shape[1]
    if size is None:  # not a hub width: keep head dim 64
        base = dinov2_config("s", registers)
        overrides.update(name="dinov2_vit", embed_dim=dim, num_heads=max(1, dim // 64))
    else:
        base = dinov2_config(size, registers)
    return apply_overrides(base, overrides)


def load_dinov2(path_or_state: str | os.PathLike | Mapping, *, device: str | torch.device = "cpu"):
    """Load a DINOv2 hub state dict (``dinov2_vitl14_reg4_pretrain.pth`` etc.) strictly.

    Raises:
        CheckpointError: missing, unexpected or mis-shaped keys (named).
    """
    state = safe_load(path_or_state) if isinstance(path_or_state, (str, os.PathLike)) else path_or_state
    config = dinov2_config_from_state(state)
    check_vit_config(config)
    with torch.device("meta"):
        model = VisionTransformer(config)
    load_strict(model, state, "DINOv2 checkpoint")
    return model.to(device).eval()


def is_dinov2_state(keys) -> bool:
    """Flat DINOv2 hub layout: ``cls_token``, ``pos_embed`` and un-chunked ``blocks.{i}.attn.qkv.weight``."""
    keys = set(keys)
    return {"cls_token", "pos_embed", "blocks.0.attn.qkv.weight"} <= keys
