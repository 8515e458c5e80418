"""Building the MuM autoencoder from a config, and turning a pre-trained encoder into a recon backbone / model.

Outputs of a finished run (``write_outputs``):

==================  ==================================================================================
file                content
==================  ==================================================================================
``mum_final.pth``   raw state dict in the layout of ``MuM_ViTLarge_BaseDecoder.pth`` (encoder + decoder)
``mum_encoder.pth`` raw state dict in the layout of ``MuM_ViTLarge.pth`` (encoder only, bf16 periods)
``mum_backbone.pth`` recon backbone checkpoint (``backbone.save``): the encoder with its training numerics
==================  ==================================================================================

``backbone.load`` reads all three. The official layouts imply the official numerics (encoder-only file: LayerNorm
eps 1e-5 and bf16 RoPE, as ``mum_vitl16``), so for recon use prefer ``mum_backbone.pth``, which keeps the exact
configuration the encoder was trained with.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from pathlib import Path

import torch

import backbone as bb
from backbone.mum import MUM_VITL16, NUMERICS
from backbone.vit import VisionTransformer, ViTConfig, apply_overrides
from training.common.checkpoint import atomic_torch_save
from training.mum.config import MuMConfig
from training.mum.decoder import MuMAutoEncoder, MuMDecoderConfig, encoder_official_state_dict, official_state_dict

logger = logging.getLogger(__name__)

FINAL_NAME = "mum_final.pth"
ENCODER_NAME = "mum_encoder.pth"
BACKBONE_NAME = "mum_backbone.pth"


def encoder_config(cfg: MuMConfig) -> ViTConfig:
    """The MuM ``ViTConfig`` of the run's encoder (autoencoder numerics: float32 RoPE, ``model.norm_eps``).

    Every size keeps the registered family name ``mum_vitl16`` (as ``backbone.create("mum_vitl16", embed_dim=...)``
    does), so that recon checkpoints of models built on this encoder name a factory that rebuilds it.
    """
    dim, depth, heads = cfg.encoder_size()
    return apply_overrides(
        MUM_VITL16,
        {
            **NUMERICS["autoencoder"],
            "embed_dim": dim,
            "depth": depth,
            "num_heads": heads,
            "patch_size": cfg.model.patch_size,
            "norm_eps": cfg.model.norm_eps,
            "image_size": cfg.data.image_size,
        },
    )


def decoder_config(cfg: MuMConfig) -> MuMDecoderConfig:
    m = cfg.model
    return MuMDecoderConfig(
        embed_dim=m.decoder_embed_dim,
        depth=m.decoder_depth,
        num_heads=m.decoder_num_heads,
        norm_eps=m.norm_eps,
        patch_size=m.patch_size,
    )


def build_autoencoder(cfg: MuMConfig, device: str | torch.device | None = None) -> MuMAutoEncoder:
    """A randomly initialised ``MuMAutoEncoder`` (official init) for ``cfg``; ``device="meta"`` for shapes only."""
    with torch.device(device or "cpu"):
        return MuMAutoEncoder(encoder_config(cfg), decoder_config(cfg))


def weights_digest(model: torch.nn.Module) -> str:
    """sha256 of every parameter and buffer (to check that DDP ranks agree)."""
    h = hashlib.sha256()
    for key, value in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def write_outputs(model: MuMAutoEncoder, output_dir: str | os.PathLike) -> dict[str, Path]:
    """Write the three final files of the module table (atomically); returns ``{kind: path}``."""
    out = Path(output_dir)
    cpu = {k: v.detach().cpu() for k, v in official_state_dict(model).items()}
    enc = {k: v.detach().cpu() for k, v in encoder_official_state_dict(model).items()}
    paths = {
        "autoencoder": atomic_torch_save(cpu, out / FINAL_NAME),
        "encoder": atomic_torch_save(enc, out / ENCODER_NAME),
        "backbone": bb.save(model.encoder, out / BACKBONE_NAME),
    }
    logger.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return paths


def recon_model_on_mum(encoder: VisionTransformer, *, decoder=None, head=None, image_size: int | None = None):
    """A ``recon.model.ReconModel`` (random binocular decoder and heads) on a MuM encoder, as ``build_model`` does.

    The backbone recipe names the registered ``mum_vitl16`` factory with the encoder's full config, so any size
    round-trips through ``recon.model.loading.save_model`` / ``load_model`` (and ``recon run --checkpoint``).

    Args:
        encoder: a MuM encoder (``backbone.load("mum_backbone.pth")``, ``MuMAutoEncoder.encoder``, ...).
        decoder: ``recon.model.decoder.DecoderConfig`` (default: MASt3R's BaseDecoder).
        head: ``recon.model.heads.HeadConfig`` (default: MASt3R's catmlp+dpt).
        image_size: native long side for ``recon run`` (default: the encoder's training size).
    """
    from recon.model.decoder import DecoderConfig
    from recon.model.heads import HeadConfig
    from recon.model.recon_model import ModelConfig, ReconModel

    if getattr(encoder, "rope_embed", None) is None or encoder.config.rope != "axial":
        raise ValueError("recon_model_on_mum needs a MuM encoder (axial RoPE)")
    config = ModelConfig(
        decoder=decoder or DecoderConfig(),
        head=head or HeadConfig(),
        image_size=image_size or encoder.config.image_size,
        backbone={"factory": "mum_vitl16", "config": dataclasses.asdict(encoder.config)},
    )
    return ReconModel(encoder, config).eval()
