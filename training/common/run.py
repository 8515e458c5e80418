"""What every recipe's ``train(cfg)`` does before its loop and after it, the same way.

The loops themselves stay in the recipes: they differ in what a step is (gradient accumulation, validation,
reconstruction images), how data positions resume and what a checkpoint holds. Shared here:

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

import logging
import random
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from training.common import distributed
from training.common.config import save_json
from training.common.distributed import DistInfo, init_distributed

logger = logging.getLogger(__name__)


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


class TrainingDiverged(FloatingPointError):
    """A non-finite loss stopped the run. ``str()`` is one line for the user: the step, the loss terms, the likely
    cause, the remedy and, when the loop saved it, the checkpoint holding the last good weights.

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
