"""torchrun support: every rank evaluates its shard of the sequences, rank 0 writes the sampling and the summary.

Only barriers cross processes (results are merged through the files of the shared output folder), so the
process group always uses gloo, which works with or without GPUs; each rank's model still runs on its own
device (``cuda:LOCAL_RANK`` when GPUs are present).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta

logger = logging.getLogger(__name__)

# Ranks that finish early wait at the final barrier for the slowest one: allow long evaluations.
_BARRIER_TIMEOUT = timedelta(hours=48)


@dataclass(frozen=True)
class DistContext:
    """Rank, world size and whether a process group was started by ``init_from_env``."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    active: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()

    def close(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.destroy_process_group()


def init_from_env() -> DistContext:
    """Start a gloo process group when launched by torchrun (``WORLD_SIZE`` > 1), else a single-process context."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=_BARRIER_TIMEOUT)
    ctx = DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")), True)
    logger.info("distributed evaluation: rank %d of %d", ctx.rank, ctx.world_size)
    return ctx
