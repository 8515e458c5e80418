"""Vision backbones (ViT encoders) that MASt3R-style decoders sit on.

``create(name, **overrides)`` builds a registered family with random weights, ``list()`` names them and
``load(path_or_name)`` reads an official or recon checkpoint, detecting its format by its keys; ``save`` writes
recon's own format. Every backbone is a ``VisionTransformer`` with a ``spec`` (``BackboneSpec``),
``forward(images [B,3,H,W] in [0,1]) -> [B, h*w, D]`` and ``forward_features(images) -> dict``.
"""

from backbone import croco, dinov2, dune, mum  # noqa: F401  (register the families)
from backbone.formats import detect_format, load, save
from backbone.registry import Backbone, BackboneSpec, create, list_backbones
from backbone.vit import VisionTransformer, ViTConfig

list = list_backbones  # noqa: A001  (``backbone.list()`` is the public name)

__all__ = [
    "Backbone",
    "BackboneSpec",
    "ViTConfig",
    "VisionTransformer",
    "create",
    "detect_format",
    "list",
    "list_backbones",
    "load",
    "save",
]
