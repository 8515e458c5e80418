"""The one training loop and what every recipe's ``train(cfg)`` does around it, the same way.

A recipe keeps its trainer (what one step is), its data (and how a data position resumes), what a checkpoint
holds and its final outputs. Shared here:

- ``run_loop``: iterations from ``start`` to ``total``, a step per batch, scalars to TensorBoard and the console,
  hooks every N iterations (validation), ``on_iteration``, a checkpoint every ``checkpoint_every`` and at the
  end, and on a non-finite loss the last good checkpoint saved and named in the one-line ``TrainingDiverged``;
- ``check_finite``: the collective "is the loss finite everywhere" test every trainer runs before its update;
- ``autocast``: bf16 autocast on CUDA when the config asks for it (a no-op elsewhere);
- ``start_run``: join the process group, seed this rank, create the output folder, write ``config.json``;
- ``seed_everything``: python, numpy and torch seeds;
- ``wrap_ddp``: DistributedDataParallel when a process group runs, the module itself otherwise;
- ``all_ranks_finite``: the collective "is the loss finite everywhere" test that aborts a diverging run on
  every rank at the same iteration (a rank that raised alone would leave the others waiting in a collective);
- ``agreed_digests``: the end-of-run check that every rank holds the same weights;
- ``TrainingDiverged``: the user error a non-finite loss raises (step, loss terms, likely cause, remedy and the
  last good checkpoint in one line).
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recon.errors import UserError
from training.common import distributed
from training.common.config import RunConfig, save_json
from training.common.distributed import DistInfo, init_distributed
from training.common.logging import TrainLogger

logger = logging.getLogger(__name__)


def autocast(run: RunConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` when ``run.bf16`` and the device is CUDA, else a no-op context."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=run.bf16 and device.type == "cuda")


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (each rank passes ``seed + rank``, as the official ``fix_random_seeds``)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002  (third-party code draws from the legacy global RNG)
    torch.manual_seed(seed)


def start_run(cfg) -> tuple[DistInfo, Path]:
    """Start a run: process group (under torchrun), seeds ``train.seed + rank``, output folder, ``config.json``.

    Args:
        cfg: the resolved config (a dataclass tree whose ``train`` section has ``device``, ``seed`` and
            ``output_dir``), saved as ``output_dir/config.json`` by rank 0.

    Returns:
        ``(info, output folder)``.
    """
    t = cfg.train
    info = init_distributed(t.device)
    seed_everything(t.seed + info.rank)
    out = Path(t.output_dir)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_json(cfg, out / "config.json")
    return info, out


def wrap_ddp(module: torch.nn.Module, info: DistInfo, **ddp_kwargs) -> torch.nn.Module:
    """``module`` in ``DistributedDataParallel`` (on ``info.device``) when a process group runs, else ``module``.

    ``ddp_kwargs`` go to ``DistributedDataParallel`` (e.g. ``find_unused_parameters=True``).
    """
    if not info.enabled:
        return module
    ids = [info.device.index] if info.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(module, device_ids=ids, **ddp_kwargs)


def all_ranks_finite(finite: bool | torch.Tensor, info: DistInfo) -> bool:
    """Whether the loss is finite on every rank (a collective: every rank must call it at the same step)."""
    flag = torch.tensor(float(finite), device=info.device)
    return distributed.all_reduce_sum(flag).item() >= info.world_size


def check_finite(loss: torch.Tensor | bool, it: int, terms: Mapping[str, float], cause: str, info: DistInfo) -> None:
    """Raise ``TrainingDiverged`` unless the loss is finite on every rank (a collective; call it before the update).

    Args:
        loss: this rank's loss (or whether it is finite).
        it: the iteration (0-based) whose loss it is.
        terms: the loss terms for the message; ``{"loss": loss}`` when empty.
        cause: the likely cause, worded for the recipe.
        info: this process's place in the job.
    """
    finite = loss if isinstance(loss, bool) else torch.isfinite(loss).all()
    if not all_ranks_finite(finite, info):
        raise TrainingDiverged(it, terms or {"loss": float(torch.as_tensor(loss).detach())}, cause)


def agreed_digests(digest: str) -> list[str]:
    """Every rank's weights ``digest`` (rank order), after checking they are all the same.

    Raises:
        RuntimeError: the ranks' weights differ (DDP drifted: a bug, not a user error).
    """
    digests = distributed.all_gather_object(digest)
    if len(set(digests)) != 1:
        raise RuntimeError(f"ranks ended with different weights: {digests}")
    return digests


DIVERGENCE_REMEDY = (
    "lower train.lr (e.g. halve it) or lengthen train.warmup_fraction, clip gradients (--set train.clip_grad=1.0) "
    "or turn bf16 off (--set train.bf16=false)"
)
"""What to change when a run diverges (every recipe has these fields)."""


class TrainingDiverged(UserError, FloatingPointError):
    """A non-finite loss stopped the run. ``str()`` is one line for the user: the step, the loss terms, the likely
    cause, the remedy and, when the loop saved it, the checkpoint holding the last good weights (a ``UserError``:
    every recipe's command line prints it as one line).

    Args:
        step: the optimizer step whose loss was not finite (its update was not applied).
        terms: the step's loss terms (``loss``, ``loss_regr``, ...), as logged.
        cause: the likely cause, worded for the recipe.
        checkpoint: the checkpoint of the weights before that step (``with_checkpoint``).
    """

    def __init__(self, step: int, terms: Mapping[str, float], cause: str, checkpoint: Path | None = None) -> None:
        self.step, self.terms, self.cause, self.checkpoint = step, dict(terms), cause, checkpoint
        values = ", ".join(f"{k} {v:.4g}" for k, v in self.terms.items())
        saved = f"; the last good weights are in {checkpoint} (the run resumes from them)" if checkpoint else ""
        super().__init__(
            f"the loss is not finite at step {step} ({values}): likely {cause}; remedy: {DIVERGENCE_REMEDY}{saved}"
        )

    def with_checkpoint(self, checkpoint: Path | None) -> TrainingDiverged:
        """The same error naming ``checkpoint`` as the last good state."""
        return TrainingDiverged(self.step, self.terms, self.cause, checkpoint)


# ---------------------------------------------------------------------------------------------- the loop
@dataclass(frozen=True)
class LoopResult:
    """Where ``run_loop`` stopped and how fast it went."""

    start: int
    """The iteration it started from (0, or the resumed checkpoint's)."""
    iterations: int
    """Iterations completed in total (resumed ones included)."""
    items: float
    """Items (pairs, frames, images: the ``count`` of every step) processed by this call."""
    seconds: float
    """Wall time of this call's loop (data loading included)."""

    @property
    def throughput(self) -> float:
        """Items per wall second of this call (0 when it ran no iteration)."""
        return self.items / self.seconds if self.iterations > self.start and self.seconds > 0 else 0.0


def run_loop(
    trainer: Any,
    batches: Iterable,
    *,
    run: RunConfig,
    info: DistInfo,
    start: int,
    total: int,
    save: Callable[[int], Path],
    step: Callable[[Any, int], Mapping[str, float]] | None = None,
    count: Callable[[Mapping[str, float]], float] | None = None,
    unit: str = "items",
    every: Mapping[int, Callable[[int], Mapping[str, float] | None]] | None = None,
    on_iteration: Callable[[int, Any], None] | None = None,
) -> LoopResult:
    """Train from iteration ``start`` to ``total``: one step per batch, logging, hooks, checkpoints.

    Per batch: ``metrics = step(batch, it)`` (default ``trainer.step``), ``{unit}_per_s`` added, scalars logged at
    ``it``; then ``it += 1``, ``on_iteration(it, trainer)``, each ``every`` hook whose period divides ``it`` (or at
    ``total``; the scalars it returns are logged without prefix), and ``save(it)`` every ``run.checkpoint_every``
    iterations and at ``total``. A step raising ``TrainingDiverged`` applied no update: the loop saves the state
    as ``save(it)`` and re-raises the error naming that checkpoint (on rank 0). Every rank must call it.

    Args:
        trainer: the recipe's trainer (passed to ``on_iteration``; ``trainer.step`` is the default step).
        batches: what ``step`` takes, one per iteration, from iteration ``start`` on (may be infinite).
        run: output folder, checkpoint cadence and logging (``train`` section of the recipe's config).
        info: this process's place in the job.
        start: iterations already done (resumed).
        total: iterations of the whole run.
        save: writes the training checkpoint after ``it`` iterations and returns its path (collective).
        step: ``step(batch, it) -> scalars``; default ``trainer.step``.
        count: items processed by a step over all ranks, from its scalars (throughput); default 0.
        unit: the items' name in the logged rate ``{unit}_per_s``.
        every: ``{period: hook(it) -> scalars or None}``, e.g. validation (a period <= 0 never runs).
        on_iteration: called as ``on_iteration(iterations_done, trainer)`` after each step, before that
            iteration's hooks and checkpoint (monitoring; tests raise from it to simulate a crash).

    Returns:
        ``LoopResult``.

    Raises:
        TrainingDiverged: a step's loss was not finite (the last good state saved and named).
    """
    step = step or trainer.step
    log = TrainLogger(run.output_dir, enabled=info.is_main, console_every=run.log_every, tensorboard=run.tensorboard)
    it, items = start, 0.0
    t_start = t_last = time.perf_counter()
    try:
        for batch in batches if it < total else ():
            try:
                metrics = dict(step(batch, it))
            except TrainingDiverged as err:
                path = save(it)  # the weights before the bad step (it applied no update)
                raise err.with_checkpoint(path if info.is_main else None) from None
            now = time.perf_counter()
            n = float(count(metrics)) if count is not None else 0.0
            items += n
            metrics[f"{unit}_per_s"] = n / max(now - t_last, 1e-9)
            t_last = now
            log.log(it, metrics)
            it += 1
            if on_iteration is not None:
                on_iteration(it, trainer)
            for period, hook in (every or {}).items():
                if period > 0 and (it % period == 0 or it == total):
                    scalars = hook(it)
                    if scalars:
                        log.log(it, scalars, prefix="")
            if it % run.checkpoint_every == 0 or it == total:
                save(it)
            if it >= total:
                break
    finally:
        log.close()
    return LoopResult(start, it, items, time.perf_counter() - t_start)
