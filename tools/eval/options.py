"""``BenchmarkOptions``: how the pose benchmark samples and scores (torch-free: ``recon eval`` builds its flags
from these fields without importing torch; ``tools.eval.benchmark`` re-exports it)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

NUM_FRAMES = 10  # frames per sequence (PoseDiffusion protocol: all 45 pairs of 10 frames)


@dataclass(frozen=True)
class BenchmarkOptions:
    """How to sample and score.

    Attributes:
        categories: categories to evaluate (``None``: all of the sampling file, or the reader's default).
        seed: RNG seed for a new sampling file (``None``: 0, or whatever an existing file holds).
        recipe: sampling recipe for a new sampling file (``None``: ``"pd"``), see ``tools.eval.sampling``.
        num_frames: frames per sequence.
        sampling_path: sampling file to read, or to write if absent (``None``: ``<out>/sampling.json``).
        convention: pair convention of the translation error (``"pd"`` or ``"vggt"``).
        rotation_numerics: ``"exact"`` or ``"pd"`` (PyTorch3D's extrapolated acos).
        shard: ``(i, n)`` for a manual shard; ignored under torchrun, where the rank decides.
        fail_fast: stop at the first failing sequence instead of recording it as failed (``evaluate``).
    """

    categories: Sequence[str] | None = None
    seed: int | None = None
    recipe: Literal["pd", "vggt"] | None = None
    num_frames: int = NUM_FRAMES
    sampling_path: Path | None = None
    convention: Literal["pd", "vggt"] = "pd"
    rotation_numerics: Literal["exact", "pd"] = "exact"
    shard: tuple[int, int] = (0, 1)
    fail_fast: bool = False
