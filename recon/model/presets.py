"""Named architectures with random weights: ``build_model("mast3r_vitl16")`` (benchmarks, training from scratch).

Sizes are the official releases' (reference/mast3r.md §3.7, dune_mum.md §8). The DUNE-MASt3R decoder width
is not published in text; the released decoders are taken to be MASt3R's BaseDecoder (768-d, 12 blocks,
12 heads), as a third-party port inferred from the weights.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace

import torch

from recon.model.decoder import DecoderConfig
from recon.model.heads import HeadConfig
from recon.model.recon_model import ModelConfig, ReconModel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preset:
    """A named architecture: backbone family + overrides and the decoder/head configuration."""

    backbone: str
    """Registered backbone name (``backbone.create``)."""
    config: ModelConfig
    """Decoder, heads, native size, token source and adapter."""
    backbone_overrides: dict = field(default_factory=dict)
    """Overrides passed to ``backbone.create``."""
    description: str = ""


# DUNE-MASt3R decoders were fine-tuned at 518 on the 448 encoders (DUNE supplementary B).
_DUNE = {"tokens": "prenorm", "adapter_norm_eps": 1e-5, "image_size": 518}

PRESETS: dict[str, Preset] = {
    "mast3r_vitl16": Preset(
        "croco_vitl16", ModelConfig(image_size=512), description="MASt3R ViT-L/16 + BaseDecoder, catmlp+dpt, 512"
    ),
    "dust3r_vitl16_dpt": Preset(
        "croco_vitl16",
        ModelConfig(head=HeadConfig(kind="dpt"), image_size=512),
        description="DUSt3R ViT-L/16 + BaseDecoder, DPT head, 512",
    ),
    "dust3r_vitl16_linear": Preset(
        "croco_vitl16",
        ModelConfig(head=HeadConfig(kind="linear"), image_size=512),
        description="DUSt3R ViT-L/16 + BaseDecoder, linear head, 512",
    ),
    "mast3r_tiny": Preset(
        "croco_vitl16",
        ModelConfig(decoder=DecoderConfig(embed_dim=48, depth=10, num_heads=4), image_size=512),
        backbone_overrides={"embed_dim": 64, "depth": 2, "num_heads": 4},
        description="MASt3R architecture at the official tiny conformance fixture's sizes (2-block encoder)",
    ),
    "dune_vitb14": Preset(
        "dune_vitb14", ModelConfig(**_DUNE), description="DUNE ViT-B/14 + DUNE-MASt3R decoder (catmlp+dpt), 518"
    ),
    "dune_vits14": Preset(
        "dune_vits14", ModelConfig(**_DUNE), description="DUNE ViT-S/14 + DUNE-MASt3R decoder (catmlp+dpt), 518"
    ),
}


def build_model(
    name: str,
    *,
    backbone_overrides: dict | None = None,
    decoder: DecoderConfig | None = None,
    head: HeadConfig | None = None,
    device: str | torch.device | None = None,
) -> ReconModel:
    """Build the architecture ``name`` with random weights.

    Args:
        name: a key of ``PRESETS``.
        backbone_overrides: extra ``backbone.create`` overrides (e.g. a tiny ``embed_dim``/``depth`` for tests).
        decoder: replace the decoder configuration.
        head: replace the head configuration.
        device: build directly there (``"meta"`` for shapes and FLOP counts without memory).

    Raises:
        KeyError: unknown name (the message lists the presets).
    """
    import backbone as bb

    if name not in PRESETS:
        raise KeyError(f"unknown model {name!r}; known: {', '.join(sorted(PRESETS))}")
    preset = PRESETS[name]
    config = preset.config
    if decoder is not None:
        config = replace(config, decoder=decoder)
    if head is not None:
        config = replace(config, head=head)
    with torch.device(device or "cpu"):
        encoder = bb.create(preset.backbone, **{**preset.backbone_overrides, **(backbone_overrides or {})})
        config = replace(config, backbone={"factory": preset.backbone, "config": asdict(encoder.config)})
        model = ReconModel(encoder, config)
    return model.eval()
