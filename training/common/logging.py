"""Training logs: TensorBoard scalars on rank 0 and one console line every few iterations.

(The module is named after what it does; inside it, ``import logging`` is the standard library.)
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path

logger = logging.getLogger(__name__)


def setup_logging(rank: int = 0, level: int = logging.INFO, log_file: str | os.PathLike | None = None) -> None:
    """Console logging for a training entry point: full on rank 0, warnings only on other ranks.

    Called by entry points (``python -m training.X``), never at import. ``log_file`` (rank 0) also receives it.
    """
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"%(asctime)s [r{rank}] %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level if rank == 0 else logging.WARNING)
    if log_file is not None and rank == 0:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        fh = logging.FileHandler(log_file)
        fh.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(fh)


class TrainLogger:
    """Scalars to TensorBoard (``<output_dir>/tb``) and the console, from rank 0 only.

    Args:
        output_dir: the run folder (events go to ``output_dir/tb``).
        enabled: write anything at all (pass ``dist_info.is_main``).
        console_every: print a console line every this many iterations (0 = never).
        tensorboard: write TensorBoard events (needs the ``tensorboard`` package).
    """

    def __init__(
        self, output_dir: str | os.PathLike, enabled: bool = True, console_every: int = 10, tensorboard: bool = True
    ) -> None:
        self.enabled = enabled
        self.console_every = console_every
        self._writer = None
        self._last_time = time.perf_counter()
        self._last_step: int | None = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:  # tensorboard is an optional dependency of torch
                raise ImportError(
                    f"TensorBoard logging needs the tensorboard package ({err}); install it with "
                    "`pip install tensorboard` or disable it in the config"
                ) from None
            self._writer = SummaryWriter(log_dir=str(Path(output_dir) / "tb"))

    def log(self, step: int, scalars: Mapping[str, float], prefix: str = "train/") -> None:
        """Record ``scalars`` at ``step`` (TensorBoard every call, console every ``console_every`` steps)."""
        if not self.enabled:
            return
        if self._writer is not None:
            for k, v in scalars.items():
                self._writer.add_scalar(prefix + k, float(v), step)
        if self.console_every and step % self.console_every == 0:
            shown = "  ".join(f"{k} {float(v):.4g}" for k, v in scalars.items())
            logger.info("it %d  %s", step, shown)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
