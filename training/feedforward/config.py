"""Configuration of the feed-forward recipe: dataclasses with a docstring per field, named presets, JSON files.

Defaults follow the MuM supplement's 3D-reconstruction recipe (after VGGT): frozen encoder, 100k iterations,
AdamW at lr 2e-4, 48 frames per GPU at 512 px, VGGT's sampling (a batch holds ``frame_budget // S`` sequences of
S frames, S drawn per batch), ``L = L_camera + L_depth + L_pmap``. The ``distill`` preset is the distillation
finetuning variant: the L2 errors against a teacher's predictions, half the batch (24 frames), lr 1e-4, no
confidence weights. ``small`` trains the ``small`` model on synthetic scenes on one CPU core in about a minute.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from training.common.config import RunConfig, replace_sections, resolve_preset


@dataclass(frozen=True)
class ModelConfig:
    """Frozen encoder and the aggregator / heads trained on it."""

    encoder: str = "mum_vitl16"
    """``encoder_init = load``: weights name or checkpoint path for ``backbone.load``; ``random``: a registered
    backbone family for ``backbone.create`` (tests and smoke runs only: a random frozen encoder)."""
    encoder_init: Literal["load", "random"] = "load"
    """Where the frozen encoder's weights come from."""
    encoder_overrides: dict[str, int] = field(default_factory=dict)
    """``encoder_init = random``: size overrides for ``backbone.create`` (e.g. ``{"depth": 1}``)."""
    preset: Literal["small", "paper"] = "paper"
    """Aggregator / head sizes (``recon.feedforward.PRESETS``)."""
    teacher: str = ""
    """``train.loss = distill``: feed-forward model file whose predictions are the targets."""


@dataclass(frozen=True)
class DatasetConfig:
    """One source of multi-view scenes with cameras and depth."""

    name: str = "synthetic"
    """Name shown in logs."""
    kind: Literal["synthetic", "folder"] = "synthetic"
    """``synthetic``: scenes rendered by ``tools.synth.render_scene``; ``folder``: ``root/<scene>/`` folders in
    recon's camera-folder layout (``cameras.json`` with K and T_world_cam, ``depth/*.npz`` with depth and mask;
    ``tools.synth.write_folder(..., with_depth=True)`` writes it)."""
    root: str = ""
    """``folder``: the folder holding one sub-folder per scene."""
    weight: float = 1.0
    """A sequence comes from this dataset with probability weight / sum of weights."""
    scenes: int = 16
    """``synthetic``: scenes rendered."""
    views: int = 12
    """``synthetic``: views per scene."""
    size: tuple[int, int] = (56, 56)
    """``synthetic``: (W, H) in pixels (multiples of the encoder's patch size)."""
    layout: Literal["orbit", "room_walk", "room_set"] = "orbit"
    """``synthetic``: ``tools.synth`` layout."""
    arc_deg: float = 360.0
    """``synthetic`` orbit: azimuth range of the cameras in degrees (smaller arcs: more overlap between views)."""
    seed: int = 0
    """``synthetic``: scene k is rendered with seed ``seed + k`` (held-out sets use another range)."""


@dataclass(frozen=True)
class DataConfig:
    """Sequences and batch shapes."""

    datasets: tuple[DatasetConfig, ...] = (DatasetConfig(),)
    """Scene sources (replace with your datasets)."""
    frame_budget: int = 48
    """Frames per GPU and batch: ``frame_budget // S`` sequences of S frames (MuM supplement: 48 at 512 px)."""
    views: tuple[int, int] = (2, 24)
    """Range of the per-batch sequence length S, drawn uniformly (inclusive; VGGT: 2 to 24)."""


@dataclass(frozen=True)
class TrainConfig(RunConfig):
    """Optimisation, loss, precision, checkpoints and logging."""

    output_dir: str = "runs/feedforward"
    """Run folder: checkpoints, config.json, TensorBoard events, ``feedforward_final.pth`` + its encoder."""
    iterations: int = 100_000
    """Total iterations (MuM supplement: 100k)."""
    warmup: int = 1000
    """Linear warm-up iterations before the cosine decay."""
    lr: float = 2e-4
    """Peak learning rate (2e-4; the distillation variant 1e-4)."""
    min_lr: float = 0.0
    """Floor of the cosine schedule."""
    weight_decay: float = 0.05
    """AdamW weight decay on matrices."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    clip_grad: float = 1.0
    """Global gradient-norm clip (0: off)."""
    loss: Literal["supervised", "distill"] = "supervised"
    """``supervised``: ``L_camera + L_depth + L_pmap`` with confidences; ``distill``: L2 errors to the teacher."""
    conf_alpha: float = 0.2
    """Weight of ``-log c`` in the aleatoric losses (DUSt3R: 0.2)."""
    camera_gamma: float = 0.6
    """Weight decay over the camera head's refinement passes (``gamma ** (n - 1 - i)``)."""
    camera_weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Weights of the camera loss's translation, quaternion and field-of-view numbers."""
    checkpoint_every: int = 5000
    """Save a checkpoint every this many iterations (and at the end)."""


@dataclass(frozen=True)
class FeedForwardTrainConfig:
    """The whole recipe."""

    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()


_SMALL_DATA = DataConfig(datasets=(DatasetConfig(scenes=24, views=8, arc_deg=90.0),), frame_budget=16, views=(2, 8))

PRESETS = {
    "paper": FeedForwardTrainConfig(
        data=DataConfig(datasets=(DatasetConfig(size=(512, 512)),)),
    ),
    "distill": FeedForwardTrainConfig(
        model=ModelConfig(teacher="teacher/feedforward_final.pth"),
        data=DataConfig(datasets=(DatasetConfig(size=(512, 512)),), frame_budget=24),
        train=TrainConfig(lr=1e-4, loss="distill", output_dir="runs/feedforward_distill"),
    ),
    "small": FeedForwardTrainConfig(
        model=ModelConfig(
            encoder="dune_vits14",
            encoder_init="random",
            encoder_overrides={"depth": 1, "embed_dim": 64, "num_heads": 2},
            preset="small",
        ),
        data=_SMALL_DATA,
        train=TrainConfig(
            output_dir="runs/feedforward_small",
            iterations=300,
            warmup=20,
            lr=2e-3,
            weight_decay=0.0,
            checkpoint_every=100,
            log_every=50,
            device="cpu",
            tensorboard=False,
        ),
    ),
}


def resolve_config(preset: str = "paper", data: dict | None = None) -> FeedForwardTrainConfig:
    """The preset's config with ``data`` (a parsed JSON file) merged over it, validated.

    Raises:
        ConfigError: unknown preset, unknown keys or invalid values (the field path is named).
    """
    return resolve_preset(FeedForwardTrainConfig, PRESETS, preset, data)


replace = replace_sections  # ``replace(cfg, train={"lr": 1e-3})``
