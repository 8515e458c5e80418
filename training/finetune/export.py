"""Final model files: the official DUNE-MASt3R decoder layout for DUNE backbones, recon's own layout otherwise.

DUNE-MASt3R (reference/mast3r.md §3.6): ``{'dune_backbone_name': str, 'mast3r_model_str': str, 'model': state}``
where ``state`` holds ``norm.*`` (the adapter LayerNorm) and **every** ``mast3r.*`` key of the inner
``AsymmetricMASt3R`` built from the string -- the official loader accepts only ``dune_backbone*`` / ``imagenet*``
keys as missing. So besides the decoder and heads (``recon.model.formats.DUNE_MAST3R`` renames, inverted) the file
holds what recon's modules leave out on purpose:

- the DPT aliases ``scratch.layer_rn.{0..3}.weight``, stored as the same tensors as ``scratch.layer{1..4}_rn``;
- ``scratch.refinenet4.resConfUnit1.*``, built but never used by the official DPT: zeros;
- the inner CroCo encoder the wrapper replaces by DUNE: written with ``enc_depth=0`` (no blocks), so only
  ``patch_embed``, ``enc_norm`` and ``mask_token`` remain (zeros / ones; never used).

``recon.load_model(decoder_path, backbone=dune_path)`` reads the file back, as does the official loader. The layout
can only describe release-width DPT heads (256 / 96-768 are hard-coded by the official classes).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import torch
from torch import Tensor

from recon.errors import UserError
from recon.model.formats import DUNE_MAST3R, official_name
from recon.model.recon_model import ReconModel
from training.common.checkpoint import atomic_torch_save

logger = logging.getLogger(__name__)

RELEASE_DPT = (256, (96, 192, 384, 768))


class ExportError(UserError, ValueError):
    """The model cannot be written in the requested layout (the message says why)."""


def _fmt_mode(mode) -> str:
    """A ``(name, vmin, vmax)`` mode as Python source (``inf`` spelled as the official strings do)."""

    def one(v) -> str:
        if isinstance(v, float) and math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)

    return "(" + ", ".join(one(v) for v in mode) + ")"


def mast3r_model_string(model: ReconModel) -> str:
    """The ``AsymmetricMASt3R(...)`` constructor string of ``model``'s decoder and heads (encoder-less).

    The DUNE wrapper appends ``patch_size=14`` and ``landscape_only=False`` itself, so neither is written.
    """
    d, h = model.config.decoder, model.config.head
    enc_dim = int(model.backbone.spec.embed_dim)
    enc_heads = int(getattr(getattr(model.backbone, "config", None), "num_heads", 1) or 1)
    side = max(int(model.image_size), 518)  # the inner patch embedding is never used; 518 as the release demo
    args = [
        "enc_depth=0",
        f"dec_depth={d.depth}",
        f"enc_embed_dim={enc_dim}",
        f"dec_embed_dim={d.embed_dim}",
        f"enc_num_heads={enc_heads}",
        f"dec_num_heads={d.num_heads}",
    ]
    if float(d.mlp_ratio) != 4.0:
        args.append(f"mlp_ratio={float(d.mlp_ratio)!r}")
    rope = int(d.rope_base) if float(d.rope_base).is_integer() else d.rope_base
    args += [
        f"pos_embed='RoPE{rope}'",
        f"img_size=({side}, {side})",
        "head_type='catmlp+dpt'",
        f"output_mode='pts3d+desc{h.desc_dim}'",
        f"depth_mode={_fmt_mode(h.depth_mode)}",
        f"conf_mode={_fmt_mode(h.conf_mode)}",
        "patch_embed_cls='PatchEmbedDust3R'",
        f"two_confs={bool(h.two_confs)}",
        f"desc_conf_mode={_fmt_mode(h.desc_conf_mode)}",
    ]
    if h.desc_mode != "norm":
        args.append(f"desc_mode={h.desc_mode!r}")
    return "AsymmetricMASt3R(" + ", ".join(args) + ")"


def check_dune_exportable(model: ReconModel) -> None:
    """Raise ``ExportError`` unless ``model`` fits the DUNE-MASt3R layout."""
    from training.finetune.model import is_dune

    c = model.config
    problems = []
    if not is_dune(model.backbone):
        problems.append(f"the backbone is {model.backbone.spec.name!r}, not DUNE")
    if c.tokens != "prenorm" or c.adapter_norm_eps != 1e-5:
        problems.append("DUNE-MASt3R reads pre-norm tokens through a LayerNorm(eps=1e-5) (model.tokens/adapter)")
    if c.head.kind != "catmlp+dpt":
        problems.append(f"head {c.head.kind!r} is not catmlp+dpt")
    if (c.head.dpt_feature_dim, tuple(c.head.dpt_layer_dims)) != RELEASE_DPT:
        problems.append(
            f"DPT widths {c.head.dpt_feature_dim}/{list(c.head.dpt_layer_dims)} differ from the release's "
            "256/[96, 192, 384, 768], which the official classes hard-code"
        )
    if problems:
        raise ExportError("cannot write the DUNE-MASt3R layout: " + "; ".join(problems) + "; use output_format recon")


def dune_mast3r_state(model: ReconModel) -> dict[str, Tensor]:
    """The official DUNE-MASt3R ``model`` state dict of ``model``'s adapter, decoder and heads (CPU tensors)."""
    from training.finetune.model import PARTS

    out: dict[str, Tensor] = {}
    for key, value in model.state_dict().items():
        if key.split(".", 1)[0] in PARTS:
            out[official_name(key, DUNE_MAST3R)] = value.detach().cpu()
    feat = model.config.head.dpt_feature_dim
    for head in ("downstream_head1", "downstream_head2"):
        base = f"mast3r.{head}.dpt.scratch"
        for i in range(4):
            out[f"{base}.layer_rn.{i}.weight"] = out[f"{base}.layer{i + 1}_rn.weight"]  # alias: one tensor
        for conv in ("conv1", "conv2"):
            out[f"{base}.refinenet4.resConfUnit1.{conv}.weight"] = torch.zeros(feat, feat, 3, 3)
            out[f"{base}.refinenet4.resConfUnit1.{conv}.bias"] = torch.zeros(feat)
    dim, p = int(model.backbone.spec.embed_dim), model.patch_size
    out["mast3r.mask_token"] = torch.zeros(1, 1, dim)
    out["mast3r.patch_embed.proj.weight"] = torch.zeros(dim, 3, p, p)
    out["mast3r.patch_embed.proj.bias"] = torch.zeros(dim)
    out["mast3r.enc_norm.weight"] = torch.ones(dim)
    out["mast3r.enc_norm.bias"] = torch.zeros(dim)
    return out


def dune_mast3r_checkpoint(model: ReconModel, backbone_name: str) -> dict:
    """``{'dune_backbone_name', 'mast3r_model_str', 'model'}`` of ``model`` (see the module doc).

    Raises:
        ExportError: the model does not fit the layout.
    """
    check_dune_exportable(model)
    return {
        "dune_backbone_name": str(backbone_name),
        "mast3r_model_str": mast3r_model_string(model),
        "model": dune_mast3r_state(model),
    }


def save_final(model: ReconModel, path: str | os.PathLike, layout: str, backbone_name: str | None = None) -> Path:
    """Write the finetuned model in ``layout`` (``dune_mast3r`` or ``recon``) atomically; return the path."""
    if layout == "dune_mast3r":
        if not backbone_name:
            raise ExportError("the DUNE-MASt3R layout names its encoder: set model.backbone_name (or "
                              "model.backbone_checkpoint)")  # fmt: skip
        return atomic_torch_save(dune_mast3r_checkpoint(model, backbone_name), path)
    if layout == "recon":
        from recon.model.loading import save_model

        return save_model(model, path)
    raise ExportError(f"unknown output layout {layout!r}; expected dune_mast3r or recon")


def resolve_layout(model: ReconModel, requested: str) -> str:
    """``auto`` -> ``dune_mast3r`` when the model fits that layout, else ``recon`` (logged)."""
    if requested != "auto":
        if requested == "dune_mast3r":
            check_dune_exportable(model)
        return requested
    try:
        check_dune_exportable(model)
    except ExportError as err:
        from training.finetune.model import is_dune

        if is_dune(model.backbone):
            logger.info("output in recon's layout: %s", err)
        return "recon"
    return "dune_mast3r"
