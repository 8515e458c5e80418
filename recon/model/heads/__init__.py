"""Prediction heads on top of the binocular decoder: MASt3R ``catmlp+dpt``, DUSt3R ``dpt`` and ``linear``.

A head maps the decoder output list of one view (``[feat, block 1, ..., dec_norm(block d)]``) and the view's
``(H, W)`` to a dict of channels-last maps: ``pts3d [B,H,W,3]``, ``conf [B,H,W]`` and, for MASt3R,
``desc [B,H,W,desc_dim]`` and ``desc_conf [B,H,W]``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from backbone.layers.mlp import Mlp
from recon.model.heads.dpt import DPT
from recon.model.heads.postprocess import reg_conf, reg_desc, reg_points

logger = logging.getLogger(__name__)

HEAD_KINDS = ("catmlp+dpt", "dpt", "linear")


@dataclass(frozen=True)
class HeadConfig:
    """What the heads predict and how raw channels are post-processed (defaults: the MASt3R release)."""

    kind: str = "catmlp+dpt"
    """``'catmlp+dpt'`` (MASt3R: DPT points + MLP descriptors), ``'dpt'`` or ``'linear'`` (DUSt3R)."""
    desc_dim: int = 24
    """Local descriptor width (``output_mode='pts3d+desc24'``); ignored by DUSt3R heads."""
    two_confs: bool = True
    """MASt3R: a separate descriptor confidence channel; otherwise ``desc_conf`` is a copy of ``conf``."""
    depth_mode: tuple = ("exp", -math.inf, math.inf)
    """Point parametrisation ``(name, vmin, vmax)``."""
    conf_mode: tuple = ("exp", 1, math.inf)
    """Point confidence mapping."""
    desc_conf_mode: tuple = ("exp", 0, math.inf)
    """Descriptor confidence mapping (used when ``two_confs``)."""
    desc_mode: str = "norm"
    """Descriptor normalisation."""
    mlp_ratio: float = 4.0
    """Hidden width factor of the local-feature MLP (``hidden_dim_factor``)."""
    dpt_feature_dim: int = 256
    """DPT fusion width (hard-coded 256 in every release; smaller only for tiny test models)."""
    dpt_layer_dims: tuple = (96, 192, 384, 768)
    """DPT reassembly widths at strides 4, 8, 16, 32 of the patch grid (release values)."""

    def __post_init__(self):
        if self.kind not in HEAD_KINDS:
            raise ValueError(f"unknown head kind {self.kind!r}; expected one of {HEAD_KINDS}")
        # JSON round trips turn tuples into lists; normalise so configs compare equal.
        for name in ("depth_mode", "conf_mode", "desc_conf_mode", "dpt_layer_dims"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    @property
    def has_desc(self) -> bool:
        return self.kind == "catmlp+dpt"


def _dpt(config: HeadConfig, enc_dim: int, dec_dim: int, dec_depth: int, patch_size: int) -> DPT:
    return DPT(
        [enc_dim, dec_dim, dec_dim, dec_dim],
        dpt_hooks(dec_depth),
        patch_size,
        feature_dim=config.dpt_feature_dim,
        last_dim=config.dpt_feature_dim // 2,
        layer_dims=config.dpt_layer_dims,
    )


def dpt_hooks(depth: int) -> list[int]:
    """Official DPT hooks into the decoder list: ``[0, d*2//4, d*3//4, d]``."""
    if depth < 10:
        raise ValueError(f"the DPT head needs a decoder depth >= 10 (official assert dec_depth > 9), got {depth}")
    return [0, depth * 2 // 4, depth * 3 // 4, depth]


def _pixel_maps(feat: torch.Tensor, shape: tuple[int, int], p: int) -> torch.Tensor:
    """Per-token ``[B, h*w, C*p*p]`` -> ``[B, C, H, W]`` (channel ``c*p*p + p*i + j`` -> sub-pixel ``(i, j)``)."""
    B = feat.shape[0]
    H, W = shape
    return F.pixel_shuffle(feat.transpose(-1, -2).reshape(B, -1, H // p, W // p), p)


class _Head(nn.Module):
    def __init__(self, config: HeadConfig, patch_size: int):
        super().__init__()
        self.config = config
        self.patch_size = patch_size

    def postprocess(self, raw: torch.Tensor) -> dict[str, torch.Tensor]:
        """Raw ``[B, C, H, W]`` -> dict of channels-last maps, computed in float32."""
        c = self.config
        fmap = raw.float().permute(0, 2, 3, 1)  # B H W C
        out = {"pts3d": reg_points(fmap[..., :3], c.depth_mode), "conf": reg_conf(fmap[..., 3], c.conf_mode)}
        if c.has_desc:
            out["desc"] = reg_desc(fmap[..., 4 : 4 + c.desc_dim], c.desc_mode)
            if c.two_confs:
                out["desc_conf"] = reg_conf(fmap[..., 4 + c.desc_dim], c.desc_conf_mode)
            else:
                out["desc_conf"] = out["conf"].clone()
        return out

    def forward(self, tokens: list[torch.Tensor], shape: tuple[int, int]) -> dict[str, torch.Tensor]:
        """Args: tokens: decoder output list of one view; shape: ``(H, W)``. Returns the prediction dict."""
        return self.postprocess(self.forward_raw(tokens, shape))


class CatMLPDPTHead(_Head):
    """MASt3R ``catmlp+dpt``: DPT for ``x, y, z, conf``; an MLP on ``cat(feat, last decoder tokens)`` for
    ``desc_dim`` descriptor channels (+ a confidence), pixel-shuffled from each token's ``p x p`` patch."""

    def __init__(self, config: HeadConfig, enc_dim: int, dec_dim: int, dec_depth: int, patch_size: int):
        super().__init__(config, patch_size)
        self.dpt = _dpt(config, enc_dim, dec_dim, dec_depth, patch_size)
        idim = enc_dim + dec_dim
        odim = (config.desc_dim + int(config.two_confs)) * patch_size**2
        self.head_local_features = Mlp(idim, int(config.mlp_ratio * idim), out_dim=odim)

    def forward_raw(self, tokens: list[torch.Tensor], shape: tuple[int, int]) -> torch.Tensor:
        """Returns ``[B, 4 + desc_dim + two_confs, H, W]`` raw channels."""
        pts = self.dpt(tokens, shape)
        local = self.head_local_features(torch.cat([tokens[0], tokens[-1]], dim=-1))  # B hw C*p*p
        return torch.cat([pts, _pixel_maps(local, shape, self.patch_size)], dim=1)


class DPTHead(_Head):
    """DUSt3R ``dpt``: the DPT alone (``x, y, z, conf``)."""

    def __init__(self, config: HeadConfig, enc_dim: int, dec_dim: int, dec_depth: int, patch_size: int):
        super().__init__(config, patch_size)
        self.dpt = _dpt(config, enc_dim, dec_dim, dec_depth, patch_size)

    def forward_raw(self, tokens: list[torch.Tensor], shape: tuple[int, int]) -> torch.Tensor:
        return self.dpt(tokens, shape)


class LinearHead(_Head):
    """DUSt3R ``linear``: one Linear from the last decoder tokens to ``4 * p * p``, pixel-shuffled."""

    def __init__(self, config: HeadConfig, enc_dim: int, dec_dim: int, dec_depth: int, patch_size: int):
        super().__init__(config, patch_size)
        self.proj = nn.Linear(dec_dim, 4 * patch_size**2)

    def forward_raw(self, tokens: list[torch.Tensor], shape: tuple[int, int]) -> torch.Tensor:
        return _pixel_maps(self.proj(tokens[-1]), shape, self.patch_size)


def build_head(config: HeadConfig, enc_dim: int, dec_dim: int, dec_depth: int, patch_size: int) -> _Head:
    """Head for ``config.kind``, sized for a backbone width ``enc_dim`` and the decoder."""
    cls = {"catmlp+dpt": CatMLPDPTHead, "dpt": DPTHead, "linear": LinearHead}[config.kind]
    return cls(config, enc_dim, dec_dim, dec_depth, patch_size)
