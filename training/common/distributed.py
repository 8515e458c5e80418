"""Process-group set-up for ``torchrun`` launches, with a single-process fallback.

``init_distributed()`` reads the environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``/``PORT``) and starts a process group: NCCL when the training device is CUDA, gloo on CPU. Without
those variables (``python -m training.X``) it returns a single-process ``DistInfo`` and every collective helper
below becomes a no-op, so recipe code never branches on "distributed or not".
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    """Global rank."""
    world_size: int = 1
    """Number of processes."""
    local_rank: int = 0
    """Rank on this node (selects ``cuda:local_rank``)."""
    device: torch.device = torch.device("cpu")
    """Device this rank trains on."""
    backend: str | None = None
    """``"nccl"``, ``"gloo"``, or ``None`` for a single process without a process group."""

    @property
    def is_main(self) -> bool:
        """Rank 0: writes checkpoints, logs and TensorBoard events."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.backend is not None


def _resolve_device(device: str, local_rank: int) -> torch.device:
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"device {device!r} requested but CUDA is not available; use device 'cpu'")
        return torch.device("cuda", local_rank if device == "cuda" else torch.device(device).index)
    return torch.device(device)


def init_distributed(device: str = "auto", timeout_minutes: float = 30.0) -> DistInfo:
    """Start the process group if launched by torchrun, else return a single-process ``DistInfo``.

    Args:
        device: ``"auto"`` (CUDA when available), ``"cuda"`` (each rank takes ``cuda:LOCAL_RANK``) or ``"cpu"``.
        timeout_minutes: collective timeout.

    Returns:
        ``DistInfo`` with rank, world size, local rank, device and backend (NCCL for CUDA, gloo for CPU).
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = _resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world <= 1:
        return DistInfo(0, 1, 0, dev, None)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        kwargs = {"device_id": dev} if dev.type == "cuda" else {}
        dist.init_process_group(backend, timeout=timedelta(minutes=timeout_minutes), **kwargs)
    info = DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, dev, backend)
    logger.info("process group %s: rank %d of %d on %s", backend, info.rank, info.world_size, dev)
    return info


def is_enabled() -> bool:
    """Whether a process group is running."""
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_enabled() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_enabled() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if is_enabled():
        dist.barrier()


@torch.no_grad()
def all_gather_cat(tensor: Tensor) -> Tensor:
    """Concatenate ``tensor [B, ...]`` of every rank along dim 0 (same shape on every rank; no gradient)."""
    if not is_enabled():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)


@torch.no_grad()
def all_reduce_mean(tensor: Tensor) -> Tensor:
    """Mean of ``tensor`` over ranks (a new tensor; the input is untouched)."""
    if not is_enabled():
        return tensor.clone()
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / get_world_size()


@torch.no_grad()
def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum of ``tensor`` over ranks (a new tensor)."""
    if not is_enabled():
        return tensor.clone()
    out = tensor.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_gather_object(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` (picklable objects; ``[obj]`` in a single process)."""
    if not is_enabled():
        return [obj]
    out = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj, src: int = 0):
    """Rank ``src``'s ``obj`` on every rank."""
    if not is_enabled():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def cleanup(wait: bool = True) -> None:
    """Destroy the process group if one is running; with ``wait`` (a run that succeeded) once every rank is here.

    The barrier first: a gloo rank that tears its connections down while another rank is still in a collective
    can abort the other process at exit ("terminate called without an active exception", seen once in CI in a
    two-rank distillation run that had finished its work). After an error, ``wait=False``: the other ranks may
    never arrive.
    """
    if is_enabled():
        if wait:
            dist.barrier()
        dist.destroy_process_group()
