"""The decoder-finetuning loop: one ``FinetuneTrainer.step`` per optimizer step, ``train(cfg)`` around it.

Per step (MASt3R's ``train_one_epoch``, reference/mast3r.md §12): set the lr from the warm-up + cosine schedule;
for each of ``accum_iter`` micro-batches (one resolution each), run the frozen backbone once on both views
(no gradient), decode the pairs (symmetrised: (a, b) and (b, a)) under bf16 autocast on CUDA, compute the
criterion in float32 and back-propagate ``loss / accum_iter`` (DDP's gradient all-reduce only on the last
micro-batch); abort if the loss is not finite on any rank; optional global-norm clip; AdamW step.

``train`` adds the data pipeline (weighted mixture, infinite seeded sampler, one aspect per batch), training
checkpoints every N steps holding the trainable weights and the full training state (atomic; the run resumes
from the latest one in ``output_dir``, bit-exactly on the same hardware), validation on held-out pairs
(normalised 3D error, matching accuracy), TensorBoard scalars, ``config.json``, and at the end the final model
``final_model.pth`` in the DUNE-MASt3R layout (DUNE backbones) or recon's layout, plus ``summary.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, default_collate

from training.common import distributed
from training.common.checkpoint import CheckpointManager, atomic_torch_save
from training.common.config import to_dict, write_json_atomic
from training.common.data import InfiniteDistributedSampler
from training.common.distributed import DistInfo
from training.common.optim import build_adamw
from training.common.run import agreed_digests, autocast, check_finite, run_loop, start_run, wrap_ddp
from training.common.schedule import WarmupCosine
from training.finetune.batch import PairBatch
from training.finetune.config import DataConfig, FinetuneConfig, SourceConfig
from training.finetune.datasets import (
    RESOLUTIONS,
    AspectBatchSampler,
    Co3dPairs,
    DataConfigError,
    MixtureDataset,
    PairDataset,
    SyntheticPairs,
    check_resolutions,
    fixed_items,
)
from training.finetune.export import resolve_layout, save_final
from training.finetune.losses import criterion, matching_accuracy, pointmap_error
from training.finetune.model import (
    FinetuneNet,
    build_model,
    init_from_checkpoint,
    is_dune,
    load_parts,
    state_of,
    trainable_digest,
)

logger = logging.getLogger(__name__)

FINAL_NAME = "final_model.pth"
DUNE_BACKBONE_NAME = "dune_backbone.pth"


# ---------------------------------------------------------------------------------------------- data
def resolve_resolutions(data: DataConfig, spec) -> tuple[tuple[int, int], ...]:
    """The landscape ``[(W, H)]`` list of ``data.resolutions`` for a backbone ``spec``.

    Raises:
        DataConfigError: unknown list name or sizes that are not multiples of the patch size.
    """
    res = data.resolutions
    if res == "auto":
        if int(spec.patch_size) == 16:
            res = "mast3r512"
        else:
            res = "dune336" if int(spec.image_size) <= 336 else "dune448"
    if isinstance(res, str):
        if res not in RESOLUTIONS:
            raise DataConfigError(f"unknown resolution list {res!r}; known: {sorted(RESOLUTIONS)} or [[W, H], ...]")
        res = RESOLUTIONS[res]
    return check_resolutions(res, int(spec.patch_size))


def build_source(sc: SourceConfig):
    """A ``SyntheticPairs`` or ``Co3dPairs`` from its config."""
    if sc.kind == "synthetic":
        return SyntheticPairs(
            sc.scenes, sc.views_per_scene, tuple(sc.render_size), sc.layout, sc.seed, sc.options,
            name=sc.name or "synthetic", metric=True if sc.metric is None else sc.metric,
        )  # fmt: skip
    return Co3dPairs(
        sc.root, sc.categories, sc.subset, sc.split, sc.max_frame_gap, sc.mask_bg, sc.min_quality,
        name=sc.name or "co3d", metric=False if sc.metric is None else sc.metric,
    )  # fmt: skip


def build_pair_dataset(sc: SourceConfig, data: DataConfig, train: bool = True) -> PairDataset:
    """One source as samples (validation: no colour jitter, zoom or swap)."""
    return PairDataset(
        build_source(sc),
        n_corres=data.n_corres,
        neg_fraction=data.neg_fraction,
        color_jitter=data.color_jitter and train,
        zoom_range=data.zoom_range if train else 0.0,
        swap_prob=data.swap_prob if train else 0.0,
        aug_crop=data.aug_crop if train else "centred",
        n_tentative_crops=data.n_tentative_crops,
        aug_monocular=data.aug_monocular if train else 0.0,
    )


def build_train_dataset(data: DataConfig) -> MixtureDataset:
    """The mixture ``data.mixture`` (MASt3R syntax) or else the weighted mixture of ``data.sources``."""
    if data.mixture:
        from training.datasets.mixture import build_pair_mixture

        return build_pair_mixture(data.mixture, data)
    datasets = [build_pair_dataset(sc, data) for sc in data.sources]
    return MixtureDataset(datasets, [sc.weight for sc in data.sources], data.epoch_size)


def pair_batches(loader, device: torch.device, accum: int):
    """The loader's collated batches as ``PairBatch`` es on ``device``, in lists of ``accum`` (one optimizer step)."""
    pending = []
    for raw in loader:
        pending.append(PairBatch.from_collated(raw).to(device))
        if len(pending) == accum:
            yield pending
            pending = []


# ---------------------------------------------------------------------------------------------- trainer
DIVERGED_CAUSE = (
    "a learning rate too high for the head widths: Adam moves every weight by about lr, so a wide DPT head "
    "(fan-in 9 x dpt_feature_dim) shifts its raw depth far more than a narrow one and the exp depth / confidence "
    "overflows (the release's DPT widths need lr <= ~3e-4 from a random init)"
)


class FinetuneTrainer:
    """Model, optimizer and schedule of a run; ``step`` performs one optimizer step.

    Args:
        cfg: the resolved ``FinetuneConfig``.
        info: this process's place in the job (``init_distributed()``).
    """

    def __init__(self, cfg: FinetuneConfig, info: DistInfo | None = None) -> None:
        self.cfg = cfg
        self.info = info or DistInfo()
        device = self.info.device
        t = cfg.train
        self.model = build_model(cfg.model)
        self.resolutions = resolve_resolutions(cfg.data, self.model.backbone.spec)
        # The native size recorded in the model: the long side of the training resolutions.
        self.model.config = dataclasses.replace(self.model.config, image_size=max(max(r) for r in self.resolutions))
        self.model.to(device)
        self.net = FinetuneNet(self.model)
        # Without the matching loss the descriptor MLP gets no gradient: DDP must then look for unused ones.
        self.ddp = wrap_ddp(self.net, self.info, find_unused_parameters=cfg.loss.matching_weight <= 0)
        # Fused AdamW on CPU too: the decoder has ~600 small tensors, and the per-tensor loop dominated CPU steps.
        self.optimizer = build_adamw(self.model, lr=0.0, weight_decay=t.weight_decay, betas=tuple(t.betas), fused=True)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.schedule = WarmupCosine(
            base=t.lr, final=t.min_lr, total=t.iterations, warmup=math.floor(t.warmup_fraction * t.iterations)
        )
        # Block shuffles of the matching loss draw from a per-rank generator (checkpointed).
        self.generator = torch.Generator().manual_seed(t.seed + 1000 + self.info.rank)
        self.pairs_per_step = t.batch_size_per_gpu * t.accum_iter * self.info.world_size

    def forward_loss(self, batch: PairBatch, module=None) -> tuple[torch.Tensor, dict[str, float]]:
        """Loss of one micro-batch (on the device); symmetrised pairs are ``(a, b)`` then ``(b, a)``."""
        module = module or self.ddp
        sym = self.cfg.train.symmetrize
        with autocast(self.cfg.train, self.info.device):
            pred1, pred2 = module(batch.view1.img, batch.view2.img, sym)
        gt = (batch.cat(batch.swapped()) if sym else batch).in_frame_of_view1()
        return criterion(pred1, pred2, gt, self.cfg.loss, self.generator)

    def step(self, batches: Sequence[PairBatch], it: int) -> dict[str, float]:
        """One optimizer step over ``accum_iter`` micro-batches (on the device).

        Returns:
            Scalars: ``loss`` (mean over micro-batches), its terms, ``lr``, and ``grad_norm`` when clipping.

        Raises:
            TrainingDiverged: the loss is not finite on some rank (the weights are left as they were).
        """
        t = self.cfg.train
        self.net.train()
        lr = self.schedule.apply(self.optimizer, it)
        self.optimizer.zero_grad(set_to_none=True)
        sums: dict[str, float] = {}
        finite = True
        for k, batch in enumerate(batches):
            last = k == len(batches) - 1
            sync = contextlib.nullcontext() if last or self.ddp is self.net else self.ddp.no_sync()
            with sync:
                loss, details = self.forward_loss(batch)
                finite = finite and bool(torch.isfinite(loss))
                (loss / len(batches)).backward()
            for key, value in {"loss": float(loss.detach()), **details}.items():
                sums[key] = sums.get(key, 0.0) + value / len(batches)
        check_finite(finite, it, sums, DIVERGED_CAUSE, self.info)
        if t.clip_grad > 0:
            sums["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.params, t.clip_grad))
        self.optimizer.step()
        sums["lr"] = lr
        return sums

    @torch.no_grad()
    def validate(self, sets: Sequence[tuple[str, PairDataset, list]]) -> dict[str, float]:
        """Mean normalised 3D error, matching accuracy and loss on held-out pairs (sharded over ranks).

        Args:
            sets: ``(name, dataset, items)`` per validation source.
        """
        self.net.eval()
        out = {}
        B = self.cfg.train.batch_size_per_gpu
        rank, world = self.info.rank, self.info.world_size
        for name, dataset, items in sets:
            sums = torch.zeros(5, dtype=torch.float64, device=self.info.device)  # err, acc, n_acc, loss, n
            mine = items[rank::world]
            for start in range(0, len(mine), B):
                raw = default_collate([dataset[i] for i in mine[start : start + B]])
                batch = PairBatch.from_collated(raw).to(self.info.device)
                with autocast(self.cfg.train, self.info.device):
                    pred1, pred2 = self.net(batch.view1.img, batch.view2.img, False)
                gt = batch.in_frame_of_view1()
                loss, _ = criterion(pred1, pred2, gt, self.cfg.loss, self.generator)
                err = pointmap_error(pred1, pred2, gt)
                acc = matching_accuracy(pred1, pred2, gt["corres1"], gt["corres2"], gt["valid_corres"],
                                        self.cfg.train.match_px)  # fmt: skip
                has = torch.isfinite(acc)
                sums += torch.stack([
                    err.sum().double(), acc[has].sum().double(), has.sum().double(),
                    loss.double() * len(err), torch.tensor(float(len(err)), dtype=torch.float64, device=err.device),
                ])  # fmt: skip
            sums = distributed.all_reduce_sum(sums)
            n = max(sums[4].item(), 1.0)
            out[f"{name}/pts3d_err"] = sums[0].item() / n
            out[f"{name}/match_acc"] = sums[1].item() / max(sums[2].item(), 1.0)
            out[f"{name}/loss"] = sums[3].item() / n
        self.net.train()
        return out


@dataclass(frozen=True)
class TrainResult:
    """What a finished (or stopped) ``train`` call reports."""

    final_model: Path | None
    """The final model (``final_model.pth``) when the run reached its last step, else ``None``."""
    layout: str
    """Its layout: ``dune_mast3r`` or ``recon``."""
    backbone_path: Path | None
    """For a DUNE-MASt3R output whose backbone had no checkpoint: the DUNE file written beside it."""
    iterations: int
    """Optimizer steps completed in total (including resumed ones)."""
    pairs_per_second: float
    """Training throughput of this call over all ranks (pairs / wall second, data loading included)."""
    validation: dict
    """The last validation metrics (empty without validation sources)."""


def _validation_sets(cfg: FinetuneConfig, resolution: tuple[int, int]) -> list[tuple[str, PairDataset, list]]:
    sets = []
    res = tuple(cfg.data.val_resolution) if cfg.data.val_resolution else resolution
    for k, sc in enumerate(cfg.data.val_sources):
        ds = build_pair_dataset(sc, cfg.data, train=False)
        items = fixed_items(cfg.data.val_pairs, len(ds), res, seed=cfg.train.seed + 31 * (k + 1))
        sets.append((f"val_{sc.name or ds.name}", ds, items))
    return sets


def train(cfg: FinetuneConfig, *, on_iteration: Callable[[int, FinetuneTrainer], None] | None = None) -> TrainResult:
    """Run (or resume) a finetuning; see the module doc.

    Args:
        cfg: resolved config.
        on_iteration: called as ``on_iteration(steps_done, trainer)`` after every step, before that step's
            checkpoint is written (monitoring; tests raise from it to simulate a crash).

    Returns:
        ``TrainResult``.
    """
    info, out = start_run(cfg)
    t = cfg.train
    trainer = FinetuneTrainer(cfg, info)
    model = trainer.model
    layout = resolve_layout(model, cfg.model.output_format)
    backbone_digest = trainable_digest(model.backbone)
    B, accum = t.batch_size_per_gpu, t.accum_iter
    dataset = build_train_dataset(cfg.data)
    sampler = InfiniteDistributedSampler(len(dataset), seed=t.seed, with_seeds=True)
    batches = AspectBatchSampler(sampler, B, trainer.resolutions, cfg.data.portrait_prob, t.seed)
    manager = CheckpointManager(out, keep=t.keep_checkpoints)
    ckpt = manager.resume(
        optimizer=trainer.optimizer, scheduler=trainer.schedule, sampler=sampler,
        generators={"matching": trainer.generator},
    )  # fmt: skip
    start = 0
    if ckpt is not None:
        load_parts(model, ckpt["model"])
        start = int(ckpt["iter"])
    elif cfg.model.init_from:
        report = init_from_checkpoint(model, cfg.model.init_from, cfg.model.resample_pixel_layers)
        if info.is_main:
            write_json_atomic(report.to_dict(), out / "init_report.json")
    # Data position from the step count, not from the sampler's iterator (workers prefetch ahead).
    sampler.position = start * accum * B
    val_sets = _validation_sets(cfg, trainer.resolutions[0])
    logger.info(
        "decoder finetuning on %s: %d steps (from %d), %d pairs x %d accum x %d ranks, lr %.3g, resolutions %s, "
        "output %s (%s)",
        model.backbone.spec.name, t.iterations, start, B, accum, info.world_size, t.lr,
        list(trainer.resolutions), out, layout,
    )  # fmt: skip
    loader = DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=cfg.data.num_workers,
        collate_fn=default_collate,
        pin_memory=info.device.type == "cuda",
    )

    def save(it: int) -> Path:
        sampler.position = it * accum * B  # samples this rank consumed (the live iterator runs ahead)
        return manager.save(
            it, model=state_of(model), optimizer=trainer.optimizer, scheduler=trainer.schedule, sampler=sampler,
            config=to_dict(cfg), generators={"matching": trainer.generator},
        )  # fmt: skip

    validation: dict = {}

    def validate(it: int) -> dict[str, float]:
        validation.clear()
        validation.update(trainer.validate(val_sets))
        if info.is_main:
            logger.info("validation at step %d: %s", it, validation)
        return validation

    loop = run_loop(
        trainer, pair_batches(loader, info.device, accum), run=t, info=info, start=start, total=t.iterations,
        save=save, count=lambda _: trainer.pairs_per_step, unit="pairs",
        every={t.val_every: validate} if val_sets else None, on_iteration=on_iteration,
    )  # fmt: skip
    it, throughput = loop.iterations, loop.throughput
    if trainable_digest(model.backbone) != backbone_digest:
        raise RuntimeError("the frozen backbone's weights changed during training")
    digests = agreed_digests(trainable_digest(model))
    final, backbone_path = None, None
    if it >= t.iterations:
        final = out / FINAL_NAME
        backbone_name = cfg.model.backbone_name or cfg.model.backbone_checkpoint
        if layout == "dune_mast3r" and not backbone_name:
            backbone_path = out / DUNE_BACKBONE_NAME  # a random DUNE backbone: write it so the decoder loads
            backbone_name = str(backbone_path)
        if info.is_main:
            if backbone_path is not None:
                from training.distill.student import official_checkpoint

                atomic_torch_save(official_checkpoint(model.backbone, 0), backbone_path)
            save_final(model, final, layout, backbone_name)
            write_json_atomic(
                {"iterations": it, "layout": layout, "final_model": str(final), "pairs_per_second": throughput,
                 "validation": validation, "backbone": model.backbone.spec.name, "dune": is_dune(model.backbone),
                 "rank_digests": digests},
                out / "summary.json",
            )  # fmt: skip
            logger.info("done: %s (%s layout, %.2f pairs/s)", final, layout, throughput)
        distributed.barrier()
    return TrainResult(final, layout, backbone_path, it, throughput, validation)
