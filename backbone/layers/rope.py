"""Rotary position embeddings on the 2-D patch grid: CroCo's RoPE2D and MuM's (DINOv3) axial RoPE.

Both rotate channel pairs ``(i, i + n/2)`` of a block of n channels ("rotate-half" pairing, not interleaved):
``x * cos + rotate_half(x) * sin`` with ``rotate_half([a, b]) = [-b, a]``. They differ in how a head vector is
split between the axes and in the angles:

- CroCo (MASt3R, DUSt3R): the first half of the head vector is rotated by the integer row ``y``, the second
  half by the column ``x``; inside a half of d channels the frequencies are ``base ** (-2k/d)``, k < d/2.
- MuM: coordinates are patch centres normalised to [-1, 1] per axis, angles ``2 pi c / period`` with
  ``period_i = base ** (4i / head_dim)``; the angle vector is ``[y angles, x angles]`` tiled twice, so the
  rotate-half pairs span the whole head vector.

Leading prefix tokens (cls, registers) are never rotated. A rope is applied through a ``RopeFn``: a closure
built once per forward for the current grid, mapping q or k ``[B, heads, N, head_dim]`` to the same shape.
"""

import logging
import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)

RopeFn = Callable[[Tensor], Tensor]


def rotate_half(x: Tensor) -> Tensor:
    """``[a, b] -> [-b, a]`` on the last dimension (halves a, b)."""
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


def _with_prefix(x: Tensor, num_prefix: int, rotate: Callable[[Tensor], Tensor]) -> Tensor:
    """Rotate tokens ``num_prefix:`` of ``x [B, heads, N, Dh]`` and keep the prefix tokens as they are."""
    if num_prefix == 0:
        return rotate(x)
    return torch.cat((x[:, :, :num_prefix], rotate(x[:, :, num_prefix:])), dim=-2)


class CroCoRoPE2D(nn.Module):
    """CroCo's RoPE2D (``pos_embed='RoPE100'``): no parameters, tables depend only on the grid.

    Args:
        head_dim: channels per head; must be divisible by 4 (two axes x rotate-half pairs).
        base: frequency base (100 for every released CroCo / DUSt3R / MASt3R model).
    """

    def __init__(self, head_dim: int, base: float = 100.0) -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"CroCo RoPE2D needs a head dim divisible by 4, got {head_dim}")
        self.head_dim = head_dim
        self.base = float(base)

    def tables(self, h: int, w: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """cos/sin tables for rows and columns of an ``h x w`` grid: four ``[h*w, head_dim/2]`` float32 tensors."""
        d = self.head_dim // 2
        inv_freq = 1.0 / (self.base ** (torch.arange(0, d, 2, device=device).float() / d))  # d/2
        t = torch.arange(max(h, w), device=device, dtype=inv_freq.dtype)
        freqs = torch.outer(t, inv_freq)
        freqs = torch.cat((freqs, freqs), dim=-1)  # L d
        cos, sin = freqs.cos(), freqs.sin()
        # Positions are (y, x) of a row-major grid, as CroCo's PositionGetter (cartesian_prod(arange h, arange w)).
        ys = torch.arange(h, device=device).repeat_interleave(w)
        xs = torch.arange(w, device=device).repeat(h)
        return cos[ys], sin[ys], cos[xs], sin[xs]

    def for_grid(self, h: int, w: int, device: torch.device, num_prefix: int = 0) -> RopeFn:
        """Return the ``RopeFn`` for an ``h x w`` patch grid after ``num_prefix`` unrotated tokens."""
        cos_y, sin_y, cos_x, sin_x = self.tables(h, w, device)

        def rotate(x: Tensor) -> Tensor:  # B heads hw Dh
            xy, xx = x.chunk(2, dim=-1)  # first half <- y, second half <- x
            cy, sy, cx, sx = (t.to(x.dtype) for t in (cos_y, sin_y, cos_x, sin_x))
            return torch.cat((xy * cy + rotate_half(xy) * sy, xx * cx + rotate_half(xx) * sx), dim=-1)

        return lambda x: _with_prefix(x, num_prefix, rotate)


class AxialRoPE(nn.Module):
    """MuM's axial RoPE (DINOv3 ``RopePositionEmbedding`` with ``normalize_coords='separate'``, no augmentation).

    The ``periods`` buffer ``[head_dim/4]`` is persistent because the official checkpoints store it.

    Args:
        head_dim: channels per head; divisible by 4.
        base: period base (100).
        dtype: dtype of every RoPE computation. MuM's encoder-only entry point (``mum_vitl16``) computes the
            tables *and the rotation* in bfloat16 (q and k are cast to bf16, rotated, cast back); its
            autoencoder uses float32. Reproducing the official numbers needs the same choice.
    """

    def __init__(self, head_dim: int, base: float = 100.0, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"axial RoPE needs a head dim divisible by 4, got {head_dim}")
        self.head_dim = head_dim
        self.base = float(base)
        self.dtype = dtype
        # Same op sequence as the official init so that bf16 rounding matches: 2*i, / (Dh/2), base ** .
        exponent = 2 * torch.arange(head_dim // 4, dtype=dtype) / (head_dim // 2)
        self.register_buffer("periods", self.base**exponent, persistent=True)

    def tables(self, h: int, w: int) -> tuple[Tensor, Tensor]:
        """(sin, cos), each ``[h*w, head_dim]`` in ``self.dtype``."""
        dd = {"device": self.periods.device, "dtype": self.dtype}
        coords_h = torch.arange(0.5, h, **dd) / h  # patch centres in (0, 1)
        coords_w = torch.arange(0.5, w, **dd) / w
        coords = torch.stack(torch.meshgrid(coords_h, coords_w, indexing="ij"), dim=-1).flatten(0, 1)  # hw 2
        coords = 2.0 * coords - 1.0  # [-1, 1]
        # Python evaluates 2*pi first (a float), then one rounding per tensor op, as the official code does.
        angles = 2 * math.pi * coords[:, :, None] / self.periods.to(self.dtype)[None, None, :]  # hw 2 Dh/4
        angles = angles.flatten(1, 2).tile(2)  # hw Dh: [y angles, x angles] twice
        return torch.sin(angles), torch.cos(angles)

    def for_grid(self, h: int, w: int, num_prefix: int = 0) -> RopeFn:
        """Return the ``RopeFn`` for an ``h x w`` patch grid after ``num_prefix`` unrotated tokens."""
        sin, cos = self.tables(h, w)

        def apply(x: Tensor) -> Tensor:  # B heads N Dh
            # The whole tensor (prefix included) passes through self.dtype, as in the official attention.
            y = x.to(self.dtype)
            y = _with_prefix(y, num_prefix, lambda t: t * cos + rotate_half(t) * sin)
            return y.to(x.dtype)

        return apply
