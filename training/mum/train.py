"""The MuM pre-training loop: one ``MuMTrainer.step`` per iteration, ``train(cfg)`` around it.

Per iteration (train-dev ``mum/train.py``, reference/dune_mum.md §11): set the lr from the warm-up + cosine
schedule (peak ``blr x frames / 256``); under bf16 autocast (CUDA) run the masked autoencoder (DDP) on the batch
``[n, S, 3, H, W]``; abort if the loss is not finite on any rank; backward; optionally clip the global gradient
norm (off by default, as the official run; the norm is logged); AdamW step. The masking noise of iteration ``it``
on rank ``r`` comes from a generator seeded with ``(seed, it, r)``, so that, like the batches, it is replayed
exactly on resume.

``train`` adds the data pipeline (``MultiViewBatches``), checkpoints every N iterations (the model in the official
autoencoder layout + the training state; atomic; the run resumes automatically from the latest one in
``output_dir``), TensorBoard scalars and reconstruction images, ``config.json``, and at the end the final files
of ``training.mum.model.write_outputs`` and ``summary.json`` (frames/s).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from backbone.checkpoint import load_strict
from backbone.mum import MUM_DECODER_PREFIXES
from training.common import distributed
from training.common.checkpoint import CheckpointManager
from training.common.config import to_dict, write_json_atomic
from training.common.data import sample_seed
from training.common.distributed import DistInfo
from training.common.optim import build_adamw
from training.common.run import agreed_digests, autocast, check_finite, run_loop, start_run, wrap_ddp
from training.common.schedule import WarmupCosine
from training.mum.batches import IterationSampler, MultiViewBatches
from training.mum.config import MuMConfig, mixture_datasets
from training.mum.decoder import load_official, official_state_dict
from training.mum.model import build_autoencoder, weights_digest, write_outputs
from training.mum.sequences import build_source
from training.mum.visualize import ReconstructionLogger

logger = logging.getLogger(__name__)


def to_module_state(state: dict) -> dict:
    """Official flat autoencoder keys -> ``MuMAutoEncoder`` keys (``encoder.`` / ``decoder.`` prefixes)."""
    return {("decoder." if k.startswith(MUM_DECODER_PREFIXES) else "encoder.") + k: v for k, v in state.items()}


class MuMTrainer:
    """Model, optimizer and schedule of a run; ``step`` performs one training iteration.

    Args:
        cfg: the resolved ``MuMConfig``.
        info: this process's place in the job (``init_distributed()``).
    """

    def __init__(self, cfg: MuMConfig, info: DistInfo | None = None) -> None:
        self.cfg = cfg
        self.info = info or DistInfo()
        device = self.info.device
        t = cfg.train
        self.model = build_autoencoder(cfg).to(device)
        self.ddp = wrap_ddp(self.model, self.info)
        self.frames_per_step = cfg.data.frame_budget * self.info.world_size
        self.lr_schedule = WarmupCosine(
            base=cfg.peak_lr(self.info.world_size), final=t.min_lr, total=t.iterations, warmup=t.warmup
        )
        self.optimizer = build_adamw(self.model, lr=0.0, weight_decay=t.weight_decay, betas=t.betas)
        self.params = [p for p in self.model.parameters() if p.requires_grad]

    def mask_generator(self, it: int) -> torch.Generator:
        """The masking-noise generator of iteration ``it`` on this rank (a pure function of seed, it, rank)."""
        seed = sample_seed(self.cfg.train.seed, it * self.info.world_size + self.info.rank)
        return torch.Generator().manual_seed(seed)

    def step(
        self, images: torch.Tensor, it: int, generator: torch.Generator | None = None
    ) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        """One iteration on ``images [n, S, 3, H, W]`` (RGB in [0, 1], on the training device).

        ``generator`` replaces the iteration's masking-noise generator (e.g. to keep the masks fixed).

        Returns:
            Scalars (``loss``, ``lr``, ``grad_norm``, ``views``, ``frames``) and the detached model outputs
            (``pred``, ``mask``) for visualisation.

        Raises:
            TrainingDiverged: the loss is not finite on some rank (no update applied).
        """
        self.ddp.train()
        lr = self.lr_schedule.apply(self.optimizer, it)
        with autocast(self.cfg.train, images.device):
            out = self.ddp(images, self.cfg.model.mask_ratio, generator=generator or self.mask_generator(it))
        loss = out["loss"].float()
        check_finite(loss, it, {"loss": loss.item()}, "a learning rate too high (or a bf16 overflow)", self.info)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        max_norm = self.cfg.train.clip_grad if self.cfg.train.clip_grad > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, max_norm)
        self.optimizer.step()
        metrics = {
            "loss": loss.item(),
            "lr": lr,
            "grad_norm": float(grad_norm),
            "views": float(images.shape[1]),
            "frames": float(images.shape[0] * images.shape[1]),
        }
        return metrics, {"pred": out["pred"].detach(), "mask": out["mask"].detach()}


@dataclass(frozen=True)
class TrainResult:
    """What a finished (or stopped) ``train`` call reports."""

    outputs: dict[str, Path] | None
    """Final files (``write_outputs``) when the run reached its last iteration, else ``None``."""
    iterations: int
    """Iterations completed in total (including resumed ones)."""
    frames_per_second: float
    """Training throughput of this call over all ranks (frames / wall second, data loading included)."""
    skipped_images: int
    """Unreadable images skipped so far (all ranks)."""


def build_batches(cfg: MuMConfig, rank: int) -> MultiViewBatches:
    """The run's batch dataset (sources built from ``cfg.data``; same sequences on every rank)."""
    seed = cfg.train.seed
    datasets = mixture_datasets(cfg.data.mixture) if cfg.data.mixture else cfg.data.datasets
    sources = [build_source(d, seed) for d in datasets]
    singles = [build_source(d, seed) for d in cfg.data.single_view]
    return MultiViewBatches(sources, singles, cfg.data, seed, rank)


def train(cfg: MuMConfig, *, on_iteration: Callable[[int, MuMTrainer], None] | None = None) -> TrainResult:
    """Run (or resume) MuM pre-training; see the module doc.

    Args:
        cfg: resolved config.
        on_iteration: called as ``on_iteration(iterations_done, trainer)`` after every iteration, before that
            iteration's checkpoint is written (monitoring; tests raise from it to simulate a crash).
    """
    t = cfg.train
    info, out = start_run(cfg)
    trainer = MuMTrainer(cfg, info)
    batches = build_batches(cfg, info.rank)
    sampler = IterationSampler()
    manager = CheckpointManager(out, keep=t.keep_checkpoints)
    ckpt = manager.resume(
        model=trainer.model,
        optimizer=trainer.optimizer,
        scheduler=trainer.lr_schedule,
        model_state_fn=to_module_state,
    )
    start, skipped = 0, 0
    if ckpt is not None:
        start, skipped = int(ckpt["iter"]), int(ckpt.get("skipped_images", 0))
    elif cfg.model.init_from:
        load_strict(trainer.model, load_official(cfg.model.init_from).state_dict(), str(cfg.model.init_from))
        logger.info("initialised the autoencoder from %s", cfg.model.init_from)
    sampler.start = start
    logger.info(
        "MuM pre-training: %d iterations (from %d), %d frames per rank x %d ranks, views %s, peak lr %.3g, output %s",
        t.iterations, start, cfg.data.frame_budget, info.world_size, list(batches.plan.views),
        trainer.lr_schedule.base, out,
    )  # fmt: skip
    loader = DataLoader(
        batches,
        batch_size=None,
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        pin_memory=info.device.type == "cuda",
        persistent_workers=False,
    )
    images_log = ReconstructionLogger(out, enabled=info.is_main and t.image_every > 0, tensorboard=t.tensorboard)

    def save(it: int) -> Path:
        return manager.save(
            it,
            model=official_state_dict(trainer.model),
            optimizer=trainer.optimizer,
            scheduler=trainer.lr_schedule,
            sampler=IterationSampler(it),
            config=to_dict(cfg),
            extra={"skipped_images": skipped},
        )

    def step(batch: dict, it: int) -> dict[str, float]:
        nonlocal skipped
        if batch["iteration"] != it:  # the sampler starts at `start`; anything else is a bug
            raise RuntimeError(f"data for iteration {batch['iteration']} arrived at iteration {it}")
        images = batch["images"].to(info.device, non_blocking=True)
        metrics, outputs = trainer.step(images, it)
        # On the training device: NCCL reduces CUDA tensors only.
        skipped += int(distributed.all_reduce_sum(torch.tensor(int(batch["skipped"]), device=info.device)))
        if t.image_every and it % t.image_every == 0:
            images_log.log(it, images, outputs["pred"], outputs["mask"], trainer.model)
        return {**metrics, "skipped_images": skipped}

    try:
        loop = run_loop(
            trainer, loader, step=step, run=t, info=info, start=start, total=t.iterations, save=save,
            count=lambda m: m["frames"] * info.world_size, unit="frames", on_iteration=on_iteration,
        )  # fmt: skip
    finally:
        images_log.close()
    it, throughput = loop.iterations, loop.throughput
    digests = agreed_digests(weights_digest(trainer.model))
    outputs_written = None
    if it >= t.iterations:
        if info.is_main:
            outputs_written = write_outputs(trainer.model, out)
            write_json_atomic(
                {"iterations": it, "frames_per_second": throughput, "skipped_images": skipped, "rank_digests": digests},
                out / "summary.json",
            )
            logger.info("done: %s (%.1f frames/s)", out, throughput)
        distributed.barrier()
    return TrainResult(outputs_written, it, throughput, skipped)
