"""The feed-forward training loop: ``FeedForwardTrainer.step`` per iteration, ``train(cfg)`` around it.

Per iteration: lr from warm-up + cosine; under bf16 autocast (CUDA) run the model (DDP over the trainable part:
the frozen encoder has no gradient) on a VGGT-style batch ``[n, S, 3, H, W]``; the supervised loss
``L_camera + L_depth + L_pmap`` or, with ``train.loss = distill``, the L2 errors to a teacher's predictions;
abort on a non-finite loss on any rank; clip; AdamW.

``train`` adds the data (``training.feedforward.data``), checkpoints every N iterations (aggregator + heads,
optimizer, schedule, RNG; atomic; a run resumes from the latest checkpoint in its folder), the frozen encoder
written once as ``encoder.pth`` (recon backbone format), and at the end ``feedforward_final.pth``
(``recon.feedforward.checkpoint``), which ``recon run --align feedforward --model`` reads.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

import backbone as bb
from backbone.checkpoint import load_strict
from recon.feedforward.checkpoint import load_feedforward, save_feedforward
from recon.feedforward.model import FeedForwardModel, build_model
from training.common.checkpoint import CheckpointManager
from training.common.config import to_dict
from training.common.distributed import DistInfo
from training.common.optim import build_adamw
from training.common.run import autocast, check_finite, run_loop, start_run, wrap_ddp
from training.common.schedule import WarmupCosine
from training.feedforward.config import FeedForwardTrainConfig
from training.feedforward.data import SequenceSampler, load_scenes
from training.feedforward.losses import Targets, distillation_loss, feedforward_loss

logger = logging.getLogger(__name__)

ENCODER_FILE = "encoder.pth"
FINAL_FILE = "feedforward_final.pth"


def build_encoder(cfg: FeedForwardTrainConfig) -> torch.nn.Module:
    """The frozen encoder named by ``cfg.model``."""
    m = cfg.model
    if m.encoder_init == "random":
        return bb.create(m.encoder, **m.encoder_overrides)
    return bb.load(m.encoder)


class FeedForwardTrainer:
    """Model, optimizer, schedule (and teacher) of a run; ``step`` performs one iteration."""

    def __init__(self, cfg: FeedForwardTrainConfig, info: DistInfo | None = None) -> None:
        self.cfg = cfg
        self.info = info or DistInfo()
        device = self.info.device
        t = cfg.train
        self.model: FeedForwardModel = build_model(build_encoder(cfg), cfg.model.preset).to(device)
        self.ddp = wrap_ddp(self.model, self.info)
        self.lr_schedule = WarmupCosine(base=t.lr, final=t.min_lr, total=t.iterations, warmup=t.warmup)
        self.optimizer = build_adamw(self.model, lr=0.0, weight_decay=t.weight_decay, betas=t.betas)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.teacher = None
        if t.loss == "distill":
            if not cfg.model.teacher:
                raise ValueError("train.loss = distill needs model.teacher (a feed-forward model file)")
            self.teacher = load_feedforward(cfg.model.teacher, device)

    def targets(self, images: torch.Tensor, gt: Targets) -> Targets:
        """The supervision: ground truth, or the teacher's predictions (all pixels valid) when distilling."""
        if self.teacher is None:
            return gt
        with torch.no_grad(), autocast(self.cfg.train, images.device):
            out = self.teacher(images)
        return Targets(out.pose_enc[-1].float(), out.depth.float(), out.pts3d.float(), torch.ones_like(gt.valid))

    def step(self, images: torch.Tensor, gt: Targets, it: int) -> dict[str, float]:
        """One iteration on ``images [n, S, 3, H, W]`` and targets (on the training device).

        Raises:
            TrainingDiverged: the loss is not finite on some rank (no update applied).
        """
        self.ddp.train()
        t = self.cfg.train
        lr = self.lr_schedule.apply(self.optimizer, it)
        target = self.targets(images, gt)
        with autocast(t, images.device):
            out = self.ddp(images)
        if t.loss == "distill":
            loss, parts = distillation_loss(out, target)
        else:
            loss, parts = feedforward_loss(out, target, t.conf_alpha, t.camera_gamma, t.camera_weights)
        check_finite(loss, it, parts, "a learning rate too high (or a bf16 overflow)", self.info)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, t.clip_grad if t.clip_grad > 0 else math.inf)
        self.optimizer.step()
        frames = float(images.shape[0] * images.shape[1])
        return {**parts, "lr": lr, "grad_norm": float(grad_norm), "views": float(images.shape[1]), "frames": frames}


@dataclass(frozen=True)
class TrainResult:
    """What a finished (or stopped) ``train`` call reports."""

    final: Path | None
    """``feedforward_final.pth`` when the run reached its last iteration, else ``None``."""
    iterations: int
    """Iterations completed in total (including resumed ones)."""
    frames_per_second: float
    """Training throughput of this call on this rank (frames / wall second)."""


def build_sampler(cfg: FeedForwardTrainConfig, patch_size: int, rank: int) -> SequenceSampler:
    datasets = [load_scenes(d, patch_size) for d in cfg.data.datasets]
    return SequenceSampler(datasets, [d.weight for d in cfg.data.datasets], cfg.data, cfg.train.seed, rank)


def train(
    cfg: FeedForwardTrainConfig, *, on_iteration: Callable[[int, FeedForwardTrainer], None] | None = None
) -> TrainResult:
    """Run (or resume) feed-forward training; see the module doc.

    Args:
        cfg: resolved config.
        on_iteration: called as ``on_iteration(iterations_done, trainer)`` after every iteration, before that
            iteration's checkpoint (monitoring; tests raise from it to simulate a crash).
    """
    t = cfg.train
    info, out = start_run(cfg)
    trainer = FeedForwardTrainer(cfg, info)
    sampler = build_sampler(cfg, trainer.model.patch_size, info.rank)
    manager = CheckpointManager(out, keep=t.keep_checkpoints)
    ckpt = manager.resume(optimizer=trainer.optimizer, scheduler=trainer.lr_schedule)
    start = 0
    if ckpt is not None:
        encoder_state = {f"encoder.{k}": v for k, v in trainer.model.encoder.state_dict().items()}
        load_strict(trainer.model, {**encoder_state, **ckpt["model"]}, "feed-forward training checkpoint")
        start = int(ckpt["iter"])
    if info.is_main and not (out / ENCODER_FILE).is_file():
        bb.save(trainer.model.encoder, out / ENCODER_FILE)
    logger.info(
        "feed-forward training: %d iterations (from %d), %d frames per rank x %d ranks, views %s, lr %.3g, output %s",
        t.iterations, start, cfg.data.frame_budget, info.world_size, list(cfg.data.views), t.lr, out,
    )  # fmt: skip

    def save(it: int) -> Path:
        return manager.save(
            it,
            model=trainer.model.trainable_state_dict(),
            optimizer=trainer.optimizer,
            scheduler=trainer.lr_schedule,
            config=to_dict(cfg),
        )

    def step(batch: tuple[torch.Tensor, Targets], it: int) -> dict[str, float]:
        images, gt = batch
        gt = Targets(*(x.to(info.device) for x in (gt.pose_enc, gt.depth, gt.pts3d, gt.valid)))
        return trainer.step(images.to(info.device), gt, it)

    loop = run_loop(
        trainer, (sampler.batch(i) for i in itertools.count(start)), step=step, run=t, info=info, start=start,
        total=t.iterations, save=save, count=lambda m: m["frames"], unit="frames", on_iteration=on_iteration,
    )  # fmt: skip
    it = loop.iterations
    final = None
    if it >= t.iterations and info.is_main:
        final = save_feedforward(trainer.model, out / FINAL_FILE, encoder_file=ENCODER_FILE)
        logger.info("done: %s", final)
    return TrainResult(final, it, loop.throughput)
