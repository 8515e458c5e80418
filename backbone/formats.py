"""The one checkpoint pipeline: name or path -> file -> ``(object, format)`` -> a loader chosen by the format.

``backbone.hub.resolve`` turns a name or path into a file; ``read(path)`` loads it safely (``checkpoint.safe_load``:
``weights_only=True`` and an allow-list; constructor strings are parsed with ``ast``, never evaluated) and names its
layout with ``detect_format``, the only format detector: ``load`` here builds backbones from it,
``recon.model.loading.load_model`` models, and ``verify`` (``recon weights verify``) checks a file against its
weights-table entry.

==================  ===============================================================================  ============
format              recognised by                                                                    loaded by
==================  ===============================================================================  ============
``recon-model``     ``{"arch", "config", "format": "recon.model/N", "model"}`` (.pth, or .safetensors  load_model
                    metadata)
``recon-backbone``  ``{"arch", "config", "format": "recon-backbone", "model"}``                      ``load``
``mast3r``          ``{"model", "args": Namespace(model="AsymmetricMASt3R(...)")}``                   both
``dust3r``          ``{"model", "args": Namespace(model="AsymmetricCroCo3DStereo(...)")}``            both
``croco``           CroCo encoder keys ``enc_blocks.*`` without a constructor string                 ``load``
``hf``              ``model.safetensors`` + ``config.json`` in one folder (the folder or the file)     both
``dune_mast3r``     ``{"dune_backbone_name", "mast3r_model_str", "model"}`` (a decoder, no encoder)   load_model
``mum``             a raw state dict with ``rope_embed.periods`` (``MuM_ViTLarge*.pth``)               ``load``
``dune``            chunked ``blocks.<c>.<i>.*`` or ``projectors.*`` (``{"model", "args"}`` or raw)    ``load``
``dinov2``          a raw state dict with ``cls_token``, ``pos_embed``, ``blocks.0.attn.qkv.weight``    ``load``
==================  ===============================================================================  ============

``module.`` / ``_orig_mod.`` wrapper prefixes are ignored, and a ``{"model": state}`` wrapper around a raw state
dict (a recon training checkpoint) is looked through.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from backbone import hub
from backbone.checkpoint import CheckpointError, load_strict, parse_constructor, safe_load, state_digest, verify_digest
from backbone.croco import load_croco
from backbone.dinov2 import load_dinov2
from backbone.download import WeightsIntegrityError, check_file
from backbone.dune import DuneBackbone, is_dune_state, load_dune, strip_wrapper_prefixes
from backbone.fileio import atomic_file, sha256_file
from backbone.limits import MAX_DEPTH, MAX_TOKENS, MAX_WIDTH, check_int, check_vit_config
from backbone.mum import is_mum_state, load_mum
from backbone.vit import VisionTransformer, ViTConfig

logger = logging.getLogger(__name__)

RECON_FORMAT = "recon-backbone"  # the "format" value of recon's backbone checkpoints
RECON_MODEL_PREFIX = "recon.model/"  # the prefix of the "format" value of recon's model checkpoints

FORMATS: dict[str, str] = {
    "recon-model": "recon model checkpoint {'arch', 'config', 'format': 'recon.model/N', 'model'}",
    "recon-backbone": "recon backbone checkpoint {'arch', 'config', 'format': 'recon-backbone', 'model'}",
    "mast3r": "MASt3R release {'model', 'args': Namespace(model='AsymmetricMASt3R(...)')}",
    "dust3r": "DUSt3R release {'model', 'args': Namespace(model='AsymmetricCroCo3DStereo(...)')}",
    "croco": "CroCo encoder weights (enc_blocks.*) without a constructor string",
    "hf": "Hugging Face export (model.safetensors + config.json)",
    "dune_mast3r": "DUNE-MASt3R decoder {'dune_backbone_name', 'mast3r_model_str', 'model'}",
    "mum": "MuM raw state dict (rope_embed.periods)",
    "dune": "DUNE encoder (chunked blocks.<c>.<i>.* or projectors.*)",
    "dinov2": "DINOv2 hub state dict (cls_token, pos_embed, blocks.<i>.*)",
}
"""Every layout ``detect_format`` recognises, with what recognises it."""

RELEASE_CLASSES = {"AsymmetricMASt3R": "mast3r", "AsymmetricCroCo3DStereo": "dust3r"}
"""Constructor classes of the MASt3R / DUSt3R releases -> format."""


def detect_format(ckpt) -> str:
    """The format (a key of ``FORMATS``) of a loaded checkpoint, from its keys and constructor string.

    Raises:
        CheckpointError: not a dict, a layout that lacks one of its format's keys (named), a constructor string
            that is not a plain call or names another class, or an unknown layout (its top-level keys listed).
    """
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"a checkpoint is a dict, got {type(ckpt).__name__}")
    if {"dune_backbone_name", "mast3r_model_str"} & set(ckpt):
        return _require(ckpt, "dune_mast3r", ("dune_backbone_name", "mast3r_model_str", "model"))
    tag = str(ckpt.get("format", ""))
    if tag == RECON_FORMAT:
        return _require(ckpt, "recon-backbone", ("arch", "config", "model"))
    if tag.startswith(RECON_MODEL_PREFIX):
        return _require(ckpt, "recon-model", ("arch", "config", "model"))
    text = constructor_string(ckpt)
    if text is not None:
        name = parse_constructor(text)[0]
        if name not in RELEASE_CLASSES:
            raise CheckpointError(f"unsupported model class {name!r}; expected one of {tuple(RELEASE_CLASSES)}")
        return _require(ckpt, RELEASE_CLASSES[name], ("model",))
    state = ckpt["model"] if isinstance(ckpt.get("model"), Mapping) else ckpt
    keys = set(strip_wrapper_prefixes({k: None for k in state if isinstance(k, str)}))
    if any(k.startswith("enc_blocks.") for k in keys):
        return "croco"
    if is_mum_state(keys):
        return "mum"
    if is_dune_state(keys):
        return "dune"
    if {"cls_token", "pos_embed", "blocks.0.attn.qkv.weight"} <= keys:
        return "dinov2"
    shown = sorted(str(k) for k in ckpt)[:10]
    raise CheckpointError(
        f"unknown checkpoint layout with top-level keys {shown}; expected one of: " + "; ".join(FORMATS.values())
    )


def _require(ckpt: Mapping, fmt: str, keys: tuple[str, ...]) -> str:
    missing = [k for k in keys if k not in ckpt]
    if missing:
        raise CheckpointError(f"a {FORMATS[fmt]} lacks the top-level keys {missing} (has {sorted(map(str, ckpt))[:8]})")
    if not isinstance(ckpt["model"], Mapping):
        raise CheckpointError(f"a {FORMATS[fmt]}: 'model' must be a state dict, got {type(ckpt['model']).__name__}")
    return fmt


def constructor_string(ckpt: Mapping) -> str | None:
    """The constructor string ``args.model`` of a MASt3R / DUSt3R / CroCo release, or None when it has none."""
    args = ckpt.get("args")
    text = args.get("model") if isinstance(args, Mapping) else getattr(args, "model", None)
    return text if isinstance(text, str) else None


def read(path: str | os.PathLike) -> tuple[object, str]:
    """Load a checkpoint file or Hugging Face folder safely -> ``(object, format)``.

    A recon ``.safetensors`` becomes the dict of its ``.pth`` twin (metadata + ``model``); a Hugging Face export
    becomes ``{"model": state dict, "config": config.json}``; anything else is what ``safe_load`` returns.

    Raises:
        CheckpointError: missing, unreadable or unsafe file, or a layout ``detect_format`` refuses.
    """
    path = Path(path)
    if path.is_dir():
        weights, config = path / "model.safetensors", path / "config.json"
        if not weights.is_file() or not config.is_file():
            raise CheckpointError(f"{path} is a folder without model.safetensors + config.json (Hugging Face layout)")
        return {"model": safe_load(weights), "config": _read_json(config)}, "hf"
    if path.suffix == ".safetensors" and path.is_file():
        meta = _safetensors_metadata(path)
        if str(meta.get("format", "")).startswith(RECON_MODEL_PREFIX):
            try:
                config = json.loads(meta.get("config", ""))
            except ValueError as err:
                raise CheckpointError(f"{path}: the recon metadata 'config' is not valid JSON ({err})") from None
            ckpt = {"arch": meta.get("arch"), "config": config, "format": meta["format"], "model": safe_load(path)}
            return {**ckpt, "digest": meta.get("digest")}, "recon-model"
        if (path.parent / "config.json").is_file():
            return {"model": safe_load(path), "config": _read_json(path.parent / "config.json")}, "hf"
    ckpt = safe_load(path)
    return ckpt, detect_format(ckpt)


def _safetensors_metadata(path: Path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except Exception as err:  # SafetensorError for a corrupt header
        raise CheckpointError(f"cannot read {path}: corrupt safetensors header ({type(err).__name__})") from None


def _read_json(path: Path) -> dict:
    try:
        config = json.loads(path.read_text())  # Python's json reads the Infinity that HF configs contain
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot read {path}: {err}") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} must hold a JSON object of constructor arguments, got {type(config).__name__}")
    return config


# ------------------------------------------------------------------------------------------------ backbones
def load(path_or_name: str | os.PathLike | Mapping, device: str | torch.device = "cpu", **kwargs) -> nn.Module:
    """Load a backbone from a checkpoint path, a weights name (``backbone.hub``) or an already loaded dict.

    Args:
        path_or_name: file path, name in the weights table (e.g. ``"dune_vitb14_448"``), or a loaded checkpoint.
        device: where the model ends up (always built on meta, materialised by the strict load).
        kwargs: passed to the family loader (e.g. ``num_heads`` for DUNE, ``numerics`` for MuM).

    Returns:
        The backbone in eval mode.

    Raises:
        CheckpointError: unreadable file, a layout without an encoder (named), or keys that do not match.
    """
    if isinstance(path_or_name, Mapping):
        ckpt, fmt = path_or_name, detect_format(path_or_name)
    else:
        ckpt, fmt = read(hub.resolve(path_or_name))
    logger.info("checkpoint format: %s", fmt)
    if fmt == "recon-backbone":
        return _load_recon(ckpt, device)
    if fmt in ("mast3r", "dust3r", "croco", "hf"):
        return load_croco({"model": ckpt["model"], "args": ckpt.get("args")}, device=device)
    if fmt == "dune":
        return load_dune(ckpt, device=device, **kwargs)
    if fmt == "mum":
        return load_mum(ckpt, device=device, **kwargs)
    if fmt == "dinov2":
        return load_dinov2(ckpt, device=device)
    if fmt == "dune_mast3r":
        raise CheckpointError(
            f"this is a DUNE-MASt3R decoder checkpoint: it holds no encoder weights; its backbone is "
            f"{ckpt['dune_backbone_name']!r} (load that DUNE checkpoint with backbone.load, the decoder with recon)"
        )
    raise CheckpointError(f"this is a {FORMATS[fmt]}, not a backbone: load it with recon.load_model")


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
    with atomic_file(path) as tmp:
        torch.save(ckpt, tmp)
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


# ------------------------------------------------------------------------------------------------ verify
@dataclasses.dataclass(frozen=True)
class VerifyResult:
    """Outcome of a successful ``verify``.

    Attributes:
        path: the file checked.
        name: its table name, or None for a file that matches no entry.
        format: what ``detect_format`` says of it.
        size: its size in bytes.
        sha256: its hex digest (compare with a published one, or pin it in the table), or "" when not computed.
    """

    path: Path
    name: str | None
    format: str
    size: int
    sha256: str


def verify(name_or_path: str | os.PathLike, *, check_hash: bool = True) -> VerifyResult:
    """Check a cached weights file (by name) or any checkpoint file (by path): the ``read`` a load would do.

    Checks, in order: the file exists (named weights are never downloaded here); its size and sha256 match the
    table when known; it reads safely; for a file of the table (by name, or a path under an official file name)
    its format and the image size it declares are the entry's.

    Raises:
        UnknownWeightsError: neither a name nor an existing path.
        WeightsUnavailableError: the named weights are not cached.
        CheckpointError: a path that does not exist, or a folder.
        WeightsIntegrityError: wrong size or hash, an unsafe or unreadable file, or another format or size.
    """
    path = hub.resolve(name_or_path, download=False)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder: verify the files in it")
    entry = hub.entry_for_file(path)
    label = entry.name if entry else str(path)
    digest = check_file(path, entry and entry.size, entry and entry.sha256, what=str(path))
    if check_hash and digest is None:
        digest = sha256_file(path)
    try:
        ckpt, fmt = read(path)
    except CheckpointError as err:
        raise WeightsIntegrityError(f"{label}: {err}") from None
    declared = declared_image_size(ckpt, fmt)
    if entry and (fmt != entry.format or declared not in (None, entry.image_size)):
        raise WeightsIntegrityError(
            f"{path} is a {fmt} checkpoint declaring image size {declared}, but {entry.name} is a {entry.format} "
            f"checkpoint of {entry.image_size} px (another release under its file name?)"
        )
    return VerifyResult(path, entry and entry.name, fmt, path.stat().st_size, digest or "")


def declared_image_size(ckpt: Mapping, fmt: str) -> int | None:
    """The training image size a release states (MASt3R / DUSt3R ``img_size``, DUNE ``args.image_size``), or None."""
    if fmt in RELEASE_CLASSES.values():
        size = parse_constructor(constructor_string(ckpt))[1].get("img_size")
        return max(size) if isinstance(size, tuple | list) and size else size
    if fmt == "dune":
        return getattr(ckpt.get("args"), "image_size", None)
    return None
