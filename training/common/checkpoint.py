"""Training checkpoints: atomic writes, automatic resume from the latest, exact RNG restoration.

A checkpoint is one ``torch.save`` file of plain data (tensors, numbers, strings, lists, dicts and, where a
recipe needs an official layout, ``argparse.Namespace``), read back with ``backbone.checkpoint.safe_load``:

===============  =================================================================================================
key              content
===============  =================================================================================================
``model``        the model state dict (the recipe may map it to an official layout first)
``optimizer``    ``optimizer.state_dict()``
``scheduler``    the schedule's ``state_dict()`` (plain parameters)
``scaler``       ``GradScaler.state_dict()`` when fp16 loss scaling is used
``rng``          one entry per rank: python / numpy / torch / CUDA generator states + named extra generators
``iter``         iterations completed (the official DUNE name for it)
``sampler``      data position (``InfiniteDistributedSampler.state_dict()``)
``config``       the resolved config as plain data
``...``          recipe extras (e.g. DUNE's ``args``)
===============  =================================================================================================

Files are named ``checkpoint_{iter:08d}.pth`` in the output folder and written atomically (``backbone.fileio``)
so a kill mid-write never leaves a truncated checkpoint; ``CheckpointManager.latest()`` finds the newest one, and
``keep`` prunes older ones.
"""

from __future__ import annotations

import logging
import os
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from backbone.checkpoint import CheckpointError, safe_load
from backbone.fileio import atomic_file
from training.common import distributed

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^checkpoint_(\d{8})\.pth$")


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP (``.module``) and/or ``torch.compile`` (``._orig_mod``) wrappers."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


# ---------------------------------------------------------------------------------------------- RNG states
def capture_rng_state(generators: Mapping[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Every global RNG state of this process (plus named ``generators``) as plain data.

    numpy's state is stored as a tuple of Python ints so that the checkpoint loads with ``weights_only=True``.
    """
    np_state = np.random.get_state()  # noqa: NPY002  (the legacy global RNG is what third-party code uses)
    state = {
        "python": random.getstate(),
        "numpy": (np_state[0], [int(x) for x in np_state[1]], int(np_state[2]), int(np_state[3]), float(np_state[4])),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "generators": {k: g.get_state() for k, g in (generators or {}).items()},
    }
    return state


def restore_rng_state(state: Mapping[str, Any], generators: Mapping[str, torch.Generator] | None = None) -> None:
    """Inverse of ``capture_rng_state`` (CUDA states restored only when as many devices are visible)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    legacy = (name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached)
    np.random.set_state(legacy)  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    saved = state.get("generators", {})
    for name, gen in (generators or {}).items():
        if name in saved:
            gen.set_state(saved[name])
        else:
            logger.warning("checkpoint has no state for generator %r; it keeps its current state", name)


# ---------------------------------------------------------------------------------------------- files
def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` onto ``path`` atomically (``backbone.fileio.atomic_file``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        torch.save(obj, tmp)
    return path


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint safely (``weights_only=True``; only ``argparse.Namespace`` allowed beyond plain data).

    Raises:
        CheckpointError: missing or unreadable file, or not a dict.
    """
    ckpt = safe_load(path)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: a training checkpoint is a dict, got {type(ckpt).__name__}")
    return ckpt


class CheckpointManager:
    """Saves ``checkpoint_{iter:08d}.pth`` files in ``output_dir`` and finds the latest one.

    ``save`` is **collective** under torchrun: every rank calls it, the RNG states of all ranks are gathered,
    rank 0 writes, and all ranks wait for the write before going on.

    Args:
        output_dir: the run's folder.
        keep: how many recent checkpoints to keep (older ones are deleted after a successful write; 0 = all).
    """

    def __init__(self, output_dir: str | os.PathLike, keep: int = 2) -> None:
        self.output_dir = Path(output_dir)
        self.keep = keep

    def path_for(self, iteration: int) -> Path:
        return self.output_dir / f"checkpoint_{iteration:08d}.pth"

    def all(self) -> list[tuple[int, Path]]:
        """``[(iteration, path)]`` of the finished checkpoints, oldest first."""
        if not self.output_dir.is_dir():
            return []
        found = [(int(m.group(1)), p) for p in self.output_dir.iterdir() if (m := _NAME.match(p.name))]
        return sorted(found)

    def latest(self) -> Path | None:
        """The newest checkpoint, or ``None``."""
        found = self.all()
        return found[-1][1] if found else None

    def save(
        self,
        iteration: int,
        *,
        model: nn.Module | Mapping[str, torch.Tensor],
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        scaler: Any = None,
        sampler: Any = None,
        config: Mapping | None = None,
        generators: Mapping[str, torch.Generator] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Path:
        """Write the training state after ``iteration`` completed iterations (collective; see the class doc).

        Args:
            iteration: iterations completed; resuming starts at this iteration.
            model: a module (DDP / compile wrappers removed) or an already mapped state dict.
            optimizer, scheduler, scaler, sampler: objects with ``state_dict()`` (any may be ``None``).
            config: resolved config as plain data.
            generators: named ``torch.Generator`` s whose states are saved with the global RNG states.
            extra: more top-level entries (plain data or ``argparse.Namespace``).

        Returns:
            The checkpoint path.
        """
        rng = distributed.all_gather_object(capture_rng_state(generators))
        path = self.path_for(iteration)
        if distributed.is_main_process():
            state = model if isinstance(model, Mapping) else unwrap(model).state_dict()
            ckpt = {
                "model": {k: v.detach().cpu() for k, v in state.items()},
                "optimizer": optimizer.state_dict() if optimizer is not None else None,
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "scaler": scaler.state_dict() if scaler is not None else None,
                "sampler": sampler.state_dict() if sampler is not None else None,
                "rng": rng,
                "iter": int(iteration),
                "config": dict(config) if config is not None else None,
            }
            for key, value in (extra or {}).items():
                if key in ckpt:
                    raise ValueError(f"extra checkpoint entry {key!r} would overwrite a standard one")
                ckpt[key] = value
            atomic_torch_save(ckpt, path)
            logger.info("saved %s", path)
            self._prune()
        distributed.barrier()
        return path

    def _prune(self) -> None:
        if self.keep <= 0:
            return
        for _, old in self.all()[: -self.keep]:
            old.unlink(missing_ok=True)

    def resume(
        self,
        *,
        model: nn.Module | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        scaler: Any = None,
        sampler: Any = None,
        generators: Mapping[str, torch.Generator] | None = None,
        model_state_fn=None,
    ) -> dict[str, Any] | None:
        """Restore from the latest checkpoint in ``output_dir``, if there is one.

        Args:
            model: receives ``ckpt["model"]`` (after ``model_state_fn``) with a strict load.
            model_state_fn: maps the stored state dict back to the module's keys (for official layouts).
            optimizer, scheduler, scaler, sampler, generators: restored from their saved states.

        Returns:
            The loaded checkpoint dict (``ckpt["iter"]`` = iterations completed), or ``None`` when none exists.
        """
        found = self.all()
        if not found:
            return None
        path, ckpt, broken = None, None, []
        for _, candidate in reversed(found):  # newest first; a file cut short by a crash falls back to the previous
            try:
                ckpt, path = load_checkpoint(candidate), candidate
                break
            except CheckpointError as err:
                broken.append((candidate, err))
        if ckpt is None:
            raise CheckpointError(
                f"no checkpoint in {self.output_dir} can be read (newest: {broken[0][1]}); "
                "start a new run in another folder"
            )
        if broken:
            logger.warning(
                "%s cannot be read (%s); resuming from the previous checkpoint %s instead (iteration %d). The "
                "unreadable file is left in place; it is replaced when training reaches its iteration again",
                broken[0][0].name, broken[0][1], path.name, ckpt.get("iter", -1),
            )  # fmt: skip
        restore(ckpt, model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, sampler=sampler,
                generators=generators, model_state_fn=model_state_fn)  # fmt: skip
        logger.info("resumed from %s (iteration %d)", path, ckpt["iter"])
        return ckpt


def restore(
    ckpt: Mapping[str, Any],
    *,
    model: nn.Module | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
    scaler: Any = None,
    sampler: Any = None,
    generators: Mapping[str, torch.Generator] | None = None,
    model_state_fn=None,
) -> None:
    """Load every given object's state from ``ckpt`` and restore this rank's RNG states."""
    if model is not None:
        from backbone.checkpoint import load_strict

        state = ckpt["model"]
        if model_state_fn is not None:
            state = model_state_fn(state)
        load_strict(unwrap(model), state, "training checkpoint")
    if optimizer is not None and ckpt.get("optimizer") is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt.get("scheduler") is not None:
        check = getattr(scheduler, "check_state_dict", None) or scheduler.load_state_dict
        check(ckpt["scheduler"])
    if scaler is not None and ckpt.get("scaler") is not None:
        scaler.load_state_dict(ckpt["scaler"])
    if sampler is not None and ckpt.get("sampler") is not None:
        sampler.load_state_dict(ckpt["sampler"])
    rng = ckpt.get("rng")
    if rng:
        rank = distributed.get_rank()
        if len(rng) != distributed.get_world_size():
            logger.warning(
                "checkpoint holds RNG states of %d rank(s), this job has %d: rank %d takes state %d",
                len(rng), distributed.get_world_size(), rank, rank % len(rng),
            )  # fmt: skip
        restore_rng_state(rng[rank % len(rng)], generators)
