"""CroCo ViT encoder: the image encoder of CroCo, DUSt3R and MASt3R (``croco_vitl16``).

No cls token, no absolute position embedding: positions come from RoPE2D (base 100) on the integer (y, x) patch
grid. Input normalisation mean = std = 0.5 (images in [-1, 1]); output = tokens after ``enc_norm``.

Official layout (inside a MASt3R / DUSt3R / CroCo state dict): ``patch_embed.proj.*``, ``enc_blocks.{i}.*``,
``enc_norm.*``; the other keys (decoder, heads, ``mask_token``) belong to the decoder and are left to it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

from torch import Tensor

from backbone.checkpoint import CheckpointError, check_state_dict, check_weights, load_strict
from backbone.limits import (
    MAX_DEPTH,
    MAX_WIDTH,
    MLP_RATIO_RANGE,
    PATCH_RANGE,
    check_float,
    check_heads,
    check_int,
    check_vit_config,
    count_blocks,
    image_size_of,
    rope_base_of,
)
from backbone.registry import register
from backbone.vit import VisionTransformer, ViTConfig, apply_overrides

logger = logging.getLogger(__name__)

CROCO_VITL16 = ViTConfig(
    name="croco_vitl16",
    patch_size=16,
    embed_dim=1024,
    depth=24,
    num_heads=16,
    norm_eps=1e-6,
    rope="croco",
    rope_base=100.0,
    mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5),
    image_size=512,
)

# CroCoNet's constructor defaults: a MASt3R/DUSt3R constructor string that omits an encoder argument gets these
# (not ViT-L's), so they fill the gaps before mapping.
CROCONET_DEFAULTS = {
    "enc_embed_dim": 768,
    "enc_depth": 12,
    "enc_num_heads": 12,
    "patch_size": 16,
    "mlp_ratio": 4,
    "pos_embed": "cosine",
    "img_size": 224,
}

# Official MASt3R/DUSt3R/CroCo key prefix -> our key prefix (the rest of the key is identical).
MAST3R_ENCODER_KEY_MAP = {
    "patch_embed.proj.": "patch_embed.proj.",
    "enc_blocks.": "blocks.",
    "enc_norm.": "norm.",
}
# Keys of the full model that look encoder-related but are not the encoder (decoder-side, unused at inference).
_ENCODER_KEY = re.compile(r"^(patch_embed\.|enc_blocks\.|enc_norm\.)")


@register("croco_vitl16")
def croco_vitl16(**overrides) -> VisionTransformer:
    """MASt3R's CroCo ViT-L/16 encoder (1024-d, 24 blocks, 16 heads, RoPE100); other sizes via overrides."""
    return VisionTransformer(apply_overrides(CROCO_VITL16, overrides))


def croco_overrides_from_mast3r(kwargs: Mapping) -> dict:
    """Map parsed ``AsymmetricMASt3R(...)`` / ``AsymmetricCroCo3DStereo(...)`` kwargs to ``create()`` overrides.

    Args:
        kwargs: constructor keyword arguments (``backbone.checkpoint.parse_constructor(...)[1]``).

    Returns:
        ``{"embed_dim", "depth", "num_heads", "patch_size", "mlp_ratio", "rope_base", "image_size"}`` for
        ``backbone.create("croco_vitl16", **overrides)``.

    Raises:
        CheckpointError: a value out of the bounds of ``backbone.limits`` or of the wrong type, or a position
            embedding other than RoPE (MASt3R/DUSt3R never use the cosine one, which we do not implement).
    """
    kw = {**CROCONET_DEFAULTS, **kwargs}
    # Values from a file: bounded and type-checked before anything is built (backbone.limits).
    dim = check_int("enc_embed_dim", kw["enc_embed_dim"], 1, MAX_WIDTH)
    check_heads("enc_", dim, kw["enc_num_heads"], rope=True)
    return {
        "embed_dim": dim,
        "depth": check_int("enc_depth", kw["enc_depth"], 1, MAX_DEPTH),
        "num_heads": int(kw["enc_num_heads"]),
        "patch_size": check_int("patch_size", kw["patch_size"], *PATCH_RANGE),
        "mlp_ratio": check_float("mlp_ratio", kw["mlp_ratio"], *MLP_RATIO_RANGE, lo_open=True),
        "rope_base": rope_base_of(kw["pos_embed"]),
        "image_size": image_size_of(kw["img_size"]),
    }


def map_mast3r_encoder_keys(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], set[str]]:
    """Select and rename the encoder keys of a full MASt3R/DUSt3R/CroCo state dict.

    Returns:
        (our state dict, the set of official keys consumed).
    """
    ours, used = {}, set()
    for key, value in state_dict.items():
        if not _ENCODER_KEY.match(key):
            continue
        for theirs, mine in MAST3R_ENCODER_KEY_MAP.items():
            if key.startswith(theirs):
                ours[mine + key[len(theirs) :]] = value
                used.add(key)
                break
    return ours, used


def _to_official(key: str) -> str:
    """Our encoder key -> the official MASt3R name (inverse of ``MAST3R_ENCODER_KEY_MAP``)."""
    for theirs, mine in MAST3R_ENCODER_KEY_MAP.items():
        if key.startswith(mine):
            return theirs + key[len(mine) :]
    raise KeyError(key)


def load_mast3r_encoder(encoder: VisionTransformer, state_dict: Mapping[str, Tensor]) -> set[str]:
    """Load the encoder part of a full MASt3R / DUSt3R / CroCo state dict into ``encoder`` strictly.

    Args:
        encoder: a ``croco_vitl16`` instance of the right size (see ``croco_overrides_from_mast3r``).
        state_dict: the checkpoint's full ``model`` state dict (decoder and head keys are ignored here).

    Returns:
        The official keys consumed (``patch_embed.proj.*``, ``enc_blocks.*``, ``enc_norm.*``).

    Raises:
        CheckpointError: missing, unexpected (e.g. an extra ``enc_blocks.{i}``) or mis-shaped encoder keys.
    """
    ours, used = map_mast3r_encoder_keys(state_dict)
    if not used:
        raise CheckpointError("state dict has no CroCo encoder keys (patch_embed.proj.*, enc_blocks.*, enc_norm.*)")
    # Check under the official names so that an error names the keys as they are in the file.
    expected = {_to_official(k): v for k, v in encoder.state_dict().items()}
    check_state_dict(expected, {k: state_dict[k] for k in used}, "MASt3R encoder checkpoint")
    check_weights({k: state_dict[k] for k in used}, "MASt3R encoder checkpoint")  # named as in the file
    load_strict(encoder, ours, "MASt3R encoder")
    return used


def load_croco(checkpoint: Mapping, device: str = "cpu") -> VisionTransformer:
    """Build and load the encoder of a MASt3R/DUSt3R release checkpoint ``{'model', 'args'}``.

    The architecture comes from the parsed constructor string ``args.model`` (never evaluated); without it,
    from the weight shapes (head count = D / 64, as in every released CroCo model).
    """
    import torch

    from backbone.checkpoint import parse_constructor

    state = checkpoint.get("model", checkpoint)
    args = checkpoint.get("args")
    text = getattr(args, "model", None) if args is not None else None
    if text:
        _, kwargs = parse_constructor(text)
        overrides = croco_overrides_from_mast3r(kwargs)
    else:
        overrides = croco_overrides_from_weights(state)
    check_vit_config(apply_overrides(CROCO_VITL16, overrides))
    with torch.device("meta"):
        encoder = croco_vitl16(**overrides)
    load_mast3r_encoder(encoder, state)
    return encoder.to(device).eval()


def croco_overrides_from_weights(state_dict: Mapping[str, Tensor]) -> dict:
    """Infer ``embed_dim``, ``depth``, ``patch_size`` and ``num_heads`` (= D/64) from encoder weight shapes."""
    try:
        dim, _, patch, _ = state_dict["patch_embed.proj.weight"].shape
    except KeyError:
        raise CheckpointError("no 'patch_embed.proj.weight' key: not a CroCo/MASt3R state dict") from None
    depth = count_blocks(state_dict, "enc_blocks.")
    logger.info("no constructor string: assuming head dim 64 (%d heads) for a %d-d CroCo encoder", dim // 64, dim)
    return {"embed_dim": dim, "depth": depth, "patch_size": patch, "num_heads": max(1, dim // 64)}
