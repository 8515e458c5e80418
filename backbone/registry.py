"""Backbone protocol (``BackboneSpec``) and the name -> factory registry behind ``backbone.create``."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from torch import Tensor, nn

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BackboneSpec:
    """What a decoder needs to know about a backbone, without looking inside it."""

    name: str
    """Registered family name, e.g. ``"croco_vitl16"``."""
    patch_size: int
    """Pixels per patch side (14 or 16); input H and W must be multiples of it."""
    embed_dim: int
    """Width D of the output tokens."""
    mean: tuple[float, float, float]
    """Per-channel mean the backbone subtracts from its [0, 1] RGB input."""
    std: tuple[float, float, float]
    """Per-channel std the backbone divides by."""
    num_prefix_tokens: int
    """Tokens before the patch tokens in ``x_prenorm`` (cls + registers; 0 for CroCo)."""
    image_size: int
    """Native training resolution in pixels (long side for CroCo/MASt3R, square side otherwise)."""


@runtime_checkable
class Backbone(Protocol):
    """What every registered backbone provides (``VisionTransformer`` implements it)."""

    spec: BackboneSpec

    def forward(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W]`` RGB in [0, 1] -> ``[B, h*w, D]`` patch tokens after the final norm, row-major."""
        ...

    def forward_features(self, images: Tensor) -> dict[str, Tensor]:
        """``x_prenorm`` ``[B, P + N, D]``, ``x_norm_patchtokens`` ``[B, N, D]`` (+ cls / register tokens)."""
        ...


_FACTORIES: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering ``factory(**overrides) -> Backbone`` under ``name``."""

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _FACTORIES:
            raise ValueError(f"backbone {name!r} is registered twice")
        _FACTORIES[name] = factory
        return factory

    return wrap


def create(name: str, **overrides) -> nn.Module:
    """Build the backbone ``name`` with random weights; ``overrides`` change its config (e.g. ``depth=2``).

    Build on the meta device with ``with torch.device("meta"): create(name)`` to inspect shapes for free.

    Raises:
        KeyError: unknown name (the message lists the registered ones).
        TypeError: an override that the family does not have.
    """
    if name not in _FACTORIES:
        raise KeyError(f"unknown backbone {name!r}; registered: {', '.join(sorted(_FACTORIES))}")
    return _FACTORIES[name](**overrides)


def list_backbones() -> list[str]:
    """Sorted registered backbone names."""
    return sorted(_FACTORIES)
