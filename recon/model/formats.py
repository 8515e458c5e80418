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
from backbone.limits import (
    MAX_DEPTH,
    MAX_DESC_DIM,
    MAX_WIDTH,
    MLP_RATIO_RANGE,
    check_choice,
    check_float,
    check_heads,
    check_int,
    image_size_of,
    rope_base_of,
)
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
_HEAD_TYPES = {"AsymmetricMASt3R": ("catmlp+dpt",), "AsymmetricCroCo3DStereo": ("dpt", "linear")}
# Post-processing modes recon.model.heads.postprocess implements.
DEPTH_MODES = ("exp", "linear", "square")
CONF_MODES = ("exp", "sigmoid")
DESC_MODES = ("norm", "none")


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
    rope_base = rope_base_of(kw["pos_embed"])
    if kw["norm_im2_in_dec"] is not True:
        raise CheckpointError("norm_im2_in_dec=False is not supported (every release uses True)")
    # Every value below comes from the file: bounded and type-checked before anything is built.
    dec_dim = check_int("dec_embed_dim", kw["dec_embed_dim"], 1, MAX_WIDTH)
    check_heads("dec_", dec_dim, kw["dec_num_heads"], rope=True)
    head_type = check_choice("head_type", kw["head_type"], _HEAD_TYPES[class_name])
    dec_depth = check_int("dec_depth", kw["dec_depth"], 10 if "dpt" in head_type else 1, MAX_DEPTH)
    decoder = DecoderConfig(
        embed_dim=dec_dim,
        depth=dec_depth,
        num_heads=int(kw["dec_num_heads"]),
        mlp_ratio=check_float("mlp_ratio", kw["mlp_ratio"], *MLP_RATIO_RANGE, lo_open=True),
        rope_base=rope_base,
    )
    output_mode = kw["output_mode"]
    conf_mode = check_mode("conf_mode", kw["conf_mode"], CONF_MODES)
    depth_mode = check_mode("depth_mode", kw["depth_mode"], DEPTH_MODES)
    if depth_mode[1:] != (-math.inf, math.inf):
        raise CheckpointError(f"depth_mode={depth_mode!r}: bounded depth modes are not supported (nor officially)")
    if mast3r:
        m = re.fullmatch(r"pts3d\+desc(\d+)", output_mode) if isinstance(output_mode, str) else None
        if m is None:
            raise CheckpointError(
                f"AsymmetricMASt3R output_mode={output_mode!r} is not supported (e.g. 'pts3d+desc24')"
            )
        two_confs = kw.get("two_confs", False)
        if not isinstance(two_confs, bool):
            raise CheckpointError(f"two_confs={two_confs!r} must be True or False")
        head = HeadConfig(
            kind="catmlp+dpt",
            desc_dim=check_int("descriptor width", int(m.group(1)), 1, MAX_DESC_DIM),
            two_confs=two_confs,
            depth_mode=depth_mode,
            conf_mode=conf_mode,
            desc_conf_mode=check_mode("desc_conf_mode", kw.get("desc_conf_mode") or conf_mode, CONF_MODES),
            desc_mode=check_choice("desc_mode", kw.get("desc_mode", "norm"), DESC_MODES),
        )
    else:
        if output_mode != "pts3d":
            raise CheckpointError(f"DUSt3R output_mode={output_mode!r} is not supported (expected 'pts3d')")
        head = HeadConfig(kind=head_type, depth_mode=depth_mode, conf_mode=conf_mode)
    image_size = image_size_of(kw["img_size"])
    encoder_kwargs = {k: kw[k] for k in (*_ENCODER_KWARGS, "patch_size", "img_size", "mlp_ratio", "pos_embed")}
    return decoder, head, image_size, encoder_kwargs


def check_mode(name: str, mode, names: tuple[str, ...]) -> tuple:
    """An official ``(name, vmin, vmax)`` post-processing mode, checked (a bare ``'exp'`` is not a mode)."""
    if not isinstance(mode, (tuple, list)) or len(mode) != 3 or mode[0] not in names:
        raise CheckpointError(f"{name}={mode!r} must be a tuple (name, vmin, vmax) with name in {list(names)}")
    vmin, vmax = mode[1:]
    for v in (vmin, vmax):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
            raise CheckpointError(f"{name}={mode!r}: vmin and vmax must be numbers (inf allowed)")
    if not vmin < vmax or vmin == math.inf:
        raise CheckpointError(f"{name}={mode!r}: needs vmin < vmax")
    if mode[0] == "sigmoid" and not math.isfinite(vmax - vmin):
        raise CheckpointError(f"{name}={mode!r}: a sigmoid mode needs finite bounds")
    return (mode[0], vmin, vmax)
