"""``load_model`` / ``save_model``: every checkpoint format a ``ReconModel`` can come from, detected by content.

- MASt3R / DUSt3R release ``.pth``: ``{'model', 'args': Namespace(model='AsymmetricMASt3R(...)')}``; the
  backbone is the file's own CroCo encoder;
- Hugging Face export: a folder (or a ``.safetensors`` file) with ``model.safetensors`` + ``config.json``;
- DUNE-MASt3R decoder ``.pth``: ``{'dune_backbone_name', 'mast3r_model_str', 'model'}``; the backbone comes from
  a separate DUNE checkpoint;
- recon: ``.pth`` ``{'arch', 'config', 'format', 'model'}``, or ``.safetensors`` with that metadata.

The file comes from ``backbone.hub.resolve`` and is read by ``backbone.formats.read``, whose ``detect_format`` names
the layout; nothing in a file is executed (``weights_only=True`` with an allow-list, constructor strings parsed with
``ast``, never ``eval``).
Each official format has one key map in ``recon.model.formats``; unmapped, missing or mis-shaped keys raise
``CheckpointError`` naming them (under the official names).
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

from backbone.checkpoint import (
    CheckpointError,
    check_state_dict,
    load_strict,
    parse_constructor,
    state_digest,
    verify_digest,
)
from backbone.fileio import atomic_file
from backbone.formats import FORMATS, RECON_MODEL_PREFIX, constructor_string, read
from backbone.hub import UnknownWeightsError, resolve
from backbone.limits import (
    IMAGE_RANGE,
    MAX_DEPTH,
    MAX_DESC_DIM,
    MAX_WIDTH,
    MLP_RATIO_RANGE,
    ROPE_BASE_RANGE,
    check_choice,
    check_float,
    check_heads,
    check_int,
    check_vit_config,
)
from recon.model.formats import (
    CONF_MODES,
    DEPTH_MODES,
    DESC_MODES,
    DUNE_MAST3R,
    MAST3R_HF,
    MAST3R_PTH,
    KeyMap,
    check_mode,
    configs_from_constructor,
    convert_state_dict,
    official_name,
)
from recon.model.recon_model import ModelConfig, ReconModel

logger = logging.getLogger(__name__)

RECON_FORMAT = RECON_MODEL_PREFIX + "1"
RECON_ARCH = "ReconModel"
_PARTS = ("adapter", "decoder", "head1", "head2")  # ReconModel children filled from decoder checkpoints
MODEL_FORMATS = ("recon-model", "mast3r", "dust3r", "hf", "dune_mast3r")  # the formats load_model builds
RANDOM_PREFIX = "random:"  # load_model("random:<preset>") builds a preset with random weights


# ------------------------------------------------------------------------------------------------ public API
def load_model(
    path_or_name: str | os.PathLike,
    backbone: str | os.PathLike | nn.Module | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> ReconModel:
    """Load a binocular model from a checkpoint file, a Hugging Face folder or a named release.

    Args:
        path_or_name: a file or folder, or a name of the weights table (``recon weights list``), which is
            downloaded into the cache on first use, or ``random:<preset>[@seed]`` (e.g. ``random:mast3r_tiny``): an
            architecture of ``recon.model.presets`` with seeded random weights (``parse_random_name``), for
            smoke tests and benchmarks only.
        backbone: only for DUNE-MASt3R decoder checkpoints (which hold no encoder): a DUNE checkpoint path or
            weights name, or an already built backbone module. Default: the encoder the file names in
            ``dune_backbone_name``.
        device: where the model ends up.
        dtype: cast the backbone and decoder to this dtype (e.g. ``torch.bfloat16``); the heads stay float32 as
            in the official code (their ``exp``/``expm1`` need the range).

    Returns:
        ``ReconModel`` in eval mode.

    Raises:
        CheckpointError: unreadable file, unknown format, or keys that do not match (named).
    """
    if isinstance(path_or_name, str) and path_or_name.startswith(RANDOM_PREFIX):
        if backbone is not None:
            raise CheckpointError("`backbone=` is only for DUNE-MASt3R decoder checkpoints, not random models")
        name, seed = parse_random_name(path_or_name)
        logger.warning("model %s has RANDOM weights (seed %d): outputs are meaningless (smoke tests)", name, seed)
        return cast_model(build_random_model(name, seed).to(device).eval(), dtype)
    path = resolve(path_or_name)
    ckpt, fmt = read(path)
    if fmt not in MODEL_FORMATS:
        raise CheckpointError(
            f"{path} is a {FORMATS[fmt]}: an encoder without decoder and heads; recon needs a model checkpoint "
            f"({', '.join(MODEL_FORMATS)})"
        )
    if backbone is not None and fmt != "dune_mast3r":
        raise CheckpointError(
            f"{path}: a {fmt} checkpoint holds its own encoder; `backbone=` is only for DUNE-MASt3R decoders"
        )
    logger.info("loading %s checkpoint %s", fmt, path)
    try:
        if fmt == "recon-model":
            model = _load_recon(ckpt)
        elif fmt == "dune_mast3r":
            model = _load_dune_mast3r(ckpt, backbone)
        elif fmt == "hf":
            model = _load_mast3r(ckpt["model"], ckpt["config"], MAST3R_HF)
        else:
            model = _load_mast3r(ckpt["model"], parse_constructor(constructor_string(ckpt)), MAST3R_PTH)
    except CheckpointError:
        raise
    except (ValueError, TypeError, KeyError, IndexError, ZeroDivisionError) as err:
        # Backstop for malformed data the explicit checks above do not anticipate: still one clear line.
        raise CheckpointError(f"{path}: malformed {fmt} checkpoint ({type(err).__name__}: {err})"[:400]) from None
    model.checkpoint_files = _content_files(path, fmt, model)
    return cast_model(model.to(device).eval(), dtype)


def _content_files(path: Path, fmt: str, model: ReconModel) -> tuple[Path, ...] | None:
    """The files whose bytes determine the model's weights (the pair cache keys on their digests).

    ``None`` when part of the model did not come from a file (a DUNE encoder passed as a module): then the
    cache hashes the weights themselves.
    """
    if path.is_dir():
        files = [path / "model.safetensors", path / "config.json"]
    elif fmt == "hf":
        files = [path, path.parent / "config.json"]
    else:
        files = [path]
    if fmt == "dune_mast3r":
        encoder_files = getattr(model.backbone, "checkpoint_files", None)
        if encoder_files is None:
            return None
        files += list(encoder_files)
    return tuple(f.resolve() for f in files)


def parse_random_name(text: str) -> tuple[str, int]:
    """``"random:NAME[@SEED]"`` -> ``(NAME, SEED)``; without ``@SEED`` the seed is 0.

    So ``random:mast3r_tiny`` is the same model on every run and every machine (``build_random_model``).

    Raises:
        CheckpointError: not a ``random:`` name, an unknown preset (the message lists them) or a bad seed.
    """
    from recon.model.presets import PRESETS

    if not text.startswith(RANDOM_PREFIX):
        raise CheckpointError(f"{text!r} is not a {RANDOM_PREFIX}NAME[@SEED] model name")
    name, at, seed_text = text[len(RANDOM_PREFIX) :].partition("@")
    if name not in PRESETS:
        raise CheckpointError(f"unknown random model {name!r}; known: {', '.join(RANDOM_PREFIX + p for p in PRESETS)}")
    if not at:
        return name, 0
    if not (seed_text.isascii() and seed_text.isdigit() and len(seed_text) <= 10 and int(seed_text) < 2**32):
        raise CheckpointError(f"{text!r}: the seed after '@' must be an integer in [0, 2^32), got {seed_text!r}")
    return name, int(seed_text)


def build_random_model(name: str, seed: int) -> ReconModel:
    """The preset ``name`` with random weights drawn from ``seed``, on the CPU (same weights on every device).

    The global RNG state is left as it was (``fork_rng``), so seeding a model does not change anything else.
    """
    from recon.model.presets import build_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(name, device="cpu")


def save_model(model: ReconModel, path: str | os.PathLike) -> Path:
    """Write ``model`` in recon's own format, atomically (temp file in the same folder + ``os.replace``).

    ``.safetensors`` paths get a safetensors file with the format, arch and config as metadata; any other suffix
    a ``torch.save`` of ``{'arch', 'config', 'format', 'model'}`` (plain data, loadable with ``weights_only``).
    Both carry ``digest``, the sha256 of the weights and config that ``load_model`` checks.

    Returns:
        The path written.
    """
    path = Path(path)
    config = dataclasses.replace(model.config, backbone=backbone_recipe(model))
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = state_digest(state, _digest_text(config.to_dict()))
    with atomic_file(path) as tmp:
        if path.suffix == ".safetensors":
            from safetensors.torch import save_file

            meta = {"format": RECON_FORMAT, "arch": RECON_ARCH, "config": json.dumps(config.to_dict())}
            save_file(state, str(tmp), metadata={**meta, "digest": digest})
        else:
            ckpt = {"arch": RECON_ARCH, "config": config.to_dict(), "format": RECON_FORMAT, "model": state}
            torch.save({**ckpt, "digest": digest}, tmp)
    logger.info("saved %s", path)
    return path


def cast_model(model: ReconModel, dtype: torch.dtype | None) -> ReconModel:
    """Cast backbone, adapter and decoder to ``dtype`` (None: unchanged); the heads stay float32."""
    if dtype is not None:
        for part in (model.backbone, model.adapter, model.decoder):
            part.to(dtype)
    return model


def backbone_recipe(model: ReconModel) -> dict:
    """``{"factory": registered name, "config": ViTConfig fields}`` that rebuilds ``model.backbone``."""
    if model.config.backbone:
        return dict(model.config.backbone)
    import backbone as bb

    config = getattr(model.backbone, "config", None)
    if config is None or not dataclasses.is_dataclass(config):
        raise CheckpointError("cannot save: the backbone has no dataclass `config` to rebuild it from")
    factory = config.name
    if factory not in bb.list_backbones():
        from backbone.dune import DuneBackbone

        # A checkpoint of a non-standard size (e.g. a custom MuM or CroCo) is named after its family only; any
        # factory of that family rebuilds it, since every ViTConfig field is passed as an override.
        factory = "dune_vits14" if isinstance(model.backbone, DuneBackbone) else None
        if factory is None:
            factory = {"croco": "croco_vitl16", "axial": "mum_vitl16"}.get(getattr(config, "rope", None))
    if factory is None:
        raise CheckpointError(f"cannot save: no registered backbone family builds {config.name!r}")
    return {"factory": factory, "config": dataclasses.asdict(config)}


# ------------------------------------------------------------------------------------------------ formats
def _load_mast3r(state_dict: Mapping, constructor, keymap: KeyMap) -> ReconModel:
    """MASt3R / DUSt3R release (``constructor`` = parsed string) or HF export (``constructor`` = config.json)."""
    import backbone as bb
    from backbone import croco

    if isinstance(constructor, tuple):
        class_name, kwargs = constructor
    else:  # HF config.json: the constructor kwargs; metadata entries start with "_"
        kwargs = {k: v for k, v in constructor.items() if not k.startswith("_")}
        mast3r_only = {"two_confs", "desc_conf_mode", "desc_mode"}
        is_mast3r = bool(mast3r_only & set(kwargs)) or kwargs.get("head_type") == "catmlp+dpt"
        class_name = "AsymmetricMASt3R" if is_mast3r else "AsymmetricCroCo3DStereo"
    decoder_cfg, head_cfg, image_size, _ = configs_from_constructor(class_name, kwargs)
    overrides = croco.croco_overrides_from_mast3r(kwargs)
    mapped, encoder_state = convert_state_dict(state_dict, keymap)
    with torch.device("meta"):
        encoder = bb.create("croco_vitl16", **overrides)
    used = croco.load_mast3r_encoder(encoder, encoder_state)
    if set(encoder_state) - used:
        raise CheckpointError(f"{keymap.name}: encoder keys not consumed: {sorted(set(encoder_state) - used)[:12]}")
    recipe = {"factory": "croco_vitl16", "config": dataclasses.asdict(encoder.config)}
    config = ModelConfig(decoder=decoder_cfg, head=head_cfg, image_size=image_size, backbone=recipe)
    return _assemble(encoder, config, mapped, keymap)


def _load_dune_mast3r(ckpt: Mapping, backbone) -> ReconModel:
    class_name, kwargs = parse_constructor(ckpt["mast3r_model_str"])
    decoder_cfg, head_cfg, string_size, enc = configs_from_constructor(class_name, kwargs)
    if not isinstance(ckpt["model"], Mapping):
        raise CheckpointError("DUNE-MASt3R decoder checkpoint: 'model' must be a state dict")
    encoder = _dune_backbone(backbone if backbone is not None else _named_encoder(ckpt["dune_backbone_name"]))
    if int(encoder.spec.embed_dim) != int(enc["enc_embed_dim"]):
        raise CheckpointError(
            f"DUNE-MASt3R decoder expects a {enc['enc_embed_dim']}-d encoder but the backbone "
            f"{encoder.spec.name!r} is {encoder.spec.embed_dim}-d: pass the matching DUNE checkpoint as backbone="
        )
    recipe = {}
    if dataclasses.is_dataclass(getattr(encoder, "config", None)):
        recipe = {"factory": "dune_vits14", "config": dataclasses.asdict(encoder.config)}
    config = ModelConfig(
        decoder=decoder_cfg,
        head=head_cfg,
        # The released decoders were fine-tuned at 518 on 448-distilled encoders (DUNE supp. B: 518x518 ... 518x168)
        # and the official demo runs them at 518, the inner string's img_size; without one, the encoder's size.
        image_size=int(string_size) if "img_size" in kwargs else int(encoder.spec.image_size),
        tokens="prenorm",  # the official wrapper skips DUNE's final norm ...
        adapter_norm_eps=1e-5,  # ... and applies its own trainable nn.LayerNorm (default eps 1e-5)
        backbone=recipe,
    )
    carried = sorted(k for k in ckpt["model"] if k.startswith("dune_backbone."))
    if carried:
        raise CheckpointError(
            f"this DUNE-MASt3R file carries {len(carried)} encoder weight(s) ({carried[0]}, ...), which the official "
            "loader would load over the hub encoder; not supported: pass the DUNE checkpoint as backbone= instead"
        )
    mapped, _ = convert_state_dict(ckpt["model"], DUNE_MAST3R)
    return _assemble(encoder, config, mapped, DUNE_MAST3R)


def _named_encoder(name) -> Path:
    """The encoder file a DUNE-MASt3R file names: a weights-table name (downloaded on first use), or an existing
    file (recon's finetuning writes the path of its DUNE checkpoint there); anything else is refused clearly."""
    if not isinstance(name, str) or not name:
        raise CheckpointError(f"DUNE-MASt3R decoder: 'dune_backbone_name' must be a name, got {name!r}"[:200])
    try:
        return resolve(name)
    except UnknownWeightsError:
        raise CheckpointError(
            f"this DUNE-MASt3R decoder names its encoder {name[:80]!r}, which is not in the weights table "
            "(`recon weights list`); pass the DUNE encoder checkpoint with --backbone PATH"
        ) from None


def _dune_backbone(spec) -> nn.Module:
    """A DUNE encoder from a module, a checkpoint path or a weights name (official hub names included)."""
    if isinstance(spec, nn.Module):
        if not hasattr(spec, "spec"):
            raise CheckpointError("backbone= module does not follow the backbone protocol (no .spec)")
        return spec
    from backbone.dune import load_dune

    path = resolve(spec)
    encoder = load_dune(path, with_projectors=False)
    encoder.checkpoint_files = (Path(path),)
    return encoder


def _digest_text(config: Mapping) -> str:
    """The config part of a recon checkpoint's content digest (JSON, so .pth and .safetensors agree)."""
    return json.dumps({"arch": RECON_ARCH, "config": config}, sort_keys=True)


def _load_recon(ckpt: Mapping) -> ReconModel:
    if ckpt.get("arch") != RECON_ARCH:
        raise CheckpointError(f"recon checkpoint of unknown arch {ckpt.get('arch')!r} (expected {RECON_ARCH!r})")
    if not isinstance(ckpt["config"], Mapping) or not isinstance(ckpt["model"], Mapping):
        raise CheckpointError("recon checkpoint: 'config' and 'model' must be dicts")
    verify_digest(ckpt["model"], ckpt.get("digest"), _digest_text(ckpt["config"]), "recon checkpoint")
    head = ckpt["config"].get("head")
    for key, names in (("depth_mode", DEPTH_MODES), ("conf_mode", CONF_MODES), ("desc_conf_mode", CONF_MODES)):
        if isinstance(head, Mapping) and key in head:  # before HeadConfig turns a bare 'exp' into ('e', 'x', 'p')
            check_mode(f"head.{key}", head[key], names)
    try:
        config = ModelConfig(**ckpt["config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"recon checkpoint has an invalid config: {err}") from None
    check_model_config(config)
    recipe = config.backbone
    if not recipe or "factory" not in recipe:
        raise CheckpointError("recon checkpoint has no backbone recipe ({'factory', 'config'}) in its config")
    import backbone as bb
    from backbone.vit import ViTConfig

    if recipe["factory"] not in bb.list_backbones():
        raise CheckpointError(
            f"recon checkpoint names an unknown backbone factory {recipe['factory']!r}; known: {bb.list_backbones()}"
        )
    fields = recipe.get("config", {})
    if not isinstance(fields, Mapping):
        raise CheckpointError("recon checkpoint: the backbone recipe's 'config' must be a dict")
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    try:
        check_vit_config(ViTConfig(**fields))
    except TypeError as err:
        raise CheckpointError(f"recon checkpoint has an invalid backbone config: {err}") from None
    fields.pop("name", None)  # the factory's own name (create() takes it positionally)
    with torch.device("meta"):
        model = ReconModel(bb.create(recipe["factory"], **fields), config)
    load_strict(model, ckpt["model"], "recon checkpoint")
    return model


def check_model_config(config: ModelConfig) -> None:
    """Bounds of a ``ModelConfig`` read from a file (decoder, heads, image size), before anything is built.

    Raises:
        CheckpointError: the first value out of range or of the wrong type, named.
    """
    d, h = config.decoder, config.head
    dim = check_int("decoder.embed_dim", d.embed_dim, 1, MAX_WIDTH)
    check_heads("decoder.", dim, d.num_heads, rope=True)
    check_int("decoder.depth", d.depth, 10 if "dpt" in h.kind else 1, MAX_DEPTH)
    check_float("decoder.mlp_ratio", d.mlp_ratio, *MLP_RATIO_RANGE, lo_open=True)
    check_float("decoder.rope_base", d.rope_base, *ROPE_BASE_RANGE)
    check_float("decoder.norm_eps", d.norm_eps, 0.0, 1.0, lo_open=True)
    check_int("image_size", config.image_size, *IMAGE_RANGE)
    if config.adapter_norm_eps is not None:
        check_float("adapter_norm_eps", config.adapter_norm_eps, 0.0, 1.0, lo_open=True)
    check_int("head.desc_dim", h.desc_dim, 1, MAX_DESC_DIM)
    if not isinstance(h.two_confs, bool):
        raise CheckpointError(f"head.two_confs={h.two_confs!r} must be True or False")
    check_mode("head.depth_mode", h.depth_mode, DEPTH_MODES)
    check_mode("head.conf_mode", h.conf_mode, CONF_MODES)
    check_mode("head.desc_conf_mode", h.desc_conf_mode, CONF_MODES)
    check_choice("head.desc_mode", h.desc_mode, DESC_MODES)
    check_float("head.mlp_ratio", h.mlp_ratio, *MLP_RATIO_RANGE, lo_open=True)
    check_int("head.dpt_feature_dim", h.dpt_feature_dim, 2, MAX_WIDTH)
    if len(h.dpt_layer_dims) != 4:
        raise CheckpointError(f"head.dpt_layer_dims={h.dpt_layer_dims!r} must be 4 integers")
    for v in h.dpt_layer_dims:
        check_int("head.dpt_layer_dims", v, 1, MAX_WIDTH)


def _assemble(encoder: nn.Module, config: ModelConfig, mapped: Mapping, keymap: KeyMap) -> ReconModel:
    """Build the decoder and heads on the meta device around a loaded encoder and fill them from ``mapped``."""
    with torch.device("meta"):
        model = ReconModel(encoder, config)
    expected = {k: v for k, v in model.state_dict().items() if k.split(".", 1)[0] in _PARTS}
    # Compare under official names so that errors name the keys as they are in the file.
    check_state_dict(
        {official_name(k, keymap): v for k, v in expected.items()},
        {official_name(k, keymap): v for k, v in mapped.items()},
        keymap.name,
    )
    for part in _PARTS:
        sub = {k[len(part) + 1 :]: v for k, v in mapped.items() if k.startswith(part + ".")}
        load_strict(getattr(model, part), sub, f"{keymap.name} ({part})")
    return model
