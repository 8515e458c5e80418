"""Official checkpoint formats -> recon: one explicit key map per format, and constructor kwargs -> configs.

Key maps are prefix renames into ``ReconModel``'s modules. Every official key is either renamed, handed to
the backbone loader (encoder keys), or dropped by an entry of an explicit list that says why; any other key
is an error naming it. Missing keys are found by the strict load that follows.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from backbone.checkpoint import CheckpointError
from recon.model.decoder import DecoderConfig
from recon.model.heads import HeadConfig

logger = logging.getLogger(__name__)

# Official decoder/head prefix -> ReconModel prefix. ("dec_blocks." does not match "dec_blocks2.".)
_DECODER_RENAMES = (
    ("decoder_embed.", "decoder.decoder_embed."),
    ("dec_blocks.", "decoder.dec_blocks."),
    ("dec_blocks2.", "decoder.dec_blocks2."),
    ("dec_norm.", "decoder.dec_norm."),
    ("downstream_head1.", "head1."),
    ("downstream_head2.", "head2."),
)

# DPT quirks shared by every format that has official DPT heads (regexes on the key after any outer prefix).
_ALIAS_RE = re.compile(r"downstream_head([12])\.dpt\.scratch\.layer_rn\.([0-3])\.weight")
_DPT_DROPPED = (
    # Aliases: the official DPT registers scratch.layer{1..4}_rn a second time as the ModuleList
    # scratch.layer_rn.{0..3}; the .pth holds both names for one tensor. Checked identical, then dropped.
    (_ALIAS_RE.pattern, "alias of scratch.layer{N+1}_rn.weight"),
    # The coarsest fusion block has no skip input, so its resConfUnit1 is built but never used.
    (r"downstream_head[12]\.dpt\.scratch\.refinenet4\.resConfUnit1\..+", "unused: refinenet4 has no skip"),
)


@dataclass(frozen=True)
class KeyMap:
    """How one external format's state dict maps onto ``ReconModel``.

    Attributes:
        name: human-readable format name (used in error messages).
        prefix: outer prefix every mapped / dropped key carries (``'mast3r.'`` for DUNE-MASt3R).
        renames: ``(official prefix, recon prefix)`` pairs, after ``prefix``.
        encoder_prefixes: official prefixes (after ``prefix``) handed to the backbone loader.
        dropped: ``(regex on the full key, reason)`` of official keys that are deliberately not loaded.
        extra_renames: renames of full keys outside ``prefix`` (e.g. DUNE-MASt3R's ``norm.``).
    """

    name: str
    prefix: str
    renames: tuple[tuple[str, str], ...]
    encoder_prefixes: tuple[str, ...]
    dropped: tuple[tuple[str, str], ...]
    extra_renames: tuple[tuple[str, str], ...] = ()


MAST3R_PTH = KeyMap(
    name="MASt3R/DUSt3R release .pth",
    prefix="",
    renames=_DECODER_RENAMES,
    encoder_prefixes=("patch_embed.", "enc_blocks.", "enc_norm."),
    dropped=(
        # CroCo's masked-image-modelling token: created by the constructor, saved, unused at inference.
        (r"mask_token", "CroCo pretraining mask token, unused"),
        *_DPT_DROPPED,
    ),
)

# The Hugging Face export (safetensors) has the same keys minus the layer_rn aliases (safetensors drops
# shared tensors); the alias regex above simply matches nothing.
MAST3R_HF = KeyMap(**{**MAST3R_PTH.__dict__, "name": "MASt3R/DUSt3R Hugging Face safetensors"})

DUNE_MAST3R = KeyMap(
    name="DUNE-MASt3R decoder .pth",
    prefix="mast3r.",
    renames=_DECODER_RENAMES,
    encoder_prefixes=(),
    dropped=(
        (r"mast3r\.mask_token", "CroCo pretraining mask token, unused"),
        # The inner AsymmetricMASt3R still builds (and the file stores) its own CroCo encoder; DUNE replaces
        # it, so these weights are never used by the official forward either.
        (r"mast3r\.patch_embed\..+", "inner MASt3R encoder, replaced by DUNE"),
        (r"mast3r\.enc_blocks\..+", "inner MASt3R encoder, replaced by DUNE"),
        (r"mast3r\.enc_norm\..+", "inner MASt3R encoder, replaced by DUNE"),
        # Normalisation constants of the wrapper (not in the released-format fixture, allowed if present):
        # our DUNE backbone normalises its [0, 1] input itself with the same ImageNet values.
        (r"imagenet_(mean|std)", "ImageNet constants, owned by the backbone"),
        *((f"mast3r\\.{pattern}", reason) for pattern, reason in _DPT_DROPPED),
    ),
    # The wrapper's trainable LayerNorm (eps 1e-5) on DUNE's pre-norm patch tokens.
    extra_renames=(("norm.", "adapter."),),
)


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor], keymap: KeyMap
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split an official state dict into recon keys and encoder keys, following ``keymap``.

    Returns:
        ``(mapped, encoder)``: ``mapped`` uses ReconModel names (``decoder.*``, ``head1.*``, ``adapter.*``);
        ``encoder`` holds the official encoder keys unchanged (for the backbone loader).

    Raises:
        CheckpointError: keys that no rule covers (named), or an alias that differs from its target.
    """
    dropped = [re.compile(pattern) for pattern, _ in keymap.dropped]
    mapped, encoder, unmapped = {}, {}, []
    for key, value in state_dict.items():
        if any(r.fullmatch(key) for r in dropped):
            continue
        new = _rename(key, keymap)
        rest = key[len(keymap.prefix) :] if key.startswith(keymap.prefix) else ""
        if new is not None:
            mapped[new] = value
        elif keymap.encoder_prefixes and rest.startswith(keymap.encoder_prefixes):
            encoder[rest] = value
        else:
            unmapped.append(key)
    if unmapped:
        more = f" ... (+{len(unmapped) - 12} more)" if len(unmapped) > 12 else ""
        shown = ", ".join(sorted(unmapped)[:12]) + more
        raise CheckpointError(f"{keymap.name}: {len(unmapped)} unexpected key(s) that no rule maps: {shown}")
    _check_aliases(state_dict, keymap.prefix)
    return mapped, encoder


def _rename(key: str, keymap: KeyMap) -> str | None:
    for old, new in keymap.extra_renames:
        if key.startswith(old):
            return new + key[len(old) :]
    if not key.startswith(keymap.prefix):
        return None
    rest = key[len(keymap.prefix) :]
    for old, new in keymap.renames:
        if rest.startswith(old):
            return new + rest[len(old) :]
    return None


def official_name(key: str, keymap: KeyMap) -> str:
    """Inverse of the renames: a ReconModel key -> the key the official file uses (for error messages)."""
    for old, new in keymap.extra_renames:
        if key.startswith(new):
            return old + key[len(new) :]
    for old, new in keymap.renames:
        if key.startswith(new):
            return keymap.prefix + old + key[len(new) :]
    return key


def _check_aliases(state_dict: Mapping[str, torch.Tensor], prefix: str) -> None:
    """The ``scratch.layer_rn.N`` aliases we drop must hold the same values as ``scratch.layer{N+1}_rn``."""
    for key, value in state_dict.items():
        m = _ALIAS_RE.fullmatch(key[len(prefix) :]) if key.startswith(prefix) else None
        if not m:
            continue
        target = f"{prefix}downstream_head{m.group(1)}.dpt.scratch.layer{int(m.group(2)) + 1}_rn.weight"
        ref = state_dict.get(target)
        if ref is None:
            raise CheckpointError(f"{key} is present but its original {target} is missing")
        if value is ref:
            continue
        same_storage = (
            value.shape == ref.shape
            and value.stride() == ref.stride()
            and value.untyped_storage().data_ptr() == ref.untyped_storage().data_ptr()
            and value.storage_offset() == ref.storage_offset()
        )
        if not same_storage and (value.shape != ref.shape or not torch.equal(value, ref)):
            raise CheckpointError(f"{key} should be an alias of {target} but holds different values")


# Constructor keywords that do not change the inference architecture, and why they are ignored.
_IGNORED_KWARGS = {
    "patch_embed_cls": "ManyAR_PatchEmbed / PatchEmbedDust3R only differ in the landscape check",
    "landscape_only": "recon always predicts in the image's own orientation (official load_model forces False)",
    "freeze": "training-time freezing",
    "mask_ratio": "CroCo pretraining only",
}
# CroCoNet / AsymmetricCroCo3DStereo / AsymmetricMASt3R constructor defaults that matter for inference.
_CROCO_DEFAULTS = {
    "img_size": 224,
    "patch_size": 16,
    "enc_embed_dim": 768,
    "enc_depth": 12,
    "enc_num_heads": 12,
    "dec_embed_dim": 512,
    "dec_depth": 8,
    "dec_num_heads": 16,
    "mlp_ratio": 4,
    "norm_im2_in_dec": True,
    "pos_embed": "cosine",
    "output_mode": "pts3d",
    "head_type": "linear",
    "depth_mode": ("exp", -math.inf, math.inf),
    "conf_mode": ("exp", 1, math.inf),
}
_ENCODER_KWARGS = ("enc_embed_dim", "enc_depth", "enc_num_heads")
_KNOWN_CLASSES = ("AsymmetricMASt3R", "AsymmetricCroCo3DStereo")


def configs_from_constructor(class_name: str, kwargs: Mapping) -> tuple[DecoderConfig, HeadConfig, int, dict]:
    """Official constructor call -> ``(DecoderConfig, HeadConfig, image_size, encoder kwargs)``.

    Args:
        class_name: ``AsymmetricMASt3R`` or ``AsymmetricCroCo3DStereo`` (DUSt3R).
        kwargs: the keyword arguments (from ``parse_constructor`` or an HF ``config.json``), any order.

    Raises:
        CheckpointError: unknown class, unknown keyword, or a value recon does not implement.
    """
    if class_name not in _KNOWN_CLASSES:
        raise CheckpointError(f"unsupported model class {class_name!r}; expected one of {_KNOWN_CLASSES}")
    mast3r = class_name == "AsymmetricMASt3R"
    known = set(_CROCO_DEFAULTS) | set(_IGNORED_KWARGS)
    if mast3r:
        known |= {"two_confs", "desc_conf_mode", "desc_mode"}
    unknown = sorted(set(kwargs) - known)
    if unknown:
        raise CheckpointError(f"{class_name}: unsupported constructor keyword(s) {unknown}")
    kw = {**_CROCO_DEFAULTS, **kwargs}
    if not str(kw["pos_embed"]).startswith("RoPE"):
        raise CheckpointError(f"pos_embed={kw['pos_embed']!r}: only RoPE decoders exist in DUSt3R/MASt3R releases")
    if not kw["norm_im2_in_dec"]:
        raise CheckpointError("norm_im2_in_dec=False is not supported (every release uses True)")
    decoder = DecoderConfig(
        embed_dim=int(kw["dec_embed_dim"]),
        depth=int(kw["dec_depth"]),
        num_heads=int(kw["dec_num_heads"]),
        mlp_ratio=float(kw["mlp_ratio"]),
        rope_base=float(str(kw["pos_embed"])[4:]),
    )
    head_type, output_mode = kw["head_type"], kw["output_mode"]
    conf_mode = tuple(kw["conf_mode"])
    if mast3r:
        if head_type != "catmlp+dpt" or not output_mode.startswith("pts3d+desc"):
            raise CheckpointError(f"AsymmetricMASt3R head {head_type!r} / {output_mode!r} is not supported")
        head = HeadConfig(
            kind="catmlp+dpt",
            desc_dim=int(output_mode[len("pts3d+desc") :]),
            two_confs=bool(kw.get("two_confs", False)),
            depth_mode=tuple(kw["depth_mode"]),
            conf_mode=conf_mode,
            desc_conf_mode=tuple(kw.get("desc_conf_mode") or conf_mode),
            desc_mode=str(kw.get("desc_mode", "norm")),
        )
    else:
        if head_type not in ("dpt", "linear") or output_mode != "pts3d":
            raise CheckpointError(f"DUSt3R head {head_type!r} / {output_mode!r} is not supported")
        head = HeadConfig(kind=head_type, depth_mode=tuple(kw["depth_mode"]), conf_mode=conf_mode)
    img_size = kw["img_size"]
    image_size = int(max(img_size) if isinstance(img_size, (tuple, list)) else img_size)
    encoder_kwargs = {k: kw[k] for k in (*_ENCODER_KWARGS, "patch_size", "img_size", "mlp_ratio", "pos_embed")}
    return decoder, head, image_size, encoder_kwargs
