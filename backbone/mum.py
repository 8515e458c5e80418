"""MuM encoder (davnords/MuM, multi-view masked image modelling): ``mum_vitl16``.

ViT-L/16 with one cls token, no registers, **no absolute position embedding** (positions come only from the
DINOv3-style axial RoPE, base 100, coordinates normalised per axis), no LayerScale, ImageNet normalisation,
native 224 px. Reference: reference/dune_mum.md sections 9-10.

The two official entry points hold identical encoder weights but differ numerically, and each released file is
read by one of them; ``load_mum`` reproduces the entry point that goes with the file's layout:

===============================  ===========================  ============================================
layout (file)                    official entry point         numerics (``numerics=``)
===============================  ===========================  ============================================
``MuM_ViTLarge.pth``             ``mum_vitl16``               ``"encoder"``: LayerNorm eps 1e-5, RoPE in bf16
``MuM_ViTLarge_BaseDecoder.pth`` ``mum_vitl16_decoderb``      ``"autoencoder"``: eps 1e-6, RoPE in float32
===============================  ===========================  ============================================

The decoder of the second file (masked reconstruction) is not part of the backbone: its keys are dropped by an
explicit prefix list, anything else unknown is an error.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Literal

import torch
from torch import Tensor

from backbone.checkpoint import CheckpointError, check_state_dict, load_strict, safe_load
from backbone.limits import check_vit_config, count_blocks
from backbone.registry import register
from backbone.vit import VisionTransformer, ViTConfig, apply_overrides

logger = logging.getLogger(__name__)

MUM_VITL16 = ViTConfig(
    name="mum_vitl16",
    patch_size=16,
    embed_dim=1024,
    depth=24,
    num_heads=16,
    norm_eps=1e-5,
    cls_token=True,
    rope="axial",
    rope_base=100.0,
    rope_dtype="bfloat16",
    image_size=224,
)

NUMERICS = {
    "encoder": {"norm_eps": 1e-5, "rope_dtype": "bfloat16"},
    "autoencoder": {"norm_eps": 1e-6, "rope_dtype": "float32"},
}

# Keys of MuM_ViTLarge_BaseDecoder.pth that belong to the decoder, not to the encoder.
MUM_DECODER_PREFIXES = (
    "decoder_embed.",
    "decoder_frame_blocks.",
    "decoder_global_blocks.",
    "decoder_norm.",
    "decoder_pred.",
    "rope_embed_decoder.",
    "mask_token",  # the decoder's [1, 1, D_dec] mask token
)


@register("mum_vitl16")
def mum_vitl16(*, numerics: Literal["encoder", "autoencoder"] = "encoder", **overrides) -> VisionTransformer:
    """MuM ViT-L/16 encoder; ``numerics`` picks the official entry point to mimic (see the module docstring)."""
    if numerics not in NUMERICS:
        raise ValueError(f"numerics must be one of {sorted(NUMERICS)}, got {numerics!r}")
    return VisionTransformer(apply_overrides(MUM_VITL16, {**NUMERICS[numerics], **overrides}))


def split_mum_state(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], bool]:
    """Drop the decoder keys of the autoencoder layout: ``(encoder state dict, whether decoder keys were there)``.

    MuM's encoder keys are already ours (``cls_token``, ``patch_embed.proj.*``, ``rope_embed.periods``,
    ``blocks.{i}.*``, ``norm.*``), so the key map is the identity on what remains.
    """
    encoder = {k: v for k, v in state_dict.items() if not k.startswith(MUM_DECODER_PREFIXES)}
    return encoder, len(encoder) != len(state_dict)


def mum_config_from_state(state: Mapping[str, Tensor], numerics: str) -> ViTConfig:
    """Sizes from the weight shapes; heads from the RoPE periods (head_dim / 4 of them)."""
    try:
        dim, _, patch, _ = state["patch_embed.proj.weight"].shape
        n_periods = state["rope_embed.periods"].shape[0]
    except KeyError as err:
        raise CheckpointError(f"not a MuM state dict: missing {err.args[0]!r}") from None
    depth = count_blocks(state, "blocks.")
    heads = dim // (4 * n_periods) if n_periods else 0  # 0 is refused by check_vit_config
    name = "mum_vitl16" if (dim, depth) == (1024, 24) else "mum_vit"
    return apply_overrides(
        MUM_VITL16,
        {**NUMERICS[numerics], "name": name, "embed_dim": dim, "depth": depth, "num_heads": heads, "patch_size": patch},
    )


def _check_periods(model: VisionTransformer) -> None:
    """The stored RoPE periods must be ``base ** (4i / head_dim)`` (a different RoPE would load silently)."""
    rope = model.rope_embed
    expected = rope.base ** (torch.arange(rope.head_dim // 4, dtype=torch.float64) * 4 / rope.head_dim)
    got = rope.periods.double().cpu()
    if not torch.allclose(got, expected, rtol=1e-2):  # bf16-stored periods are within 0.4%
        raise CheckpointError(f"rope_embed.periods {got.tolist()} differ from base-100 periods {expected.tolist()}")


def load_mum(
    path_or_state: str | os.PathLike | Mapping,
    *,
    device: str | torch.device = "cpu",
    numerics: Literal["encoder", "autoencoder"] | None = None,
) -> VisionTransformer:
    """Load a MuM raw state dict (``MuM_ViTLarge.pth`` strictly, or the encoder of ``MuM_ViTLarge_BaseDecoder.pth``).

    Args:
        path_or_state: ``.pth`` path or the loaded state dict.
        device: where the model ends up.
        numerics: ``"encoder"`` / ``"autoencoder"``; default: the one of the official entry point that reads this
            layout (encoder-only file -> ``"encoder"``, encoder+decoder file -> ``"autoencoder"``).

    Raises:
        CheckpointError: missing, unexpected or mis-shaped keys (named), or unexpected RoPE periods.
    """
    state = safe_load(path_or_state) if isinstance(path_or_state, (str, os.PathLike)) else path_or_state
    if not isinstance(state, Mapping):
        raise CheckpointError(f"a MuM checkpoint is a raw state dict, got {type(state).__name__}")
    if isinstance(state.get("model"), Mapping) and "rope_embed.periods" not in state:
        state = state["model"]  # a recon training checkpoint (training.mum) wraps the official layout
    state, had_decoder = split_mum_state(state)
    numerics = numerics or ("autoencoder" if had_decoder else "encoder")
    config = mum_config_from_state(state, numerics)
    check_vit_config(config)
    with torch.device("meta"):
        model = VisionTransformer(config)
    check_state_dict(model.state_dict(), state, "MuM checkpoint")
    load_strict(model, state, "MuM checkpoint")
    _check_periods(model)
    logger.info("loaded MuM %s (%d-d, %d blocks, %s numerics)", config.name, config.embed_dim, config.depth, numerics)
    return model.to(device).eval()


def is_mum_state(keys) -> bool:
    """Whether state-dict ``keys`` look like MuM (axial RoPE periods stored with the encoder)."""
    return "rope_embed.periods" in set(keys)
