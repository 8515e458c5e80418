"""Learned absolute position embeddings resampled to another patch grid (DINOv2 / DUNE)."""

import logging

import torch
import torch.nn.functional as F
from torch import Tensor

logger = logging.getLogger(__name__)


def interpolate_pos_embed(
    pos_embed: Tensor, h: int, w: int, num_prefix: int = 1, offset: float = 0.1, antialias: bool = False
) -> Tensor:
    """Resample a square learned position embedding to an ``h x w`` grid, as DINOv2's ``interpolate_pos_encoding``.

    The stored table is ``[1, P + M*M, D]`` (P prefix rows, e.g. cls, kept as they are). It is returned unchanged
    when the grid is the stored one (``h == w == M``). Otherwise bicubic resampling in float32 with
    ``align_corners=False``: with ``offset > 0`` a **scale factor** ``((h + offset) / M, (w + offset) / M)`` is
    passed rather than a size -- the historical DINO kludge that DINOv2, DUNE and the DINOv2 teachers use -- so the
    sampling positions are ``(dst + 0.5) * M / (h + offset) - 0.5``; with ``offset == 0`` the size ``(h, w)`` is
    passed (DINOv2 hub ``*_reg`` models, which also antialias).

    Args:
        pos_embed: ``[1, P + M*M, D]``.
        h, w: target patch grid.
        num_prefix: P.
        offset: the interpolation offset (0.1 for DINOv2 / DUNE, 0.0 for DINOv2 hub ``*_reg``).
        antialias: ``F.interpolate``'s antialias flag.

    Returns:
        ``[1, P + h*w, D]`` in the dtype of ``pos_embed``.
    """
    n = pos_embed.shape[1] - num_prefix
    m = int(round(n**0.5))
    if m * m != n:
        raise ValueError(f"position embedding has {n} patch rows, not a square grid")
    if h == m and w == m:
        return pos_embed
    dim = pos_embed.shape[-1]
    prefix, grid = pos_embed[:, :num_prefix], pos_embed[:, num_prefix:].float()
    grid = grid.reshape(1, m, m, dim).permute(0, 3, 1, 2)  # 1 D M M
    if offset:
        resize = {"scale_factor": ((h + offset) / m, (w + offset) / m)}
    else:
        resize = {"size": (h, w)}
    grid = F.interpolate(grid, mode="bicubic", antialias=antialias, **resize)
    if grid.shape[-2:] != (h, w):
        raise RuntimeError(f"position-embedding resampling gave {tuple(grid.shape[-2:])}, expected {(h, w)}")
    grid = grid.permute(0, 2, 3, 1).reshape(1, h * w, dim)  # 1 hw D
    return torch.cat((prefix.float(), grid), dim=1).to(pos_embed.dtype)
