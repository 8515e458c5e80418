"""What every recipe's ``train(cfg)`` does before its loop and after it, the same way.

The loops themselves stay in the recipes: they differ in what a step is (gradient accumulation, validation,
reconstruction images), how data positions resume and what a checkpoint holds. Shared here:

- ``start_run``: join the process group, seed this rank, create the output folder, write ``config.json``;
- ``seed_everything``: python, numpy and torch seeds;
- ``wrap_ddp``: DistributedDataParallel when a process group runs, the module itself otherwise;
- ``all_ranks_finite``: the collective "is the loss finite everywhere" test that aborts a diverging run on
  every rank at the same iteration (a rank that raised alone would leave the others waiting in a collective);
- ``agreed_digests``: the end-of-run check that every rank holds the same weights.
"""

from __future__ import annotations

import logging
import random
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
