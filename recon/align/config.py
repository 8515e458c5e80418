"""Configuration of the global alignments (frozen dataclasses, every field documented)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class SparseAlignConfig:
    """Knobs of ``recon.align.sparse_align`` (MASt3R-SfM style)."""

    subsample: int = 8
    """Anchor grid stride in pixels: one optimised depth per ``subsample x subsample`` block."""
    opt_level: Literal["coarse", "refine", "refine+depth"] = "refine+depth"
    """``coarse``: 3D matching only (poses and per-view scales); ``refine``: + 2D reprojection with focal and
    principal point; ``refine+depth``: + the anchor depths."""
    lr_coarse: float = 0.02
    """Peak learning rate of the coarse stage (cosine decay to 0)."""
    niter_coarse: int = 300
    """Iterations of the coarse stage."""
    lr_fine: float = 0.005
    """Peak learning rate of the fine stage."""
    niter_fine: int = 300
    """Iterations of the fine stage (ignored for ``opt_level='coarse'``)."""
    opt_pp: bool = True
    """Refine the principal points in the fine stage (never where ``Priors.K`` is given)."""
    min_matches: int = 12
    """Pairs with fewer (consistent) matches do not use their matches: their predicted point maps tie the two views
    instead (a regression loss on the anchor grid, as MASt3R-SfM falls back to DUSt3R's), so every view that any
    pair connects is placed."""
    match_consistency: float = 0.1
    """Drop a match when its two pixels' points in the pair's own point maps are farther apart than this
    fraction of their depth (a free outlier test, since both points are in one frame); 0 disables it."""
    min_conf: float = 1.0
    """Pixels whose point confidence is at or below this value get no weight in the canonical point maps."""
    device: str = "cpu"
    """Torch device of the optimisation."""
    dtype: Literal["float32", "float64"] = "float32"
    """Precision of the optimisation (initialisation is always float64)."""
    seed: int = 0
    """Seed of the (few) random choices: point sub-sampling of registrations."""
    rel_tol: float = 1e-4
    """Early stop of the coarse stage: after a quarter of its iterations it ends when the last 20 lowered its best
    loss by less than this fraction (``scene.info["iters_coarse"]`` / ``["early_stop_coarse"]`` report it); 0 runs
    every iteration."""
    rel_tol_fine: float = 1e-4
    """The same for the fine stage. On the parity fixtures and synthetic orbits it cuts 600 iterations to 150-230
    with pose errors as good or better and focal errors of 0.5-0.8 % instead of 0.3-0.8 % (docs/performance.md);
    0 restores the full schedule."""
    threads: int | None = 1
    """Torch intra-op threads during the optimisation (restored after); its ops are small, so more threads mostly
    wait for each other, badly so on a busy machine. ``None`` keeps the process setting."""
    progress: bool = False
    """Show tqdm progress bars."""


@dataclass(frozen=True)
class DenseAlignConfig:
    """Knobs of ``recon.align.dense_align`` (DUSt3R style)."""

    subsample: int = 8
    """Stride of the pixel grid on which point maps are compared and depths optimised (a log-depth correction
    per grid pixel, bilinearly upsampled to full resolution at the end)."""
    lr: float = 0.01
    """Peak learning rate (cosine decay to ``lr * 1e-3``)."""
    niter: int = 300
    """Iterations."""
    opt_depth: bool = True
    """Optimise the per-pixel depth corrections (otherwise only a scale per view)."""
    opt_focal: bool = True
    """Optimise the focal lengths (never where ``Priors`` give them)."""
    opt_pp: bool = False
    """Optimise the principal points (DUSt3R keeps them at the image centre by default)."""
    min_conf: float = 1.0
    """Pixels at or below this confidence get no weight (weights are ``log(conf)``)."""
    device: str = "cpu"
    """Torch device of the optimisation."""
    dtype: Literal["float32", "float64"] = "float32"
    """Precision of the optimisation."""
    seed: int = 0
    """Seed of the random choices (point sub-sampling of registrations)."""
    rel_tol: float = 0.0
    """Early stop: end when the loss fell by less than this fraction over the last 20 iterations; 0 runs all."""
    threads: int | None = 1
    """Torch intra-op threads during the optimisation (restored after); ``None`` keeps the process setting."""
    progress: bool = False
    """Show tqdm progress bars."""
