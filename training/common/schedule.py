"""Per-iteration schedules: linear warm-up, then a half cosine down to a floor.

The shape is DINO's / DUNE's ``cosine_scheduler`` evaluated lazily (no array of every iteration): for ``i <
warmup`` the value rises linearly from ``start`` to ``base`` *inclusive* (``linspace(start, base, warmup)``); then
``final + (base - final) * (1 + cos(pi * j / (total - warmup))) / 2`` with ``j = i - warmup``. Iterations past
``total`` keep the floor.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

from torch.optim import Optimizer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WarmupCosine:
    """Linear warm-up from ``start`` to ``base`` over ``warmup`` iterations, cosine to ``final`` at ``total``.

    Used for learning rates (DUNE: base = 3e-4 x batch / 256, final 1e-6, warm-up 20 %) and for momentum-like
    coefficients (DUNE's teacher-statistics EMA: 1.0 -> 0.001, no warm-up).
    """

    base: float
    """Value at the end of the warm-up (the peak)."""
    final: float
    """Floor reached at ``total``."""
    total: int
    """Total number of iterations."""
    warmup: int = 0
    """Warm-up iterations (0: start at ``base``)."""
    start: float = 0.0
    """Value at iteration 0 of the warm-up."""

    def __post_init__(self) -> None:
        if self.total <= 0 or not 0 <= self.warmup <= self.total:
            raise ValueError(f"need total > 0 and 0 <= warmup <= total, got total={self.total} warmup={self.warmup}")

    def __call__(self, it: int) -> float:
        """Value at iteration ``it`` (0-based)."""
        if it < self.warmup:
            if self.warmup == 1:
                return self.base
            return self.start + (self.base - self.start) * it / (self.warmup - 1)
        n = self.total - self.warmup
        j = min(it - self.warmup, n)
        if n == 0:
            return self.final
        return self.final + 0.5 * (self.base - self.final) * (1.0 + math.cos(math.pi * j / n))

    def apply(self, optimizer: Optimizer, it: int) -> float:
        """Set every param group's ``lr`` (scaled by the group's ``lr_scale`` if present); return the value."""
        value = self(it)
        for group in optimizer.param_groups:
            group["lr"] = value * group.get("lr_scale", 1.0)
        return value

    def state_dict(self) -> dict:
        """Plain-data parameters (checkpointed so that a resume can tell when they changed)."""
        return asdict(self)

    def check_state_dict(self, state: dict) -> None:
        """Log a warning when a resumed run's schedule differs from the one it was saved with."""
        if state and state != self.state_dict():
            logger.warning("schedule changed since the checkpoint: %s -> %s", state, self.state_dict())
