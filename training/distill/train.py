"""The DUNE distillation loop: one ``DistillTrainer.step`` per iteration, ``train(cfg)`` around it.

Per iteration (official ``main_dune.py:train_one_step``, reference/dune_mum.md §7): set the lr of every group
from the warm-up + cosine schedule; under bf16 autocast (CUDA) run the student (DDP) and the frozen teachers on
the same images; normalise teacher features with the running statistics (EMA momentum schedule 1 -> 0.001);
per-teacher per-image loss; teacher dropping; abort if the loss is not finite on any rank; backward; clip each
parameter's gradient norm to 1; AdamW step.

``train`` adds the data pipeline (teacher-balanced batches, infinite seeded sampler), checkpoints every N
iterations in the official DUNE layout plus the training state (atomic; the run resumes automatically from the
latest one in ``output_dir``, bit-exactly on the same hardware), TensorBoard scalars, ``config.json``, and at the
end ``dune_final.pth`` (``{'model', 'args', 'iter'}``, loadable by ``backbone.load`` and the official loaders).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from backbone.checkpoint import safe_load
from training.common import distributed
from training.common.checkpoint import CheckpointManager, atomic_torch_save
from training.common.config import to_dict, write_json_atomic
from training.common.data import InfiniteDistributedSampler
from training.common.distributed import DistInfo
from training.common.optim import build_adamw, clip_grad_per_param
from training.common.run import agreed_digests, autocast, check_finite, run_loop, start_run, wrap_ddp
from training.common.schedule import WarmupCosine
from training.distill.config import DistillConfig
from training.distill.datasets import BalancedCollate, build_train_dataset, items_per_batch
from training.distill.losses import normalize_targets, per_teacher_loss, teacher_coefficients
from training.distill.student import (
    PATCH_SIZE,
    StudentForward,
    build_student,
    from_official_state,
    init_from_checkpoint,
    official_args,
    official_checkpoint,
    to_official_state,
    weights_digest,
)
from training.distill.teachers import build_teacher

logger = logging.getLogger(__name__)

FINAL_NAME = "dune_final.pth"


class DistillTrainer:
    """Teachers, student, optimizer and schedules of a run; ``step`` performs one training iteration.

    Args:
        cfg: the resolved ``DistillConfig``.
        info: this process's place in the job (``init_distributed()``).
    """

    def __init__(self, cfg: DistillConfig, info: DistInfo | None = None) -> None:
        self.cfg = cfg
        self.info = info or DistInfo()
        device = self.info.device
        t = cfg.train
        self.teachers = sorted((build_teacher(tc, device) for tc in cfg.teachers), key=lambda x: x.name)
        self.dune = build_student(cfg.student, self.teachers).to(device)
        self.module = StudentForward(self.dune)
        self.model = wrap_ddp(self.module, self.info)
        self.total_iterations = cfg.total_iterations(self.info.world_size)
        self.total_batch = t.batch_size_per_gpu * self.info.world_size
        peak = t.lr * self.total_batch / 256.0  # the paper's linear scaling rule
        self.lr_schedule = WarmupCosine(
            base=peak,
            final=t.min_lr,
            total=self.total_iterations,
            warmup=math.floor(t.warmup_fraction * self.total_iterations),
        )
        self.tnorm_schedule = WarmupCosine(
            base=t.tnorm_momentum_start, final=t.tnorm_momentum_end, total=self.total_iterations, warmup=0
        )
        self.optimizer = build_adamw(self.dune, lr=0.0, weight_decay=t.weight_decay, betas=t.betas, eps=t.eps)
        self.params = [p for p in self.dune.parameters() if p.requires_grad]
        # Teacher dropping draws per rank (the official code: Python's random seeded with seed + rank).
        self.tdrop_generator = torch.Generator().manual_seed(t.seed + self.info.rank)

    def step(self, images: torch.Tensor, domains: list[str] | None, it: int) -> dict[str, float]:
        """One iteration on ``images [B, 3, S, S]`` (RGB in [0, 1], on the training device).

        Args:
            images: the batch.
            domains: ``[B]`` domain of each image (needed only by the ``own_*`` teacher-dropping methods).
            it: 0-based iteration (selects the lr and the statistics momentum).

        Returns:
            Scalars: ``loss`` (the optimised, dropping-weighted loss), ``loss_all`` (mean over every teacher and
            image, comparable across iterations), per-teacher terms, ``lr``, ``tnorm_momentum``, grad-norm stats.

        Raises:
            TrainingDiverged: the loss is not finite on some rank (no update applied).
        """
        t = self.cfg.train
        self.model.train()
        lr = self.lr_schedule.apply(self.optimizer, it)
        momentum = self.tnorm_schedule(it)
        with autocast(t, images.device):
            preds = self.model(images)
            raw = {teacher.name: teacher(images, PATCH_SIZE) for teacher in self.teachers}
        targets = {
            name: {
                k: normalize_targets(self.dune.teacher_norms[name], v, k, momentum, update=True)
                for k, v in feats.items()
            }
            for name, feats in raw.items()
        }
        losses, names, metrics = per_teacher_loss(preds, targets, t.lam_cos, t.lam_sl1)
        domain_of = {teacher.name: teacher.domain for teacher in self.teachers}
        coeffs = teacher_coefficients(
            losses, t.tdrop, t.tdrop_p, self.tdrop_generator, domains, [domain_of[n] for n in names]
        )
        loss = (coeffs.detach() * losses).sum()
        cause = "a learning rate too high (or a bf16 overflow), or a teacher whose features are not finite"
        check_finite(loss, it, {"loss": loss.item()}, cause, self.info)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        metrics.update(loss=loss.item(), loss_all=losses.mean().item(), lr=lr, tnorm_momentum=momentum)
        metrics["wd"] = self.optimizer.param_groups[0]["weight_decay"]
        if t.clip_grad > 0:
            norms = clip_grad_per_param(self.params, t.clip_grad)
            metrics.update({"grad_norm/mean": norms.mean().item(), "grad_norm/max": norms.max().item()})
        self.optimizer.step()
        for name, c in zip(names, coeffs.sum(dim=1).tolist(), strict=True):
            metrics[f"t_coeff_{name}"] = c
        return metrics


@dataclass(frozen=True)
class TrainResult:
    """What a finished (or stopped) ``train`` call reports."""

    final_checkpoint: Path | None
    """``dune_final.pth`` (written when the run reached its last iteration), else ``None``."""
    iterations: int
    """Iterations completed in total (including resumed ones)."""
    images_per_second: float
    """Training throughput of this call over all ranks (images / wall second, data loading included)."""
    skipped_images: int
    """Unreadable images skipped so far (all ranks)."""


def train(cfg: DistillConfig, *, on_iteration: Callable[[int, DistillTrainer], None] | None = None) -> TrainResult:
    """Run (or resume) a distillation; see the module doc.

    Args:
        cfg: resolved config.
        on_iteration: called as ``on_iteration(iterations_done, trainer)`` after every iteration, before that
            iteration's checkpoint is written (monitoring; tests raise from it to simulate a crash).

    Returns:
        ``TrainResult``.
    """
    info, out = start_run(cfg)
    trainer = DistillTrainer(cfg, info)
    B = cfg.train.batch_size_per_gpu
    dataset = build_train_dataset(cfg.data, cfg.student.image_size)
    per_batch = items_per_batch(dataset, B)
    sampler = InfiniteDistributedSampler(len(dataset), seed=cfg.train.seed, with_seeds=True)
    manager = CheckpointManager(out, keep=cfg.train.keep_checkpoints)
    ckpt = manager.resume(
        model=trainer.dune,
        optimizer=trainer.optimizer,
        scheduler=trainer.lr_schedule,
        sampler=sampler,
        generators={"tdrop": trainer.tdrop_generator},
        model_state_fn=from_official_state,
    )
    start, skipped = 0, 0
    if ckpt is not None:
        start, skipped = int(ckpt["iter"]), int(ckpt.get("skipped_images", 0))
    elif cfg.student.init_from:
        src = init_from_checkpoint(trainer.dune, safe_load(cfg.student.init_from))
        logger.info("initialised the student from %s (trained %d iterations)", cfg.student.init_from, src)
    # Data position from the iteration count, not from the sampler's iterator (workers prefetch ahead).
    sampler.position = start * per_batch
    total = trainer.total_iterations
    logger.info(
        "DUNE distillation: %d iterations (from %d), batch %d x %d ranks, peak lr %.3g, output %s",
        total, start, B, info.world_size, trainer.lr_schedule.base, out,
    )  # fmt: skip
    loader = DataLoader(
        dataset,
        batch_size=per_batch,
        sampler=sampler,
        num_workers=cfg.data.num_workers,
        collate_fn=BalancedCollate(B),
        drop_last=True,
        pin_memory=info.device.type == "cuda",
    )

    def save(it: int) -> Path:
        sampler.position = it * per_batch  # samples this rank consumed (the live iterator runs ahead)
        state = to_official_state({k: v.detach().cpu() for k, v in trainer.dune.state_dict().items()})
        return manager.save(
            it,
            model=state,
            optimizer=trainer.optimizer,
            scheduler=trainer.lr_schedule,
            sampler=sampler,
            config=to_dict(cfg),
            generators={"tdrop": trainer.tdrop_generator},
            extra={"args": official_args(trainer.dune), "skipped_images": skipped},
        )

    def step(batch: dict, it: int) -> dict[str, float]:
        nonlocal skipped
        metrics = trainer.step(batch["image"].to(info.device, non_blocking=True), batch["domain"], it)
        skipped += int(distributed.all_reduce_sum(batch["skipped"]).item())
        return {**metrics, "skipped_images": skipped}

    loop = run_loop(
        trainer, loader, step=step, run=cfg.train, info=info, start=start, total=total, save=save,
        count=lambda _: trainer.total_batch, unit="images", on_iteration=on_iteration,
    )  # fmt: skip
    it, throughput = loop.iterations, loop.throughput
    final = None
    digests = agreed_digests(weights_digest(trainer.dune))
    if it >= total:
        final = out / FINAL_NAME
        if info.is_main:
            atomic_torch_save(official_checkpoint(trainer.dune, it), final)
            write_json_atomic(
                {"iterations": it, "images_per_second": throughput, "skipped_images": skipped, "rank_digests": digests},
                out / "summary.json",
            )
            logger.info("done: %s (%.1f images/s, %d unreadable images skipped)", final, throughput, skipped)
        distributed.barrier()
    return TrainResult(final, it, throughput, skipped)
