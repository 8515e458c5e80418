"""DPT dense head (Ranftl et al. 2021) as used by DUSt3R / MASt3R (``DPTOutputAdapter_fix``).

Four token maps hooked from ``[encoder output, decoder block 1, ..., dec_norm(last block)]`` are reassembled at
strides 4, 8, 16, 32 of the patch grid, projected to 256 channels, fused coarse-to-fine with residual conv
units, and upsampled back to pixels. The widths are hard-coded by the official models whatever the backbone
(256 features, 128 last, ``[96, 192, 384, 768]`` layer dims), so they are defaults here.

Parameter names follow the official module (``act_postprocess``, ``scratch.layerN_rn``,
``scratch.refinenetN.resConfUnitK``, ``head``). Differences on purpose: the official ``scratch.layer_rn.{0..3}``
aliases are not registered (the loader checks and drops them), and ``refinenet4`` has no ``resConfUnit1``
(the official one is built but never used: the coarsest level has no skip input).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)


class ResidualConvUnit(nn.Module):
    """``x + conv2(relu(conv1(relu(x))))`` with 3x3 convolutions (the skip uses the un-ReLU'd ``x``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """``out_conv(up2(RCU2(x + RCU1(skip))))``; bilinear x2 with ``align_corners=True`` as the official."""

    def __init__(self, dim: int, with_skip: bool = True):
        super().__init__()
        if with_skip:
            self.resConfUnit1 = ResidualConvUnit(dim)
        self.resConfUnit2 = ResidualConvUnit(dim)
        self.out_conv = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class DPT(nn.Module):
    """DPT adapter: 4 hooked token maps -> ``[B, out_channels, H, W]``.

    Args:
        dim_tokens: widths of the 4 hooked token maps (``[D_backbone, D_dec, D_dec, D_dec]``).
        hooks: indices of the hooked maps in the decoder output list (``[0, d*2//4, d*3//4, d]``).
        patch_size: backbone patch size ``p``.
        out_channels: output channels (4 = x, y, z, conf).
        feature_dim: fusion width (256).
        last_dim: width before the last 1x1 conv (128).
        layer_dims: reassembly widths at strides 4, 8, 16, 32 of the patch grid.
        upsample_factor: the head's last bilinear factor, ``2 * p / 16`` so that the overall factor is ``p``
            (2 for p=16; 1.75 for p=14, as DUNE-MASt3R's ``scale_factor *= 14/16``).
    """

    def __init__(
        self,
        dim_tokens: Sequence[int],
        hooks: Sequence[int],
        patch_size: int,
        out_channels: int = 4,
        feature_dim: int = 256,
        last_dim: int = 128,
        layer_dims: Sequence[int] = (96, 192, 384, 768),
        upsample_factor: float | None = None,
    ):
        super().__init__()
        if len(dim_tokens) != 4 or len(hooks) != 4 or len(layer_dims) != 4:
            raise ValueError("DPT needs exactly 4 hooks, token widths and layer dims")
        self.hooks = list(hooks)
        self.patch_size = patch_size
        self.upsample_factor = float(upsample_factor if upsample_factor is not None else 2 * patch_size / 16)
        l0, l1, l2, l3 = layer_dims
        self.act_postprocess = nn.ModuleList(
            [
                nn.Sequential(nn.Conv2d(dim_tokens[0], l0, 1), nn.ConvTranspose2d(l0, l0, 4, stride=4)),  # x4
                nn.Sequential(nn.Conv2d(dim_tokens[1], l1, 1), nn.ConvTranspose2d(l1, l1, 2, stride=2)),  # x2
                nn.Sequential(nn.Conv2d(dim_tokens[2], l2, 1)),  # x1
                nn.Sequential(nn.Conv2d(dim_tokens[3], l3, 1), nn.Conv2d(l3, l3, 3, stride=2, padding=1)),  # x1/2
            ]
        )
        self.scratch = nn.Module()
        for i, dim in enumerate(layer_dims, start=1):
            setattr(self.scratch, f"layer{i}_rn", nn.Conv2d(dim, feature_dim, 3, padding=1, bias=False))
        for i in (1, 2, 3):
            setattr(self.scratch, f"refinenet{i}", FusionBlock(feature_dim))
        self.scratch.refinenet4 = FusionBlock(feature_dim, with_skip=False)
        self.head = nn.Sequential(
            nn.Conv2d(feature_dim, last_dim, 3, padding=1),
            nn.Upsample(scale_factor=self.upsample_factor, mode="bilinear", align_corners=True),
            nn.Conv2d(last_dim, last_dim, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(last_dim, out_channels, 1),
        )

    def forward(self, tokens: Sequence[torch.Tensor], shape: tuple[int, int]) -> torch.Tensor:
        """Args:
            tokens: the decoder output list; entries ``hooks[i]`` are ``[B, h*w, dim_tokens[i]]``.
            shape: ``(H, W)`` image size in pixels, multiples of ``patch_size``.

        Returns:
            ``[B, out_channels, H, W]`` raw (not post-processed) maps.
        """
        h, w = shape[0] // self.patch_size, shape[1] // self.patch_size
        s = self.scratch
        layers = []
        for i, hook in enumerate(self.hooks):
            t = tokens[hook]
            x = t.transpose(1, 2).reshape(t.shape[0], t.shape[2], h, w)  # B C h w
            x = self.act_postprocess[i](x)
            layers.append(getattr(s, f"layer{i + 1}_rn")(x))
        # Crop to layer 3's grid: the stride-2 conv rounds odd grids up (e.g. 3 rows -> 2 -> 4 after x2).
        path = s.refinenet4(layers[3])[:, :, : layers[2].shape[2], : layers[2].shape[3]]
        path = s.refinenet3(path, layers[2])
        path = s.refinenet2(path, layers[1])
        path = s.refinenet1(path, layers[0])
        return self.head(path)
