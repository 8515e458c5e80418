"""Procedural solid textures for the synthetic renderer: multi-scale value noise plus sharp patterns.

Textures are *solid* (a function of the 3D point in the primitive's local frame), so a surface point has the
same albedo from every view, with no UV seams. Descriptor matching needs both blob-like multi-scale structure
and corners, so every material mixes smooth fBm noise with one sharp pattern (random tiles with grout, posterised
noise, warped stripes or a checker).

Sharp patterns alias when a pattern period shrinks below a couple of pixels; each layer is faded towards its
mean as its period in pixels (``1 / (frequency * footprint)``, with ``footprint`` the world size of a pixel at
the hit point) drops from 4 to 2 pixels, the same idea as mip-mapping.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import map_coordinates

logger = logging.getLogger(__name__)

GRID = 32  # noise lattice period, in lattice cells
KINDS = ("tiles", "blobs", "stripes", "checker")


def _smoothstep(e0: np.ndarray | float, e1: np.ndarray | float, x: np.ndarray) -> np.ndarray:
    u = np.clip((x - e0) / np.maximum(np.asarray(e1) - e0, 1e-9), 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def _band_weight(freq: float, footprint: np.ndarray) -> np.ndarray:
    """``[M]`` weight of a layer of spatial frequency ``freq`` (cycles per world unit): 1 above 4 px, 0 below 2 px."""
    period_px = 1.0 / np.maximum(freq * footprint, 1e-9)
    return np.clip((period_px - 2.0) / 2.0, 0.0, 1.0)


class NoiseField:
    """Periodic 3D value noise on a random ``[GRID]^3`` lattice (one per scene, drawn from the scene's RNG)."""

    def __init__(self, rng: np.random.Generator):
        self.grid = rng.random((GRID, GRID, GRID), dtype=np.float32)

    def value(self, q: np.ndarray) -> np.ndarray:
        """Trilinear value noise in [0, 1] at lattice coordinates ``q [M, 3]`` -> ``[M]``."""
        return map_coordinates(self.grid, q.T, order=1, mode="grid-wrap", prefilter=False)

    def cell(self, q: np.ndarray) -> np.ndarray:
        """A random value in [0, 1) constant over each unit lattice cell ``floor(q)`` -> ``[M]``."""
        i = np.floor(q).astype(np.int64) % GRID
        return self.grid[i[:, 0], i[:, 1], i[:, 2]]

    def fbm(self, q: np.ndarray, freq: float, octaves: int, footprint: np.ndarray) -> np.ndarray:
        """Band-limited fractal noise around 0.5 at points ``q [M, 3]`` with base frequency ``freq`` -> ``[M]``.

        Octave ``k`` has frequency ``freq * 2**k`` and amplitude ``0.5**k``; octaves too fine for the pixel
        footprint fade to the mean, so distant surfaces do not sparkle.
        """
        total = np.zeros(len(q))
        norm = 0.0
        f, amp = freq, 1.0
        for k in range(octaves):
            # A fixed irrational shift per octave decorrelates the octaves that share one lattice.
            shift = np.array([0.37, 0.71, 0.13]) * (k + 1) * 7.3
            w = _band_weight(f, footprint)
            if w.any():  # octaves finer than every pixel cost nothing
                total += amp * (0.5 + w * (self.value(q * f + shift) - 0.5))
            else:
                total += amp * 0.5
            norm += amp
            f *= 2.0
            amp *= 0.5
        return total / norm


@dataclass
class Material:
    """A procedural material.

    Attributes:
        kind: one of ``KINDS``.
        colors: ``[k, 3]`` float palette in [0, 1] (``k >= 2``).
        scale: base spatial frequency of the pattern, in cycles per world unit.
        rot: ``[3, 3]`` rotation of the texture space, so pattern edges do not align with faces.
        offset: ``[3]`` texture-space offset.
        detail: amplitude of the fine luminance noise (0 = none).
    """

    kind: str
    colors: np.ndarray
    scale: float
    rot: np.ndarray
    offset: np.ndarray
    detail: float = 0.35

    def albedo(self, noise: NoiseField, p: np.ndarray, footprint: np.ndarray) -> np.ndarray:
        """Albedo ``[M, 3]`` in [0, 1] at local points ``p [M, 3]`` with pixel footprints ``footprint [M]``."""
        q = p @ self.rot + self.offset
        f = self.scale
        k = len(self.colors)
        if self.kind == "tiles":
            cell_q = q * f
            idx = np.minimum((noise.cell(cell_q) * k).astype(np.int64), k - 1)
            base = self.colors[idx]
            frac = cell_q - np.floor(cell_q)
            edge = np.minimum(frac, 1.0 - frac).min(axis=-1) / f  # world distance to the nearest cell wall
            width = 0.06 / f
            soft = np.maximum(footprint, 1e-6)
            g = _smoothstep(width - soft, width + soft, edge) * _band_weight(f, footprint)
            grout = 0.25 * self.colors.mean(axis=0)
            base = grout + g[:, None] * (base - grout)
        elif self.kind == "blobs":
            v = noise.fbm(q, f, 2, footprint)
            lo, hi = 0.35, 0.65  # fBm concentrates around 0.5; spread the thresholds over its bulk
            base = np.repeat(self.colors[:1], len(q), axis=0)
            for i in range(1, k):
                th = lo + (hi - lo) * i / k
                base = base + _smoothstep(th - 0.012, th + 0.012, v)[:, None] * (self.colors[i] - self.colors[i - 1])
        elif self.kind == "stripes":
            warp = noise.fbm(q, f * 0.5, 2, footprint)
            s = np.sin(2 * np.pi * (q[:, 0] * f + 2.0 * warp))
            band = 0.5 + _band_weight(f, footprint) * (_smoothstep(-0.25, 0.25, s) - 0.5)
            base = self.colors[0] + band[:, None] * (self.colors[1] - self.colors[0])
        elif self.kind == "checker":
            # A checker alone is a repeated pattern (ambiguous for matching): each cell also gets a random
            # palette colour, the parity only alternates its brightness.
            cell_q = q * f
            idx = np.minimum((noise.cell(cell_q + 0.5 * GRID) * k).astype(np.int64), k - 1)
            parity = (np.floor(cell_q).astype(np.int64).sum(axis=-1) % 2).astype(np.float64)
            band = 1.0 + _band_weight(f, footprint) * 0.5 * (parity - 0.5)
            base = self.colors[idx] * band[:, None]
        else:
            raise ValueError(f"unknown material kind {self.kind!r}; expected one of {KINDS}")
        # Large-scale tint variation (the blobs pattern already is one) and grain below the pattern scale.
        low = 0.5 if self.kind == "blobs" else noise.fbm(q + 11.0, f * 0.35, 1, footprint)
        fine = noise.fbm(q - 5.0, f * 5.0, 1, footprint)
        lum = (0.7 + 0.6 * (low - 0.5) * 2.0) * (1.0 + self.detail * (fine - 0.5) * 2.0)
        return np.clip(base * lum[:, None], 0.0, 1.0)


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly random ``[3, 3]`` rotation (QR of a Gaussian matrix, sign-fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    i = np.floor(h * 6.0).astype(np.int64) % 6
    f = h * 6.0 - np.floor(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack(
        [
            np.stack([v, t, p], -1),
            np.stack([q, v, p], -1),
            np.stack([p, v, t], -1),
            np.stack([p, q, v], -1),
            np.stack([t, p, v], -1),
            np.stack([v, p, q], -1),
        ]
    )
    return table[i, np.arange(len(h))]


def random_material(
    rng: np.random.Generator, scale: float, kind: str | None = None, n_colors: int | None = None
) -> Material:
    """Draw a material: a palette of related hues with varied brightness, a pattern kind and a random texture frame.

    Args:
        rng: source of randomness (the scene's generator, for determinism).
        scale: base pattern frequency in cycles per world unit (larger objects want smaller values).
        kind: force a pattern kind; random otherwise.
        n_colors: palette size; random in [3, 5] otherwise.
    """
    kind = kind or KINDS[rng.integers(len(KINDS))]
    k = int(n_colors or rng.integers(3, 6))
    hue0 = rng.random()
    hues = (hue0 + rng.normal(0.0, 0.12, k) + (rng.random(k) < 0.3) * 0.5) % 1.0
    sats = rng.uniform(0.25, 0.85, k)
    # Spread brightness so neighbouring palette entries differ in luminance, not only in hue.
    vals = rng.permutation(np.linspace(0.3, 0.95, k))
    colors = _hsv_to_rgb(hues, sats, vals)
    return Material(
        kind=kind,
        colors=colors,
        scale=float(scale * rng.uniform(0.8, 1.25)),
        rot=random_rotation(rng),
        offset=rng.uniform(0, GRID, 3),
        detail=float(rng.uniform(0.2, 0.45)),
    )
