"""Decoder-finetuning configuration: dataclasses with a docstring per field, named presets, JSON files.

Defaults follow MASt3R's release recipe (reference/mast3r.md §12): AdamW betas (0.9, 0.95), weight decay 0.05
on matrices, lr 1e-4 -> 1e-6 with a linear warm-up over 8 of 50 "epochs" (16 %) then a half cosine, 4 pairs per
GPU with 2 accumulation steps, symmetrised pairs, the ``?avg_dis`` confidence-weighted regression plus 0.075 x
the InfoNCE matching loss (temperature 0.05), 8192 correspondences per pair of which half are negatives. The
backbone is frozen (DUNE supplementary B: MASt3R decoders trained on a frozen DUNE encoder, at 448 px for a
336-px encoder and 518 px for a 448-px one).

A config file is JSON; keys it omits keep the preset's value (``--preset``), and ``--set a.b=value`` overrides
single fields. ``data.sources`` and ``data.val_sources`` are replaced as a whole when given.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from training.common.config import RunConfig, replace_sections, resolve_preset


@dataclass(frozen=True)
class NetConfig:
    """The network: a registered backbone (frozen) under MASt3R's binocular decoder and ``catmlp+dpt`` heads."""

    backbone: str = "dune_vitb14"
    """Registered backbone family (``backbone.list()``): dune_vitb14, dune_vits14, croco_vitl16, mum_vitl16,
    dinov2_vitb14, ..."""
    backbone_checkpoint: str | None = None
    """Backbone weights (path or weights name, read by ``backbone.load``). ``None``: random weights (tests)."""
    backbone_overrides: dict[str, Any] = field(default_factory=dict)
    """``backbone.create`` overrides for a random backbone, e.g. ``{"embed_dim": 32, "depth": 1, "num_heads": 2}``."""
    backbone_name: str | None = None
    """``dune_backbone_name`` written into a DUNE-MASt3R decoder file (a weights name or path that
    ``recon.load_model`` resolves); default: ``backbone_checkpoint``."""
    tokens: Literal["auto", "final", "prenorm"] = "auto"
    """Backbone tokens the decoder reads. ``auto``: pre-norm for DUNE (as DUNE-MASt3R), final otherwise."""
    adapter: Literal["auto", "none", "layernorm"] = "auto"
    """Trainable LayerNorm (eps 1e-5) on the backbone tokens. ``auto``: on for DUNE (DUNE-MASt3R's ``norm``)."""
    decoder_embed_dim: int = 768
    """Decoder width (MASt3R BaseDecoder: 768)."""
    decoder_depth: int = 12
    """Decoder blocks per view (the DPT head needs at least 10)."""
    decoder_num_heads: int = 12
    """Decoder attention heads."""
    desc_dim: int = 24
    """Local descriptor width."""
    head_mlp_ratio: float = 4.0
    """Hidden width factor of the local-feature MLP (MASt3R: 4). Its output is ``(desc_dim + 1) x patch^2`` wide,
    so at patch 14 it holds most of a small model's weights; recon-tiny uses 1."""
    dpt_feature_dim: int = 256
    """DPT fusion width (256 in every release; smaller only for tiny test models)."""
    dpt_layer_dims: tuple[int, int, int, int] = (96, 192, 384, 768)
    """DPT reassembly widths (release values)."""
    init_from: str | None = None
    """Checkpoint whose decoder and heads initialise this one: a MASt3R / DUSt3R release ``.pth`` or Hugging
    Face export, a DUNE-MASt3R decoder, or a recon checkpoint. Mis-shaped tensors are re-initialised (or
    resampled, see ``resample_pixel_layers``); the report is logged and saved as ``init_report.json``."""
    resample_pixel_layers: bool = False
    """When only the patch size differs (16 -> 14), resample the per-pixel output layer of the descriptor MLP
    over the sub-pixel grid instead of re-initialising it (recon's option; the DUNE supplement B re-initialises
    the size-mismatched layers, the default)."""
    output_format: Literal["auto", "recon", "dune_mast3r"] = "auto"
    """Final model layout: ``dune_mast3r`` (official decoder file, needs a DUNE backbone) or ``recon`` (the whole
    model); ``auto``: dune_mast3r for DUNE backbones."""


@dataclass(frozen=True)
class SourceConfig:
    """One training (or validation) source of image pairs."""

    kind: Literal["synthetic", "co3d"] = "synthetic"
    """``synthetic``: rendered scenes (``tools.synth``); ``co3d``: the CO3Dv2 layout under ``root``."""
    weight: float = 1.0
    """Share of the mixture (relative to the other sources' weights)."""
    name: str = ""
    """Name in logs (default: the kind)."""
    metric: bool | None = None
    """Whether depths are metric (``?avg_dis`` then supervises the absolute scale). Default: synthetic yes,
    CO3D no (as MASt3R)."""
    layout: str = "orbit"
    """Synthetic: ``orbit``, ``room_walk`` or ``room_set``."""
    scenes: int = 100
    """Synthetic: number of scenes."""
    views_per_scene: int = 8
    """Synthetic: views rendered per scene."""
    render_size: tuple[int, int] = (640, 480)
    """Synthetic: render size ``(W, H)`` (crops and resizes then produce the training resolutions)."""
    seed: int = 0
    """Synthetic: base seed of the scenes (use different seeds for training and validation)."""
    options: dict[str, Any] = field(default_factory=dict)
    """Synthetic: more ``render_scene`` options (``n_objects``, ``focal_range``, ``mixed_orientation``, ...)."""
    root: str = ""
    """CO3D: dataset root (one folder per category)."""
    categories: tuple[str, ...] = ()
    """CO3D: categories (default: all with the set list)."""
    subset: str = "fewview_train"
    """CO3D: set-list name, ``set_lists/set_lists_<subset>.json``."""
    split: str = "train"
    """CO3D: key of the set list."""
    max_frame_gap: int = 10
    """CO3D: a frame is paired with one at most this many frames away."""
    mask_bg: Literal["none", "rand", "always"] = "rand"
    """CO3D: keep depth only on the object mask for half the views (``rand``, DUSt3R's), always, or never."""
    min_quality: float | None = None
    """CO3D: keep sequences whose viewpoint quality score is above this."""


@dataclass(frozen=True)
class DataConfig:
    """Training pairs: sources, resolutions, correspondences, augmentations."""

    sources: tuple[SourceConfig, ...] = (SourceConfig(),)
    """The training mixture (ignored when ``mixture`` is set)."""
    mixture: str = ""
    """A MASt3R-style dataset expression, e.g. ``"68_400 @ BlendedMVS(root='/data/blendedmvs_processed',
    split='train') + 45_600 @ ARKitScenes(root='/data/arkitscenes_processed')"``: pairs per epoch ``@`` a reader of
    ``training.datasets.pairs.READERS`` with its keyword arguments (parsed with ``ast``, never evaluated); per-term
    ``aug_crop``, ``aug_monocular``, ``n_corres``, ``nneg`` and ``transform`` override the fields below. Takes
    precedence over ``sources``; the epoch is the sum of the counts (``epoch_size`` is then ignored)."""
    epoch_size: int | None = None
    """Indices per pass over the mixture (default: the sum of the source lengths); weights split it."""
    resolutions: str | tuple[tuple[int, int], ...] = "auto"
    """Landscape ``[[W, H], ...]`` or a named list: ``dune336`` (448 px), ``dune448`` (518 px), ``mast3r512``.
    ``auto``: by the backbone (DUNE / DINOv2 at 336 px: dune336; patch 14 otherwise: dune448; patch 16:
    mast3r512). One is drawn per batch."""
    portrait_prob: float = 0.5
    """Share of non-square batches turned portrait."""
    n_corres: int = 8192
    """Correspondences per pair (true matches + negatives)."""
    neg_fraction: float = 0.5
    """Share of random non-matching negatives among them (MASt3R ``nneg``)."""
    color_jitter: bool = True
    """MASt3R's ColorJitter(0.5, 0.5, 0.5, 0.1) per view."""
    aug_crop: float | Literal["auto", "centred"] = "auto"
    """Crops (MASt3R ``aug_crop``). ``auto`` or a number of pixels: MASt3R's random crops, the best-matching of
    ``n_tentative_crops`` per view, through a virtual camera that keeps the principal point centred (``auto``:
    ``max(0.1 S, S (S - R) // R)`` px of virtual upscaling); ``centred``: recon's crop around the principal point
    (then ``zoom_range`` applies). Validation always uses centred crops."""
    n_tentative_crops: int = 4
    """Random crops tried per view with ``aug_crop`` (MASt3R: 4)."""
    aug_monocular: float = 0.005
    """Probability that both views of a pair are the same image (MASt3R ``aug_monocular=0.005``)."""
    zoom_range: float = 0.0
    """With ``aug_crop = centred``: random zoom-in of the crops, factor in ``[1, 1 + zoom_range]``."""
    swap_prob: float = 0.5
    """Probability of swapping the two views of a pair."""
    num_workers: int = 8
    """DataLoader worker processes per rank."""
    val_sources: tuple[SourceConfig, ...] = ()
    """Held-out pairs for validation (empty: no validation)."""
    val_pairs: int = 64
    """Validation pairs per source."""
    val_resolution: tuple[int, int] | None = None
    """Validation ``(W, H)``; default: the first training resolution."""


@dataclass(frozen=True)
class LossConfig:
    """MASt3R's criterion (see ``training.finetune.losses``)."""

    norm_mode: Literal["?avg_dis", "avg_dis", "none"] = "?avg_dis"
    """``?avg_dis``: scale-normalised, metric sources in their true scale; ``avg_dis``: always normalised;
    ``none``: raw units (every source metric)."""
    alpha: float = 0.2
    """Confidence regulariser of the regression."""
    sky_loss_value: float = 2.0
    """Constant loss on sky pixels (pushes their confidence down); 0: sky ignored."""
    matching_weight: float = 0.075
    """Weight of the matching loss (0: regression only)."""
    temperature: float = 0.05
    """InfoNCE temperature."""
    matching_alpha: float = 10.0
    """Confidence regulariser of the matching loss."""
    confmode: Literal["mean", "prod"] = "mean"
    """How the two descriptor confidences combine."""
    blocksize: int = 8192
    """Correspondences per InfoNCE block."""
    eps: float = 1e-8
    """InfoNCE: each log-probability is clipped at ``log(eps)`` (the official ``clip(eps)``)."""

    def __post_init__(self) -> None:
        modes = ("?avg_dis", "avg_dis", "none")
        if self.norm_mode not in modes:
            raise ValueError(f"loss.norm_mode must be one of {modes}, got {self.norm_mode!r}")
        if self.confmode not in ("mean", "prod"):
            raise ValueError(f"loss.confmode must be 'mean' or 'prod', got {self.confmode!r}")


@dataclass(frozen=True)
class TrainConfig(RunConfig):
    """Optimisation, schedule, precision, checkpoints, validation and logging."""

    output_dir: str = "runs/finetune"
    """Run folder: checkpoints, config.json, TensorBoard events (``tb/``), final model."""
    batch_size_per_gpu: int = 4
    """Pairs per rank and micro-batch (one resolution per micro-batch)."""
    accum_iter: int = 2
    """Micro-batches accumulated per optimizer step."""
    iterations: int = 100_000
    """Optimizer steps."""
    lr: float = 1e-4
    """Peak learning rate (absolute)."""
    min_lr: float = 1e-6
    """Floor of the cosine schedule."""
    warmup_fraction: float = 0.16
    """Share of the steps in linear warm-up (MASt3R: 8 of 50 epochs)."""
    weight_decay: float = 0.05
    """AdamW weight decay on matrices."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    clip_grad: float = 0.0
    """Global gradient-norm clip (0: off, as MASt3R)."""
    symmetrize: bool = True
    """Train on (a, b) and (b, a) of every pair (MASt3R's symmetrised batches; the encoder runs once)."""
    val_every: int = 1000
    """Validate every this many steps (and at the end), when ``data.val_sources`` is set."""
    match_px: float = 2.0
    """Validation matching accuracy: a nearest neighbour within this many pixels of the true match counts."""


@dataclass(frozen=True)
class FinetuneConfig:
    """A full decoder-finetuning run."""

    model: NetConfig = field(default_factory=NetConfig)
    """Backbone, decoder, heads, initialisation and output layout."""
    data: DataConfig = field(default_factory=DataConfig)
    """Training and validation pairs."""
    loss: LossConfig = field(default_factory=LossConfig)
    """Criterion."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimisation and bookkeeping."""

    def __post_init__(self) -> None:
        if not self.data.sources:
            raise ValueError("data.sources is empty: give at least one training source")
        if self.train.accum_iter < 1 or self.train.batch_size_per_gpu < 1:
            raise ValueError("train.accum_iter and train.batch_size_per_gpu must be >= 1")
        if self.model.decoder_depth < 10:
            raise ValueError(f"model.decoder_depth {self.model.decoder_depth}: the DPT head needs at least 10")


_TINY_BACKBONE = {"embed_dim": 32, "depth": 1, "num_heads": 2}
_TINY_NET = dict(
    backbone_overrides=_TINY_BACKBONE, decoder_embed_dim=32, decoder_depth=10, decoder_num_heads=2,
    dpt_feature_dim=16, dpt_layer_dims=(8, 16, 24, 32),
)  # fmt: skip

_MAST3R = "mast3r_vitl16_512"  # decoder and heads initialised from the MASt3R release

PRESETS: dict[str, FinetuneConfig] = {
    # DUNE-MASt3R as released: decoders for the 448-px DUNE encoders, trained at 518 px.
    "dune_vitb14_448": FinetuneConfig(
        model=NetConfig(backbone="dune_vitb14", backbone_checkpoint="dune_vitb14_448_paper", init_from=_MAST3R),
        data=DataConfig(resolutions="dune448"),
    ),
    "dune_vits14_448": FinetuneConfig(
        model=NetConfig(backbone="dune_vits14", backbone_checkpoint="dune_vits14_448", init_from=_MAST3R),
        data=DataConfig(resolutions="dune448"),
    ),
    # A DUNE encoder distilled at 336 px: decoder trained at 448 px.
    "dune_vitb14_336": FinetuneConfig(
        model=NetConfig(backbone="dune_vitb14", backbone_checkpoint="dune_vitb14_336", init_from=_MAST3R),
        data=DataConfig(resolutions="dune336"),
    ),
    # Other frozen encoders under a MASt3R decoder.
    "croco_vitl16": FinetuneConfig(
        model=NetConfig(backbone="croco_vitl16", backbone_checkpoint=_MAST3R, init_from=_MAST3R),
        data=DataConfig(resolutions="mast3r512"),
    ),
    "mum_vitl16": FinetuneConfig(
        model=NetConfig(backbone="mum_vitl16", backbone_checkpoint="mum_vitl16", init_from=_MAST3R),
        data=DataConfig(resolutions="mast3r512"),
    ),
    "dinov2_vitb14": FinetuneConfig(
        model=NetConfig(backbone="dinov2_vitb14", backbone_checkpoint="dinov2_vitb14", init_from=_MAST3R),
        data=DataConfig(resolutions="dune448"),
    ),
    # Seconds on a CPU: tiny random DUNE-like backbone, tiny decoder, small synthetic scenes.
    "smoke": FinetuneConfig(
        model=NetConfig(backbone="dune_vits14", **_TINY_NET),
        data=DataConfig(
            sources=(SourceConfig(scenes=4, views_per_scene=4, render_size=(84, 63), seed=1),),
            resolutions=((56, 42), (56, 28)),
            n_corres=128,
            num_workers=0,
            val_sources=(
                SourceConfig(name="synthetic_val", scenes=1, views_per_scene=4, render_size=(84, 63), seed=1000),
            ),  # fmt: skip
            val_pairs=4,
        ),
        loss=LossConfig(blocksize=128),
        train=TrainConfig(
            output_dir="runs/finetune_smoke",
            batch_size_per_gpu=2,
            accum_iter=2,
            iterations=20,
            lr=2e-3,
            warmup_fraction=0.1,
            checkpoint_every=10,
            val_every=10,
            log_every=5,
            device="cpu",
        ),  # fmt: skip
    ),
}
# The smoke run at the release's DPT widths (256 / 96-768), so it writes the official DUNE-MASt3R layout. From a
# random init a wide head needs the release's lr: at the narrow smoke's 2e-3 the first Adam steps move every weight
# by ~lr, the fan-in of 9 x 256 turns that into a raw depth past 88 and exp overflows to inf at step 2.
PRESETS["smoke_release"] = replace_sections(
    PRESETS["smoke"],
    model={"dpt_feature_dim": 256, "dpt_layer_dims": (96, 192, 384, 768)},
    train={"output_dir": "runs/finetune_smoke_release", "lr": 1e-4},
)

# recon-tiny stage (c), sized for 2 CPU cores: the frozen DUNE-tiny student of training.distill's ``tiny`` preset
# (128-d x 4, patch 14; ``model.backbone_checkpoint``: its DUNE file, random here) under a 64-d x 10 decoder, narrow
# DPT heads and a 1x local-feature MLP (the release widths alone are ~40 M parameters; recon-tiny must stay <= ~10 MB
# in float16: ~5 M parameters), so the layout is recon's. Pairs of ``tools.synth`` orbits and room walks at three
# aspect ratios; scene seeds 2000+ / 3000+ / 4000+ (validation) are disjoint from MuM-tiny's, from the chain's
# held-out scenes (>= 900_000) and from demo_data (recon synth, seed 0).
_TINY_RENDER = (168, 126)
PRESETS["tiny"] = FinetuneConfig(
    model=NetConfig(
        backbone="dune_vits14", backbone_overrides={"embed_dim": 128, "depth": 4, "num_heads": 4},
        decoder_embed_dim=64, decoder_depth=10, decoder_num_heads=4, desc_dim=16, head_mlp_ratio=1.0,
        dpt_feature_dim=48, dpt_layer_dims=(24, 48, 64, 96), output_format="recon",
    ),
    data=DataConfig(
        sources=(
            SourceConfig(name="orbit", layout="orbit", scenes=48, render_size=_TINY_RENDER, seed=2000),
            SourceConfig(name="room", layout="room_walk", scenes=48, render_size=_TINY_RENDER, seed=3000),
        ),
        resolutions=((112, 84), (112, 112), (112, 56)), n_corres=1024, num_workers=0,
        val_sources=(
            SourceConfig(name="val_orbit", scenes=2, views_per_scene=8, render_size=_TINY_RENDER, seed=4000),
            SourceConfig(name="val_room", layout="room_walk", scenes=2, render_size=_TINY_RENDER, seed=4100),
        ),
        val_pairs=8,
    ),
    loss=LossConfig(blocksize=1024),
    train=TrainConfig(
        output_dir="runs/finetune_tiny", batch_size_per_gpu=4, accum_iter=1, iterations=2000, lr=5e-4,
        warmup_fraction=0.05, clip_grad=1.0, checkpoint_every=250, keep_checkpoints=20, val_every=250, log_every=20,
        device="cpu",
    ),
)  # fmt: skip


def resolve_config(preset: str = "dune_vitb14_448", data: dict | None = None) -> FinetuneConfig:
    """The preset's config with ``data`` (a parsed JSON file) merged over it, validated.

    ``backbone_overrides`` and ``options`` objects replace the preset's as a whole (free keys); lists such as
    ``data.sources`` always do.

    Raises:
        ConfigError: unknown preset, unknown keys or invalid values (the field path is named).
    """
    return resolve_preset(FinetuneConfig, PRESETS, preset, data, replace_whole=("backbone_overrides", "options"))


replace = replace_sections  # ``replace(cfg, train={"lr": 1e-3})``: fields of sections replaced
