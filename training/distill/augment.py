"""DUNE's training augmentations (official ``data/transform.py``), drawn from an explicit ``torch.Generator``.

In order: RandomResizedCrop(size, scale=(0.4, 1), ratio=(3/4, 4/3), bicubic, antialiased) -> horizontal flip
(p=0.5) -> [colour] ColorJitter(0.4, 0.4, 0.2, 0.1) with p=0.8 (the four adjustments in random order) ->
grayscale p=0.2 -> Gaussian blur (kernel 9, sigma in [0.1, 5]) p=0.2 -> solarise (threshold 0.5) p=0.2.
The output stays RGB in [0, 1]: the backbones normalise their own input (the official pipeline ends with the
ImageNet Normalize, which DUNE's student applies internally here).

Differences from torchvision that do not change the distribution: every random draw comes from the per-sample
generator (exact resume, worker-count independence), and jitter/grayscale act on float images rather than uint8.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

logger = logging.getLogger(__name__)


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(1, generator=g))


def _coin(g: torch.Generator, p: float) -> bool:
    return float(torch.rand(1, generator=g)) < p


def rrc_box(
    width: int, height: int, g: torch.Generator, scale=(0.4, 1.0), ratio=(3 / 4, 4 / 3)
) -> tuple[int, int, int, int]:
    """RandomResizedCrop's box ``(left, top, w, h)``: 10 tries of random area/aspect, else a centred crop."""
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * _uniform(g, *scale)
        aspect = math.exp(_uniform(g, log_lo, log_hi))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=g))
            left = int(torch.randint(0, width - w + 1, (1,), generator=g))
            return left, top, w, h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif in_ratio > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def _gray(x: Tensor) -> Tensor:
    """ITU-R 601 luma ``[1, H, W]`` of ``x [3, H, W]`` (torchvision's rgb_to_grayscale weights)."""
    return (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]).unsqueeze(0)


def _blend(a: Tensor, b: Tensor, factor: float) -> Tensor:
    return (factor * a + (1 - factor) * b).clamp(0, 1)


def _adjust_hue(x: Tensor, shift: float) -> Tensor:
    """Rotate the hue of ``x [3, H, W]`` by ``shift`` turns (in [-0.5, 0.5]) through HSV."""
    r, g, b = x[0], x[1], x[2]
    maxc, _ = x.max(dim=0)
    minc, _ = x.min(dim=0)
    v = maxc
    delta = maxc - minc
    s = torch.where(maxc > 0, delta / maxc.clamp(min=1e-12), torch.zeros_like(maxc))
    dc = delta.clamp(min=1e-12)
    rc, gc, bc = (maxc - r) / dc, (maxc - g) / dc, (maxc - b) / dc
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    h = (h + shift) % 1.0
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.long() % 6
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = torch.zeros_like(x)
    for k, (cr, cg, cb) in enumerate(choices):
        m = i == k
        out[0] = torch.where(m, cr, out[0])
        out[1] = torch.where(m, cg, out[1])
        out[2] = torch.where(m, cb, out[2])
    return out


def color_jitter(x: Tensor, g: torch.Generator, brightness=0.4, contrast=0.4, saturation=0.2, hue=0.1) -> Tensor:
    """torchvision ``ColorJitter``: the four adjustments in a random order with factors drawn uniformly."""
    b = _uniform(g, 1 - brightness, 1 + brightness)
    c = _uniform(g, 1 - contrast, 1 + contrast)
    s = _uniform(g, 1 - saturation, 1 + saturation)
    h = _uniform(g, -hue, hue)
    for op in torch.randperm(4, generator=g).tolist():
        if op == 0:
            x = (x * b).clamp(0, 1)
        elif op == 1:
            x = _blend(x, _gray(x).mean().expand_as(x), c)
        elif op == 2:
            x = _blend(x, _gray(x).expand_as(x), s)
        else:
            x = _adjust_hue(x, h)
    return x


def gaussian_blur(x: Tensor, sigma: float, kernel: int = 9) -> Tensor:
    """Separable Gaussian blur of ``x [3, H, W]`` with reflect padding (torchvision's GaussianBlur)."""
    half = (kernel - 1) * 0.5
    t = torch.linspace(-half, half, kernel)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(x.dtype)
    pad = kernel // 2
    y = F.pad(x[None], (pad, pad, pad, pad), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(3, 1, 1, kernel), groups=3)
    y = F.conv2d(y, k.view(1, 1, -1, 1).expand(3, 1, kernel, 1), groups=3)
    return y[0]


class DuneTrainTransform:
    """``transform(pil_image, generator) -> [3, S, S]`` float32 RGB in [0, 1] (see the module doc).

    Args:
        image_size: output side S.
        rrc_scale: RandomResizedCrop area range.
        color_aug: apply the colour / blur / solarise block.
    """

    def __init__(self, image_size: int, rrc_scale=(0.4, 1.0), color_aug: bool = True) -> None:
        self.image_size = image_size
        self.rrc_scale = tuple(rrc_scale)
        self.color_aug = color_aug

    def __call__(self, image, g: torch.Generator) -> Tensor:
        from PIL import Image

        left, top, w, h = rrc_box(image.width, image.height, g, self.rrc_scale)
        size = (self.image_size, self.image_size)
        # PIL's bicubic resize filters over the source footprint, i.e. it is antialiased when downscaling.
        crop = image.resize(size, Image.Resampling.BICUBIC, box=(left, top, left + w, top + h))
        x = torch.from_numpy(np.asarray(crop, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()
        if _coin(g, 0.5):
            x = x.flip(-1)
        if not self.color_aug:
            return x
        if _coin(g, 0.8):
            x = color_jitter(x, g)
        if _coin(g, 0.2):
            x = _gray(x).expand(3, -1, -1).contiguous()
        if _coin(g, 0.2):
            x = gaussian_blur(x, _uniform(g, 0.1, 5.0))
        if _coin(g, 0.2):
            x = torch.where(x >= 0.5, 1.0 - x, x)
        return x
