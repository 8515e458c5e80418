"""``ReconModel``: a backbone, an optional token adapter, the binocular decoder and two heads.

The split API lets the inference engine encode every image once and decode many pairs::

    feats = model.encode(images)                      # [B, h*w, D]
    pred1, pred2 = model.decode(f1, f2, (H1, W1), (H2, W2))
    pred1, pred2 = model(img1, img2)                  # = encode both + decode
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from recon.model.decoder import BinocularDecoder, DecoderConfig
from recon.model.heads import HeadConfig, build_head

logger = logging.getLogger(__name__)

TOKEN_SOURCES = ("final", "prenorm")


@dataclass(frozen=True)
class ModelConfig:
    """Everything but the backbone's own architecture needed to rebuild a ``ReconModel``."""

    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    """Binocular decoder sizes."""
    head: HeadConfig = field(default_factory=HeadConfig)
    """Head kind and post-processing."""
    image_size: int = 512
    """Native (training) resolution: the long side images are resized to (512 MASt3R, 518/448 DUNE)."""
    tokens: str = "final"
    """Backbone tokens the decoder reads: ``'final'`` = ``backbone(x)``; ``'prenorm'`` = patch tokens of
    ``backbone.forward_features(x)['x_prenorm']`` before the backbone's final norm (DUNE-MASt3R)."""
    adapter_norm_eps: float | None = None
    """If set, a trainable ``LayerNorm(D, eps)`` on the backbone tokens (DUNE-MASt3R's ``norm``, eps 1e-5)."""
    backbone: dict = field(default_factory=dict)
    """How to rebuild the backbone: ``{"name": registry name, "kwargs": {...}}`` (for recon's own format)."""

    def __post_init__(self):
        if self.tokens not in TOKEN_SOURCES:
            raise ValueError(f"tokens must be one of {TOKEN_SOURCES}, got {self.tokens!r}")
        if isinstance(self.decoder, dict):
            object.__setattr__(self, "decoder", DecoderConfig(**self.decoder))
        if isinstance(self.head, dict):
            object.__setattr__(self, "head", HeadConfig(**self.head))
        # Plain JSON data (tuples become lists), so that a config equals itself after a save / load round trip.
        object.__setattr__(self, "backbone", json.loads(json.dumps(self.backbone)))

    def to_dict(self) -> dict:
        return asdict(self)


class ReconModel(nn.Module):
    """Binocular 3D model on any backbone.

    Args:
        backbone: module following the backbone protocol: ``spec.patch_size``, ``spec.embed_dim``,
            ``spec.num_prefix_tokens``, ``forward(images [B,3,H,W] in [0,1]) -> [B, h*w, D]`` (and
            ``forward_features(x)['x_prenorm']`` when ``config.tokens == 'prenorm'``).
        config: decoder / head / adapter configuration.
    """

    def __init__(self, backbone: nn.Module, config: ModelConfig = ModelConfig()):
        super().__init__()
        self.config = config
        self.backbone = backbone
        spec = backbone.spec
        dim = int(spec.embed_dim)
        self.adapter = nn.LayerNorm(dim, eps=config.adapter_norm_eps) if config.adapter_norm_eps else nn.Identity()
        self.decoder = BinocularDecoder(dim, int(spec.patch_size), config.decoder)
        dc = config.decoder
        self.head1 = build_head(config.head, dim, dc.embed_dim, dc.depth, int(spec.patch_size))
        self.head2 = build_head(config.head, dim, dc.embed_dim, dc.depth, int(spec.patch_size))

    @property
    def patch_size(self) -> int:
        return int(self.backbone.spec.patch_size)

    @property
    def image_size(self) -> int:
        return int(self.config.image_size)

    @property
    def has_desc(self) -> bool:
        return self.config.head.has_desc

    def _check_images(self, images: torch.Tensor, name: str = "images") -> None:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{name} must be [B, 3, H, W], got shape {tuple(images.shape)}")
        H, W = images.shape[-2:]
        p = self.patch_size
        if H % p or W % p:
            raise ValueError(
                f"{name}: image size {H}x{W} (HxW) is not a multiple of the patch size {p}; "
                f"resize or crop to e.g. {H // p * p}x{W // p * p}"
            )

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone (+ adapter) tokens of a batch of same-size images.

        Args:
            images: ``[B, 3, H, W]`` RGB in [0, 1], ``H`` and ``W`` multiples of ``patch_size``.

        Returns:
            ``[B, h*w, D]`` tokens (``h = H / patch_size``, row-major grid).
        """
        self._check_images(images)
        images = images.to(_dtype_of(self.backbone, images.dtype))
        if self.config.tokens == "prenorm":
            prefix = int(self.backbone.spec.num_prefix_tokens)
            feats = self.backbone.forward_features(images)["x_prenorm"][:, prefix:]
        else:
            feats = self.backbone(images)
        return self.adapter(feats.to(_dtype_of(self.adapter, feats.dtype)))

    def decode(
        self, feat1: torch.Tensor, feat2: torch.Tensor, shape1: tuple[int, int], shape2: tuple[int, int]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Decode a batch of pairs from their encoder tokens.

        Args:
            feat1: ``[B, h1*w1, D]`` tokens of view 1 (from ``encode``).
            feat2: ``[B, h2*w2, D]`` tokens of view 2.
            shape1, shape2: ``(H, W)`` pixel sizes of the views.

        Returns:
            ``pred1, pred2``: dicts with ``pts3d [B,H,W,3]`` (both in view 1's camera frame), ``conf [B,H,W]``
            and, for MASt3R heads, ``desc [B,H,W,desc_dim]`` and ``desc_conf [B,H,W]``; float32.
        """
        shape1, shape2 = (int(shape1[0]), int(shape1[1])), (int(shape2[0]), int(shape2[1]))
        dtype = _dtype_of(self.decoder, feat1.dtype)
        dec1, dec2 = self.decoder(feat1.to(dtype), feat2.to(dtype), shape1, shape2)
        # Heads run in float32 with autocast off, as the official code does: exp/expm1 and the
        # descriptor normalisation are not safe in half precision.
        dtype = _dtype_of(self.head1, torch.float32)
        device_type = feat1.device.type
        no_autocast = torch.autocast(device_type, enabled=False) if device_type != "meta" else contextlib.nullcontext()
        with no_autocast:
            pred1 = self.head1([t.to(dtype) for t in dec1], shape1)
            pred2 = self.head2([t.to(dtype) for t in dec2], shape2)
        return pred1, pred2

    def forward(
        self, img1: torch.Tensor, img2: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Predict the two point maps of a batch of image pairs.

        Args:
            img1: ``[B, 3, H1, W1]`` RGB in [0, 1] (view 1, the reference frame).
            img2: ``[B, 3, H2, W2]`` RGB in [0, 1].

        Returns:
            ``pred1, pred2`` as in ``decode``.
        """
        self._check_images(img1, "img1")
        self._check_images(img2, "img2")
        if img1.shape[0] != img2.shape[0]:
            raise ValueError(f"img1 and img2 batch sizes differ: {img1.shape[0]} vs {img2.shape[0]}")
        if img1.shape == img2.shape:  # one backbone call for both views
            feat1, feat2 = self.encode(torch.cat([img1, img2])).chunk(2)
        else:
            feat1, feat2 = self.encode(img1), self.encode(img2)
        return self.decode(feat1, feat2, tuple(img1.shape[-2:]), tuple(img2.shape[-2:]))


def _dtype_of(module: nn.Module, default: torch.dtype) -> torch.dtype:
    """dtype of the first floating-point parameter of ``module`` (``default`` when it has none)."""
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), default)
