"""Bounds on what a checkpoint file may ask for, checked before any module or tensor is built.

A checkpoint carries its own architecture (a constructor string, a JSON config, or sizes read off its weight
shapes). Those values come from a file, so they are user input: ``depth=100000`` would spend minutes building
modules, ``img_size=1e9`` would resize every photo to a billion pixels, ``num_heads=0`` divides by zero,
``pos_embed='RoPEnan'`` gives NaN outputs, and a string where a tuple belongs is read letter by letter. Every
such value is checked here against generous bounds (several times the largest released model) and refused with
one ``CheckpointError`` line that names the field and the allowed range.

Released sizes, for scale: CroCo ViT-L/16 (1024-d, 24 blocks, 16 heads), DINOv2 ViT-g/14 (1536-d, 40 blocks),
MASt3R decoder (768-d, 12 blocks, 12 heads), images of 224 to 518 pixels.
"""

from __future__ import annotations

import logging
import math
import numbers
import re

from backbone.checkpoint import CheckpointError

logger = logging.getLogger(__name__)

MAX_DEPTH = 128
"""Transformer blocks (encoder or decoder); the largest release has 40."""
MAX_WIDTH = 8192
"""Token width; the largest release has 1536."""
MAX_HEADS = 256
"""Attention heads."""
PATCH_RANGE = (1, 64)
"""Patch side in pixels (releases: 14, 16)."""
IMAGE_RANGE = (1, 4096)
"""Native image size in pixels (releases: 224 to 518); images are resized to it, so it bounds memory."""
MLP_RATIO_RANGE = (0.0, 16.0)
"""Feed-forward width relative to the token width (releases: 4)."""
ROPE_BASE_RANGE = (1.0, 1e6)
"""RoPE frequency base (releases: 100)."""
MAX_TOKENS = 64
"""Register / prefix tokens (releases: 4)."""
MAX_POS_GRID = 512
"""Side of a learned position-embedding grid (releases: 37)."""
MAX_DESC_DIM = 1024
"""Local descriptor width (releases: 24)."""


def check_int(name: str, value, lo: int, hi: int) -> int:
    """``value`` as an int in ``[lo, hi]``; a bool, float, string or out-of-range value raises ``CheckpointError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise CheckpointError(f"{name}={value!r} must be an integer in [{lo}, {hi}]")
    if not lo <= int(value) <= hi:
        raise CheckpointError(f"{name}={value!r} is out of range: must be in [{lo}, {hi}]")
    return int(value)


def check_float(name: str, value, lo: float, hi: float, *, lo_open: bool = False) -> float:
    """``value`` as a finite float in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``); NaN / inf / strings raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise CheckpointError(f"{name}={value!r} must be a number in {'(' if lo_open else '['}{lo}, {hi}]")
    v = float(value)
    if not math.isfinite(v) or v > hi or v < lo or (lo_open and v == lo):
        raise CheckpointError(f"{name}={value!r} is out of range: must be in {'(' if lo_open else '['}{lo}, {hi}]")
    return v


def check_choice(name: str, value, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise CheckpointError(f"{name}={value!r} is not supported: expected one of {sorted(choices)}")
    return value


def check_heads(prefix: str, dim: int, heads: int, *, rope: bool) -> None:
    """``heads`` divides ``dim``; with RoPE2D the head width must also be divisible by 4 (two axes, rotate-half)."""
    check_int(f"{prefix}num_heads", heads, 1, MAX_HEADS)
    if dim % heads:
        raise CheckpointError(f"{prefix}embed_dim={dim} is not divisible by {prefix}num_heads={heads}")
    if rope and (dim // heads) % 4:
        raise CheckpointError(
            f"{prefix}embed_dim / {prefix}num_heads = {dim // heads} must be divisible by 4 for the 2D RoPE"
        )


def check_vit_config(config) -> None:
    """Bounds of a ``backbone.vit.ViTConfig`` (from a recon checkpoint or read off weight shapes)."""
    c = config
    dim = check_int("embed_dim", c.embed_dim, 1, MAX_WIDTH)
    check_int("depth", c.depth, 1, MAX_DEPTH)
    check_heads("", dim, c.num_heads, rope=c.rope == "croco")
    if c.rope == "axial" and (dim // c.num_heads) % 4:
        raise CheckpointError(f"embed_dim / num_heads = {dim // c.num_heads} must be divisible by 4 for axial RoPE")
    check_int("patch_size", c.patch_size, *PATCH_RANGE)
    check_int("image_size", c.image_size, *IMAGE_RANGE)
    check_float("mlp_ratio", c.mlp_ratio, *MLP_RATIO_RANGE, lo_open=True)
    check_float("norm_eps", c.norm_eps, 0.0, 1.0, lo_open=True)
    check_float("rope_base", c.rope_base, *ROPE_BASE_RANGE)
    check_int("num_register_tokens", c.num_register_tokens, 0, MAX_TOKENS)
    if c.pos_embed_grid is not None:
        check_int("pos_embed_grid", c.pos_embed_grid, 1, MAX_POS_GRID)
    if c.layer_scale_init is not None:
        check_float("layer_scale_init", c.layer_scale_init, 0.0, 10.0)
    check_choice("rope", str(c.rope), {"croco", "axial", "None"})
    check_choice("ffn_layer", c.ffn_layer, {"mlp", "swiglu"})
    for name in ("mean", "std"):
        values = getattr(c, name)
        if not isinstance(values, (tuple, list)) or len(values) != 3:
            raise CheckpointError(f"{name}={values!r} must be 3 numbers (RGB)")
        for v in values:
            check_float(name, v, 1e-6 if name == "std" else -10.0, 10.0)


def rope_base_of(pos_embed) -> float:
    """``'RoPE100'`` -> 100.0; anything else (``'cosine'``, ``'RoPEnan'``, ``'RoPE-5'``, a number) is refused."""
    m = re.fullmatch(r"RoPE(\d+(?:\.\d+)?)", pos_embed) if isinstance(pos_embed, str) else None
    if m is None:
        raise CheckpointError(
            f"pos_embed={pos_embed!r} is not supported: only RoPE position embeddings like 'RoPE100' are implemented"
        )
    return check_float("RoPE base", float(m.group(1)), *ROPE_BASE_RANGE)


def image_size_of(img_size) -> int:
    """An official ``img_size`` (an int, or ``(H, W)``) -> its long side, bounded by ``IMAGE_RANGE``."""
    if isinstance(img_size, (tuple, list)):
        if len(img_size) != 2:
            raise CheckpointError(f"img_size={img_size!r} must be an integer or a pair of integers")
        return max(check_int("img_size", v, *IMAGE_RANGE) for v in img_size)
    return check_int("img_size", img_size, *IMAGE_RANGE)


def count_blocks(keys, prefix: str) -> int:
    """Number of blocks ``<prefix><i>.*`` (1 + the largest index), bounded by ``MAX_DEPTH`` before anything is built.

    Args:
        keys: state-dict keys.
        prefix: e.g. ``"blocks."`` or ``"enc_blocks."``.
    """
    indices = set()
    for key in keys:
        if key.startswith(prefix):
            m = re.match(r"(\d+)\.", key[len(prefix) :])
            if m is None:
                raise CheckpointError(f"malformed block key {key!r}: expected {prefix}<index>.<name>")
            indices.add(int(m.group(1)))
    if not indices:
        raise CheckpointError(f"no {prefix}<index>.* keys: not a ViT state dict")
    return check_int(f"number of {prefix}* blocks", 1 + max(indices), 1, MAX_DEPTH)
