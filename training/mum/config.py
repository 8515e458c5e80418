"""MuM pre-training configuration: dataclasses with a docstring per field, named presets, JSON files.

Defaults follow the MuM paper and its ``train-dev`` branch (reference/dune_mum.md §11): ViT-L/16 encoder with
the 768-d 12-block decoder, 256 px (supplement A), mask ratio 0.75 per view, AdamW (0.9, 0.95) with weight decay 0.05,
``lr = blr x frames / 256`` with ``blr = 1.5e-4`` and ``frames`` = per-GPU frame budget x world size, 25k warm-up
iterations of 500k then cosine to 0, no gradient clipping, bf16 autocast on CUDA. Sequence sampling as the paper
describes it: S uniform in [2, 24] views per batch, as many sequences as fit a 96-frame budget per GPU, and a
10 % chance of a single-view batch (the branch's config says S in [2, 12] and 128 frames; set ``data.views``
and ``data.frame_budget`` to get it).

A config file is JSON; keys it omits keep the preset's value (``--preset``, default ``mum_vitl16``) and
``--set a.b=value`` overrides one field. ``data.datasets`` and ``data.single_view`` are replaced as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from training.common.config import RunConfig, replace_sections, resolve_preset

# Encoder sizes (embed_dim, depth, heads); ViT-L is the released one.
ENCODER_SIZES = {
    "vit_large": (1024, 24, 16),
    "vit_base": (768, 12, 12),
    "vit_small": (384, 12, 6),
}


@dataclass(frozen=True)
class ModelConfig:
    """Encoder and light multi-view decoder."""

    encoder: Literal["vit_large", "vit_base", "vit_small", "custom"] = "vit_large"
    """Encoder size: ViT-L/16 (1024-d, 24 blocks, 16 heads), ViT-B/16, ViT-S/16, or ``custom`` (fields below)."""
    embed_dim: int = 0
    """Encoder width for ``encoder = custom``."""
    depth: int = 0
    """Encoder blocks for ``encoder = custom``."""
    num_heads: int = 0
    """Encoder heads for ``encoder = custom`` (head dim must be divisible by 4)."""
    patch_size: int = 16
    """Patch side in pixels."""
    norm_eps: float = 1e-6
    """LayerNorm epsilon of encoder and decoder (1e-6: the released autoencoder; train-dev's config used 1e-5)."""
    decoder_embed_dim: int = 768
    """Decoder width."""
    decoder_depth: int = 12
    """Decoder blocks, half frame-wise and half global, alternating (frame-wise first)."""
    decoder_num_heads: int = 16
    """Decoder heads (official: 16, head dim 48)."""
    mask_ratio: float = 0.75
    """Share of patches masked in each view (each view masked independently, same count in every view)."""
    init_from: str | None = None
    """Official ``MuM_ViTLarge_BaseDecoder.pth``-layout file (or a run's ``mum_final.pth``) to start from;
    ignored when resuming this run's own checkpoint."""


@dataclass(frozen=True)
class DatasetConfig:
    """One source of image sequences."""

    name: str = "frames"
    """Name shown in logs."""
    kind: Literal["folder", "co3d", "synthetic", "images", "sequences"] = "folder"
    """``folder``: ``root/<scene>/<frames>`` with frames in (natural) file-name order; ``co3d``: a CO3Dv2 root
    (``<category>/frame_annotations.jgz``); ``synthetic``: scenes rendered by ``tools.synth.render_scene``;
    ``images``: unordered single images (for single-view batches only); ``sequences``: a sequences file written by
    ``python -m training.mum.overlaps`` (MegaDepth overlap chains, MegaScenes IoU chains), paths under ``root``."""
    root: str = ""
    """Dataset folder (not used by ``synthetic``)."""
    weight: float = 1.0
    """Sampling weight: a sequence comes from this dataset with probability weight / sum of weights."""
    sequences: Literal["auto", "scene", "chunks", "overlap"] = "auto"
    """How sequences are formed: ``scene`` = all frames of a scene; ``chunks`` = consecutive chunks of
    ``chunk_length`` ordered frames; ``overlap`` = chains of frames linked by their overlap scores
    (``overlap_file``); ``auto`` = ``overlap`` when the scene has an overlap file, else ``scene`` for scenes up to
    ``chunk_length`` frames and ``chunks`` above."""
    sequences_file: str = ""
    """``sequences``: the ``.json.gz`` of ``training.mum.overlaps`` (``{"sequences": [[path, ...], ...]}``)."""
    min_length: int = 2
    """``sequences``: sequences shorter than this are dropped (MuM's MegaDepth reader: 24)."""
    chunk_length: int = 100
    """Frames per chunk (paper: 100 ordered frames)."""
    overlap_file: str = "overlaps.json"
    """Per-scene JSON of overlap scores ``{"pairs": [[frame_a, frame_b, score], ...]}`` (file names or indices)."""
    min_overlap: float = 0.1
    """Overlap chains stop when no unused frame overlaps the chain's last frame by more than this."""
    chains_per_scene: int = 10
    """Overlap chains built per scene (random anchors, seeded)."""
    categories: tuple[str, ...] = ()
    """CO3D categories to use (empty: every category folder with a ``frame_annotations.jgz``)."""
    synthetic_scenes: int = 8
    """``synthetic``: number of scenes (each one sequence)."""
    synthetic_views: int = 12
    """``synthetic``: views rendered per scene."""
    synthetic_size: int = 96
    """``synthetic``: rendered image side in pixels (square)."""
    synthetic_layout: Literal["orbit", "room_walk", "room_set", "mixed"] = "mixed"
    """``synthetic``: ``tools.synth`` layout; ``mixed`` alternates orbit and room-walk scenes."""


@dataclass(frozen=True)
class DataConfig:
    """Sequences, batch shapes and augmentations."""

    datasets: tuple[DatasetConfig, ...] = (DatasetConfig(name="synthetic", kind="synthetic"),)
    """Multi-view sources (replace with your datasets; the default renders a few synthetic scenes)."""
    mixture: str = ""
    """Instead of ``datasets``: ``"3 @ Sequences(name='megadepth', root=..., sequences_file=..., min_length=24) +
    1 @ Sequences(name='megascenes', ...)"`` (``training.datasets.mixture`` syntax, parsed with ``ast``): the count
    before ``@`` is the dataset's sampling share, the call ``Sequences`` / ``Folder`` / ``Co3d`` / ``Synthetic``
    gives its ``kind`` and the keywords its other fields."""
    single_view: tuple[DatasetConfig, ...] = ()
    """Sources of single-view batches (ImageNet-style folders, ``kind = images``); empty: single frames of the
    multi-view sources."""
    single_view_prob: float = 0.1
    """Probability that a batch is single-view: ``frame_budget`` images as ``[frame_budget, 1, 3, H, W]``."""
    frame_budget: int = 96
    """Frames per GPU and batch: a batch holds ``floor(frame_budget / S)`` sequences of S views."""
    views: tuple[int, int] = (2, 24)
    """Range of the per-batch sequence length S, drawn uniformly (inclusive)."""
    image_size: int = 256
    """Square training resolution (multiple of the patch size). MuM supplement A: 256 x 256 (the ``train-dev``
    config says 224)."""
    rrc_scale: tuple[float, float] = (0.2, 1.0)
    """RandomResizedCrop area range, drawn independently per frame (official ``DataAugmentationMAE``)."""
    rrc_ratio: tuple[float, float] = (0.75, 4.0 / 3.0)
    """RandomResizedCrop aspect-ratio range."""
    hflip: float = 0.5
    """Per-frame horizontal flip probability."""
    num_workers: int = 8
    """DataLoader worker processes per rank (each builds whole batches)."""


@dataclass(frozen=True)
class TrainConfig(RunConfig):
    """Optimisation, schedule, precision, checkpoints and logging."""

    output_dir: str = "runs/mum"
    """Run folder: checkpoints, config.json, TensorBoard events (``tb/``), reconstructions, final models."""
    iterations: int = 500_000
    """Total iterations."""
    warmup: int = 25_000
    """Linear warm-up iterations."""
    blr: float = 1.5e-4
    """Base learning rate; the peak is ``blr x frame_budget x world_size / 256`` unless ``lr`` is set."""
    lr: float | None = None
    """Absolute peak learning rate (overrides the linear scaling rule)."""
    min_lr: float = 0.0
    """Floor of the cosine schedule."""
    weight_decay: float = 0.05
    """AdamW weight decay on matrices and token tables (cls / mask tokens included, as the official groups)."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    clip_grad: float = 0.0
    """Global gradient-norm clip (0: off, as the official run; the norm is logged either way)."""
    checkpoint_every: int = 5000
    """Save a checkpoint every this many iterations (and at the end)."""
    image_every: int = 1000
    """Log a reconstruction image (TensorBoard + PNG) every this many iterations (0: never)."""


@dataclass(frozen=True)
class MuMConfig:
    """A full MuM pre-training run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    """Architecture and masking."""
    data: DataConfig = field(default_factory=DataConfig)
    """Training sequences."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation and bookkeeping."""

    def __post_init__(self) -> None:
        m, d = self.model, self.data
        if m.encoder == "custom" and min(m.embed_dim, m.depth, m.num_heads) <= 0:
            raise ValueError("model.encoder = custom needs model.embed_dim, model.depth and model.num_heads")
        if d.image_size % m.patch_size:
            raise ValueError(f"data.image_size {d.image_size} is not a multiple of the patch size {m.patch_size}")
        lo, hi = d.views
        if not 2 <= lo <= hi:
            raise ValueError(f"data.views must satisfy 2 <= min <= max, got {list(d.views)}")
        if hi > d.frame_budget:
            raise ValueError(f"data.views max {hi} exceeds data.frame_budget {d.frame_budget}: no sequence would fit")
        if not 0.0 <= d.single_view_prob <= 1.0:
            raise ValueError(f"data.single_view_prob must be in [0, 1], got {d.single_view_prob}")
        if not d.datasets:
            raise ValueError("data.datasets is empty: give at least one multi-view source")
        if d.mixture:
            mixture_datasets(d.mixture)  # a malformed expression fails here, before any training
        if any(ds.kind == "images" for ds in d.datasets):
            raise ValueError("kind = images holds single images: list it under data.single_view")
        if any(ds.weight <= 0 for ds in (*d.datasets, *d.single_view)):
            raise ValueError("dataset weights must be positive")
        if not 0 <= self.train.warmup <= self.train.iterations:
            raise ValueError(
                f"train.warmup ({self.train.warmup}) must be between 0 and train.iterations ({self.train.iterations})"
            )
        if not 0.0 <= m.mask_ratio < 1.0:
            raise ValueError(f"model.mask_ratio must be in [0, 1), got {m.mask_ratio}")

    def encoder_size(self) -> tuple[int, int, int]:
        """``(embed_dim, depth, num_heads)`` of the encoder."""
        m = self.model
        return (m.embed_dim, m.depth, m.num_heads) if m.encoder == "custom" else ENCODER_SIZES[m.encoder]

    def peak_lr(self, world_size: int) -> float:
        """``train.lr`` or the linear scaling rule ``blr x frame_budget x world_size / 256``."""
        if self.train.lr is not None:
            return self.train.lr
        return self.train.blr * self.data.frame_budget * world_size / 256.0


_TINY_DATA = DataConfig(
    datasets=(
        DatasetConfig(name="synthetic", kind="synthetic", synthetic_scenes=4, synthetic_views=8, synthetic_size=64),
    ),
    frame_budget=12,
    views=(2, 6),
    image_size=32,
    num_workers=0,
)

PRESETS: dict[str, MuMConfig] = {
    # The paper's model: ViT-L/16 + 768-d decoder, 500k iterations at 256 px (supplement A).
    "mum_vitl16": MuMConfig(),
    "mum_vitb16": MuMConfig(model=ModelConfig(encoder="vit_base"), train=TrainConfig(output_dir="runs/mum_vitb16")),
    # Seconds on a CPU: 64-d x 2 encoder, 48-d x 4 decoder, 32 px synthetic frames.
    "smoke": MuMConfig(
        model=ModelConfig(
            encoder="custom",
            embed_dim=64,
            depth=2,
            num_heads=4,
            decoder_embed_dim=48,
            decoder_depth=4,
            decoder_num_heads=4,
        ),
        data=_TINY_DATA,
        train=TrainConfig(
            output_dir="runs/mum_smoke",
            iterations=30,
            warmup=3,
            lr=2e-3,
            checkpoint_every=10,
            log_every=5,
            image_every=10,
            device="cpu",
        ),
    ),  # fmt: skip
    # recon-tiny stage (a), sized for 2 CPU cores: 128-d x 4 ViT/16 + 96-d x 2 decoder on 128-px frames of
    # ``tools.synth`` orbits and room walks. Scene seeds are ``train.seed * 1000 + i``: seed 1 gives 1000..1023,
    # disjoint from the held-out chain scenes (seeds >= 900_000) and from demo_data (recon synth, seed 0).
    "tiny": MuMConfig(
        model=ModelConfig(
            encoder="custom",
            embed_dim=128,
            depth=4,
            num_heads=4,
            patch_size=16,
            decoder_embed_dim=96,
            decoder_depth=2,
            decoder_num_heads=4,
        ),
        data=DataConfig(
            datasets=(
                DatasetConfig(
                    name="synthetic",
                    kind="synthetic",
                    synthetic_scenes=24,
                    synthetic_views=8,
                    synthetic_size=160,
                    synthetic_layout="mixed",
                ),
            ),
            frame_budget=16,
            views=(2, 4),
            image_size=128,
            num_workers=0,
        ),
        train=TrainConfig(
            output_dir="runs/mum_tiny",
            iterations=2000,
            warmup=100,
            lr=1e-3,
            checkpoint_every=200,
            log_every=20,
            image_every=0,
            device="cpu",
            seed=1,
        ),
    ),  # fmt: skip
}


def resolve_config(preset: str = "mum_vitl16", data: dict | None = None) -> MuMConfig:
    """The preset's config with ``data`` (a parsed JSON file) merged over it, validated.

    Lists such as ``data.datasets`` replace the preset's as a whole.

    Raises:
        ConfigError: unknown preset, unknown keys or invalid values (the field path is named).
    """
    return resolve_preset(MuMConfig, PRESETS, preset, data)


replace = replace_sections  # ``replace(cfg, train={"lr": 1e-3})``: fields of sections replaced


MIXTURE_KINDS = {"Sequences": "sequences", "Folder": "folder", "Co3d": "co3d", "Synthetic": "synthetic"}


def mixture_datasets(text: str) -> tuple[DatasetConfig, ...]:
    """``data.mixture`` -> dataset configs (``count`` -> ``weight``; a term without a count weighs 1).

    Raises:
        ValueError: a malformed expression, an unknown kind or field (the valid ones are named).
    """
    from training.common.config import from_dict
    from training.datasets.mixture import parse_mixture

    out = []
    for term in parse_mixture(text):
        if term.dataset not in MIXTURE_KINDS:
            raise ValueError(f"data.mixture: unknown dataset kind {term.dataset!r}; known: {sorted(MIXTURE_KINDS)}")
        fields = {"name": term.dataset.lower(), **term.kwargs, "kind": MIXTURE_KINDS[term.dataset]}
        out.append(from_dict(DatasetConfig, {**fields, "weight": float(term.count or 1)}, "data.mixture"))
    return tuple(out)
