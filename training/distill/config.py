"""DUNE distillation configuration: dataclasses with a docstring per field, named presets, JSON files.

Defaults follow the DUNE paper (supplementary Table 2) and the official code (reference/dune_mum.md §5-7):
ViT-B/14 student at 336 px, AdamW (0.9, 0.99), eps 1e-15, weight decay 3e-2 on matrices, peak lr 3e-4 x batch/256
after a 20 % linear warm-up, cosine to 1e-6, per-parameter gradient clipping at 1.0, bf16 autocast on CUDA, an
"epoch" of 1,281,167 images, teacher-statistics EMA momentum 1.0 -> 0.001, teacher dropping "lowest_loss" p=0.5.

A config file is JSON; keys it omits keep the preset's value (``--preset``, default ``dune_vitb14_336``), and
``--set a.b=value`` overrides single fields. ``teachers`` is replaced as a whole when given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from training.common.config import RunConfig, replace_sections, resolve_preset

# The 19 training datasets of the paper (Table 1), by teacher domain; sizes in training/distill/datasets.py.
ALL_DATASETS = (
    "in19k", "gldv2", "mapillarystreet",
    "ARKitScenesV2", "BlendedMVS", "Co3d_v3", "DL3DV", "Habitat512", "MegaDepthDense", "Niantic", "ScanNetppV2",
    "TartanAir", "Unreal4K", "VirtualKitti", "WildRgb",
    "bedlam", "agora", "cuffs", "ubody",
)  # fmt: skip


@dataclass(frozen=True)
class StudentConfig:
    """The DUNE student: a DINOv2-style ViT with one transformer projector per teacher."""

    arch: Literal["vit_small", "vit_base", "custom"] = "vit_base"
    """``vit_small`` (384-d, 6 heads), ``vit_base`` (768-d, 12 heads), or ``custom`` (the three fields below)."""
    embed_dim: int = 0
    """Width for ``arch = custom``."""
    depth: int = 12
    """Blocks for ``arch = custom`` (ViT-S/B: 12)."""
    num_heads: int = 0
    """Heads for ``arch = custom``."""
    image_size: int = 336
    """Training resolution in pixels (square); the position embedding covers ``image_size / 14`` per side."""
    num_register_tokens: int = 4
    """Register tokens after cls."""
    projector_blocks: int = 1
    """Transformer blocks per projector (1 in every released model)."""
    init_from: str | None = None
    """Second stage: a checkpoint of a trained student (e.g. 336 px) whose weights initialise this one; its position
    embedding is resized bicubically to this ``image_size``. Ignored when resuming from this run's own checkpoint."""


@dataclass(frozen=True)
class TeacherConfig:
    """One frozen teacher. ``kind`` fixes its architecture, the token types it supervises and its data domain."""

    name: str = "dino2reg_vitlarge_14"
    """Projector / statistics key in the student (official names: dino2reg_vitlarge_14, mast3r_vitlarge_16,
    multihmr_vitlarge_14_672)."""
    kind: Literal["dinov2", "mast3r", "multihmr", "mum"] = "dinov2"
    """``dinov2``: DINOv2 ViT-L/14 with registers (cls + patch targets); ``mast3r``: the MASt3R ViT-L/16 encoder
    (patch targets, input upsampled by 16/14); ``multihmr``: the Multi-HMR ViT-L/14 encoder (patch targets)."""
    checkpoint: str | None = None
    """Official checkpoint: ``dinov2_vitl14_reg4_pretrain.pth``, ``MASt3R_ViTLarge_BaseDecoder_512_catmlpdpt_metric
    .pth``, ``multiHMR_672_L.pt`` (or a recon backbone checkpoint). ``None``: a random teacher (tests)."""
    random_overrides: dict[str, Any] = field(default_factory=dict)
    """``backbone.create`` overrides for a random teacher, e.g. ``{"embed_dim": 32, "depth": 1, "num_heads": 2}``."""
    seed: int = 0
    """Seed of a random teacher's weights."""


@dataclass(frozen=True)
class DatasetRoot:
    """Where one dataset's images are."""

    root: str = ""
    """Image folder (searched recursively), or the base of the paths in ``file_list``."""
    file_list: str | None = None
    """Optional text file of image paths (one per line, relative to ``root``)."""
    domain: str | None = None
    """Teacher domain (dinov2 / mast3r / multihmr); needed only for datasets outside the paper's 19."""
    layout: Literal["auto", "release", "folder"] = "auto"
    """``release``: the paper dataset's release layout (``training.datasets.images``; only its image files);
    ``folder``: every image under ``root``; ``auto``: release for the paper's 19, folder otherwise."""


@dataclass(frozen=True)
class DataConfig:
    """Training images and augmentations."""

    source: Literal["datasets", "synthetic"] = "datasets"
    """``datasets``: the named datasets below; ``synthetic``: procedurally generated images (smoke runs, tests)."""
    datasets: tuple[str, ...] = ALL_DATASETS
    """Dataset names to train on (the 19 of the paper by default)."""
    roots_file: str | None = None
    """JSON file ``{name: {"root": ..., "file_list": ..., "domain": ...}}`` giving each dataset's location."""
    roots: dict[str, DatasetRoot] = field(default_factory=dict)
    """Dataset locations given inline (take precedence over ``roots_file``)."""
    teacher_balanced: bool = True
    """Equal shares of each teacher domain in every batch (the paper's teacher-balanced sampling)."""
    synthetic_images: int = 256
    """Images per domain for ``source = synthetic``."""
    synthetic_domains: tuple[str, ...] = ("dinov2", "mast3r", "multihmr")
    """Domains for ``source = synthetic``."""
    rrc_scale: tuple[float, float] = (0.4, 1.0)
    """RandomResizedCrop area range (official ``--rrc_scale 0.40,1.0``)."""
    color_aug: bool = True
    """Colour jitter, grayscale, blur and solarisation (official ``--color_aug``)."""
    num_workers: int = 8
    """DataLoader worker processes per rank."""


@dataclass(frozen=True)
class TrainConfig(RunConfig):
    """Optimisation, schedule, precision, checkpoints and logging."""

    output_dir: str = "runs/dune"
    """Run folder: checkpoints, config.json, TensorBoard events (``tb/``), final model."""
    batch_size_per_gpu: int = 128
    """Images per rank and iteration."""
    epochs: float = 100.0
    """Length in "epochs" of ``epoch_size`` images (paper: 100 at 336 px, 50 at 448 px)."""
    epoch_size: int = 1281167
    """Images per "epoch" (the size of ImageNet-1k, as the official code)."""
    iterations: int | None = None
    """Total iterations; ``None``: ``ceil(epochs x epoch_size / total batch)`` rounded up to even (official)."""
    lr: float = 3e-4
    """Base learning rate, scaled by total batch / 256 (paper: 3e-4 at 336 px, 5e-5 for the 448-px stage)."""
    min_lr: float = 1e-6
    """Floor of the cosine schedule."""
    warmup_fraction: float = 0.2
    """Share of the iterations spent in linear warm-up (official: 20 % of the epochs)."""
    weight_decay: float = 3e-2
    """AdamW weight decay on matrices (ndim >= 2, not biases)."""
    betas: tuple[float, float] = (0.9, 0.99)
    """AdamW betas."""
    eps: float = 1e-15
    """AdamW epsilon."""
    clip_grad: float = 1.0
    """Per-parameter gradient-norm clip (0: off)."""
    lam_cos: float = 0.5
    """Weight of the cosine term of the per-token loss."""
    lam_sl1: float = 0.5
    """Weight of the smooth-L1 term of the per-token loss."""
    tnorm_momentum_start: float = 1.0
    """Teacher-statistics EMA momentum at iteration 0 (cosine schedule, no warm-up)."""
    tnorm_momentum_end: float = 0.001
    """Teacher-statistics EMA momentum at the last iteration."""
    tdrop: Literal["none", "lowest_loss", "own_data", "own+generic_data"] = "lowest_loss"
    """Teacher dropping: keep each image's highest-loss teacher, drop the others with probability ``tdrop_p``."""
    tdrop_p: float = 0.5
    """Drop probability for ``lowest_loss``."""
    seed: int = 22
    """Run seed (data order, augmentations, teacher dropping; rank r uses seed + r where per-rank)."""


@dataclass(frozen=True)
class DistillConfig:
    """A full DUNE distillation run."""

    student: StudentConfig = field(default_factory=StudentConfig)
    """Student architecture."""
    teachers: tuple[TeacherConfig, ...] = (
        TeacherConfig("dino2reg_vitlarge_14", "dinov2"),
        TeacherConfig("mast3r_vitlarge_16", "mast3r"),
        TeacherConfig("multihmr_vitlarge_14_672", "multihmr"),
    )
    """Teachers (any non-empty subset; names must be unique)."""
    data: DataConfig = field(default_factory=DataConfig)
    """Training data."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation and bookkeeping."""

    def __post_init__(self) -> None:
        names = [t.name for t in self.teachers]
        if not names:
            raise ValueError("at least one teacher is needed")
        if len(set(names)) != len(names):
            raise ValueError(f"teacher names must be unique, got {names}")
        if self.student.arch == "custom" and (self.student.embed_dim <= 0 or self.student.num_heads <= 0):
            raise ValueError("student.arch = custom needs student.embed_dim and student.num_heads")
        if self.student.image_size % 14:
            raise ValueError(f"student.image_size {self.student.image_size} is not a multiple of the patch size 14")

    def total_iterations(self, world_size: int) -> int:
        """Iterations of the run: ``train.iterations`` or the official count from epochs and the total batch."""
        if self.train.iterations is not None:
            return self.train.iterations
        iters = math.ceil(self.train.epochs * self.train.epoch_size / (self.train.batch_size_per_gpu * world_size))
        return iters + iters % 2


_RANDOM_TINY = {"embed_dim": 32, "depth": 1, "num_heads": 2}
_MUM_TINY = {"embed_dim": 128, "depth": 4, "num_heads": 4}  # the encoder of training.mum's ``tiny`` preset

PRESETS: dict[str, DistillConfig] = {
    # Paper stage 1: ViT-B/14 at 336 px, 100 epochs (supplementary Table 2).
    "dune_vitb14_336": DistillConfig(),
    "dune_vits14_336": DistillConfig(student=StudentConfig(arch="vit_small")),
    # Paper stage 2: resume the 336-px student at 448 px, lr 5e-5, 50 epochs (set student.init_from).
    "dune_vitb14_448": DistillConfig(
        student=StudentConfig(image_size=448), train=TrainConfig(lr=5e-5, epochs=50.0, output_dir="runs/dune_448")
    ),
    "dune_vits14_448": DistillConfig(
        student=StudentConfig(arch="vit_small", image_size=448),
        train=TrainConfig(lr=5e-5, epochs=50.0, output_dir="runs/dune_448"),
    ),
    # Seconds on a CPU: tiny student, two tiny random teachers, synthetic images.
    "smoke": DistillConfig(
        student=StudentConfig(arch="custom", embed_dim=48, depth=2, num_heads=2, image_size=56),
        teachers=(
            TeacherConfig("dino2reg_vitlarge_14", "dinov2", random_overrides=_RANDOM_TINY, seed=1),
            TeacherConfig("mast3r_vitlarge_16", "mast3r", random_overrides=_RANDOM_TINY, seed=2),
        ),
        data=DataConfig(source="synthetic", synthetic_images=64, synthetic_domains=("dinov2", "mast3r"), num_workers=0),
        train=TrainConfig(
            output_dir="runs/dune_smoke",
            batch_size_per_gpu=8,
            iterations=30,
            lr=0.05,
            warmup_fraction=0.1,
            checkpoint_every=10,
            log_every=5,
            device="cpu",
        ),
    ),
    # recon-tiny stage (b), sized for 2 CPU cores: a 128-d x 4 ViT/14 student at 112 px distilled from the MuM-tiny
    # encoder of stage (a) (``teachers[0].checkpoint``: its ``mum_backbone.pth``; random here) on images of
    # ``tools.synth`` scenes (the chain points ``data`` at rendered folders; synthetic patterns otherwise).
    "tiny": DistillConfig(
        student=StudentConfig(arch="custom", embed_dim=128, depth=4, num_heads=4, image_size=112),
        teachers=(TeacherConfig("mum_tiny", "mum", random_overrides=_MUM_TINY, seed=1),),
        data=DataConfig(source="synthetic", synthetic_images=256, synthetic_domains=("mast3r",), num_workers=0),
        train=TrainConfig(
            output_dir="runs/dune_tiny",
            batch_size_per_gpu=16,
            iterations=1000,
            lr=1e-3,
            warmup_fraction=0.1,
            checkpoint_every=200,
            log_every=20,
            device="cpu",
        ),  # fmt: skip
    ),
}


def resolve_config(preset: str = "dune_vitb14_336", data: dict | None = None) -> DistillConfig:
    """The preset's config with ``data`` (a parsed JSON file) merged over it, validated.

    ``roots`` and ``random_overrides`` objects replace the preset's as a whole (free keys); lists such as
    ``teachers`` always do.

    Raises:
        ConfigError: unknown preset, unknown keys or invalid values (the field path is named).
    """
    return resolve_preset(DistillConfig, PRESETS, preset, data, replace_whole=("roots", "random_overrides"))


replace = replace_sections  # ``replace(cfg, train={"lr": 1e-3})``: fields of sections replaced
