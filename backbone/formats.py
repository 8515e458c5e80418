"""``backbone.load``: read any supported checkpoint, detecting its format by its keys, and ``save`` recon's own.

=================  ==========================================================  =========================
format             recognised by                                               loader
=================  ==========================================================  =========================
``recon``          ``{"arch", "config", "format": "recon-backbone", "model"}``  config + strict load
``mast3r``         ``model`` holds ``enc_blocks.*`` (MASt3R / DUSt3R / CroCo)   ``croco.load_croco``
``dune``           chunked ``blocks.<c>.<i>.*`` or ``encoder.*`` / projectors   ``dune.load_dune``
``mum``            ``rope_embed.periods``                                       ``mum.load_mum``
``dinov2``         flat ``cls_token`` + ``pos_embed`` + ``blocks.{i}.*``        ``dinov2.load_dinov2``
=================  ==========================================================  =========================

A DUNE-MASt3R decoder file (``dune_backbone_name``) holds no encoder: it is refused with the name of the backbone
to load instead.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from backbone import hub
from backbone.checkpoint import CheckpointError, load_strict, safe_load, state_digest, verify_digest
from backbone.dune import DuneBackbone, is_dune_state, load_dune, strip_wrapper_prefixes
from backbone.limits import MAX_DEPTH, MAX_TOKENS, MAX_WIDTH, check_int, check_vit_config
from backbone.vit import VisionTransformer, ViTConfig

logger = logging.getLogger(__name__)

RECON_FORMAT = "recon-backbone"


def detect_format(ckpt) -> str:
    """Name of the checkpoint format of a loaded object (see the module table).

    Raises:
        CheckpointError: an unknown layout (the message lists a few of its keys) or a DUNE-MASt3R decoder file.
    """
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"a checkpoint is a dict, got {type(ckpt).__name__}")
    if "dune_backbone_name" in ckpt:
        raise CheckpointError(
            f"this is a DUNE-MASt3R decoder checkpoint: it holds no encoder weights; its backbone is "
            f"{ckpt['dune_backbone_name']!r} (load that DUNE checkpoint with backbone.load, the decoder with recon)"
        )
    if ckpt.get("format") == RECON_FORMAT:
        return "recon"
    state = ckpt["model"] if isinstance(ckpt.get("model"), Mapping) else ckpt
    keys = set(strip_wrapper_prefixes(state))
    if any(k.startswith("enc_blocks.") for k in keys):
        return "mast3r"
    if "rope_embed.periods" in keys:
        return "mum"
    if is_dune_state(keys):
        return "dune"
    if {"cls_token", "pos_embed", "blocks.0.attn.qkv.weight"} <= keys:
        return "dinov2"
    raise CheckpointError(f"unknown checkpoint layout; first keys: {sorted(map(str, keys))[:8]}")


def _resolve(path_or_name: str | os.PathLike) -> Path:
    path = Path(path_or_name).expanduser()
    if path.is_file():
        return path
    if isinstance(path_or_name, os.PathLike) or os.sep in str(path_or_name) or path.suffix:
        raise CheckpointError(f"checkpoint not found: {path}")
    return Path(hub.get_weights(str(path_or_name)))


def load(path_or_name: str | os.PathLike | Mapping, device: str | torch.device = "cpu", **kwargs) -> nn.Module:
    """Load a backbone from a checkpoint path, a weights name (``backbone.hub``) or an already loaded dict.

    Args:
        path_or_name: file path, name in the weights table (e.g. ``"dune_vitb14_448"``), or a loaded checkpoint.
        device: where the model ends up (always built on meta, materialised by the strict load).
        kwargs: passed to the family loader (e.g. ``num_heads`` for DUNE, ``numerics`` for MuM).

    Returns:
        The backbone in eval mode.
    """
    ckpt = path_or_name if isinstance(path_or_name, Mapping) else safe_load(_resolve(path_or_name))
    fmt = detect_format(ckpt)
    logger.info("checkpoint format: %s", fmt)
    if fmt == "recon":
        return _load_recon(ckpt, device)
    if fmt == "mast3r":
        from backbone.croco import load_croco

        return load_croco(ckpt, device=device)
    if fmt == "dune":
        return load_dune(ckpt, device=device, **kwargs)
    if fmt == "mum":
        from backbone.mum import load_mum

        return load_mum(ckpt, device=device, **kwargs)
    from backbone.dinov2 import load_dinov2

    return load_dinov2(ckpt, device=device)


def _family_arch(model: VisionTransformer) -> dict:
    """Constructor arguments beyond the ViT config (DUNE projectors)."""
    if isinstance(model, DuneBackbone):
        return {
            "teachers": {t: p.linear.out_features for t, p in model.projectors.items()},
            "token_types": {t: list(n.normalizers) for t, n in model.teacher_norms.items()},
            "projector_blocks": max((len(p.blocks) for p in model.projectors.values()), default=1),
        }
    return {}


def save(model: VisionTransformer, path: str | os.PathLike) -> Path:
    """Write ``{"arch", "config", "class", "family_args", "format", "model"}`` (plain data) atomically.

    ``load`` reads it back: the module is rebuilt from the stored config, so any size round-trips.

    Args:
        model: a backbone built by ``create`` or a loader.
        path: destination ``.pth``.
    """
    path = Path(path)
    arch = model.spec.name
    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(model.config).items()}
    ckpt = {
        "arch": arch,
        "config": config,
        "class": type(model).__name__,
        "family_args": _family_arch(model),
        "format": RECON_FORMAT,
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    ckpt["digest"] = state_digest(ckpt["model"], _digest_text(ckpt))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(ckpt, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def _digest_text(ckpt: Mapping) -> str:
    """Everything but the weights that a recon backbone checkpoint's digest covers (JSON text)."""
    fields = ("arch", "config", "class", "family_args", "format")
    return json.dumps({k: ckpt.get(k) for k in fields}, sort_keys=True, default=repr)


def _load_recon(ckpt: Mapping, device) -> nn.Module:
    if not isinstance(ckpt.get("config"), Mapping) or not isinstance(ckpt.get("model"), Mapping):
        raise CheckpointError("recon backbone checkpoint: 'config' and 'model' must be dicts")
    verify_digest(ckpt["model"], ckpt.get("digest"), _digest_text(ckpt), "recon backbone checkpoint")
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in ckpt["config"].items()}
    family_args = ckpt.get("family_args") or {}
    classes = {"VisionTransformer": VisionTransformer, "DuneBackbone": DuneBackbone}
    cls_name = ckpt.get("class", "VisionTransformer")
    if cls_name not in classes:
        raise CheckpointError(f"recon backbone checkpoint names an unknown class {cls_name!r}")
    try:
        vit_config = ViTConfig(**config)
        family_args = dict(family_args)
        if "token_types" in family_args:
            family_args["token_types"] = {t: tuple(v) for t, v in family_args["token_types"].items()}
    except (TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(f"recon backbone checkpoint has an invalid config: {err}") from None
    check_vit_config(vit_config)
    _check_family_args(family_args)
    with torch.device("meta"):
        model = classes[cls_name](vit_config, **family_args)
    load_strict(model, ckpt["model"], f"recon backbone checkpoint ({ckpt['arch']})")
    return model.to(device).eval()


def _check_family_args(args: Mapping) -> None:
    """Bounds of a DUNE backbone's projector arguments (teachers and their widths) read from a file."""
    unknown = sorted(set(args) - {"teachers", "token_types", "projector_blocks"})
    if unknown:
        raise CheckpointError(f"recon backbone checkpoint: unknown family arguments {unknown}")
    teachers = args.get("teachers", {})
    if not isinstance(teachers, Mapping) or len(teachers) > MAX_TOKENS:
        raise CheckpointError(f"recon backbone checkpoint: 'teachers' must map at most {MAX_TOKENS} names to widths")
    for name, width in teachers.items():
        check_int(f"teachers[{name!r}]", width, 1, MAX_WIDTH)
    if "projector_blocks" in args:
        check_int("projector_blocks", args["projector_blocks"], 1, MAX_DEPTH)
