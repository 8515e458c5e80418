"""The finetuned network: a frozen backbone under a trainable MASt3R decoder and ``catmlp+dpt`` heads.

- ``build_model(cfg)``: the ``recon.model.ReconModel`` (any registered backbone, loaded or random), backbone
  frozen (``requires_grad=False``, always in eval mode);
- ``FinetuneNet``: what DDP wraps; runs the backbone under ``no_grad`` once for both views of every pair and
  decodes (optionally symmetrised) pairs;
- ``init_from_checkpoint(model, path)``: copies the decoder / heads of a MASt3R, DUSt3R, DUNE-MASt3R or recon
  checkpoint into the model where shapes agree and returns an ``InitReport`` of what was copied, resampled,
  re-initialised (shape change: ``decoder_embed`` and the encoder-facing DPT / MLP layers for a different
  backbone width, the per-pixel MLP output for another patch size) or skipped.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbone.formats import read
from backbone.hub import resolve
from recon.model.decoder import DecoderConfig
from recon.model.heads import HeadConfig
from recon.model.recon_model import ModelConfig, ReconModel

logger = logging.getLogger(__name__)

PARTS = ("adapter", "decoder", "head1", "head2")  # the trainable children of ReconModel


def is_dune(encoder: nn.Module) -> bool:
    from backbone.dune import DuneBackbone

    return isinstance(encoder, DuneBackbone)


def build_backbone(cfg) -> nn.Module:
    """The frozen encoder of a ``NetConfig``: loaded from ``backbone_checkpoint`` or created with random weights."""
    import backbone as bb

    if cfg.backbone_checkpoint:
        ckpt, fmt = read(resolve(cfg.backbone_checkpoint))
        # DUNE files carry teacher projectors the decoder never uses: keep the encoder alone.
        kwargs = {"with_projectors": False} if fmt == "dune" else {}
        encoder = bb.load(ckpt, **kwargs)
        if cfg.backbone_overrides:
            raise ValueError("model.backbone_overrides only apply to a random backbone (no backbone_checkpoint)")
    else:
        encoder = bb.create(cfg.backbone, **cfg.backbone_overrides)
    encoder.requires_grad_(False)
    return encoder.eval()


def build_model(cfg, image_size: int | None = None) -> ReconModel:
    """``ReconModel`` for a ``NetConfig``: frozen backbone, random decoder and heads.

    Args:
        cfg: ``NetConfig``.
        image_size: native resolution recorded in the model (default: the backbone's).
    """
    encoder = build_backbone(cfg)
    dune = is_dune(encoder)
    tokens = ("prenorm" if dune else "final") if cfg.tokens == "auto" else cfg.tokens
    adapter = dune if cfg.adapter == "auto" else cfg.adapter == "layernorm"
    recipe = {}
    if not cfg.backbone_checkpoint:  # created by name: record the factory so that recon checkpoints rebuild it
        recipe = {"factory": cfg.backbone, "config": dataclasses.asdict(encoder.config)}
    config = ModelConfig(
        decoder=DecoderConfig(cfg.decoder_embed_dim, cfg.decoder_depth, cfg.decoder_num_heads),
        head=HeadConfig(
            kind="catmlp+dpt",
            desc_dim=cfg.desc_dim,
            two_confs=True,
            mlp_ratio=cfg.head_mlp_ratio,
            dpt_feature_dim=cfg.dpt_feature_dim,
            dpt_layer_dims=tuple(cfg.dpt_layer_dims),
        ),  # fmt: skip
        image_size=int(image_size or encoder.spec.image_size),
        tokens=tokens,
        adapter_norm_eps=1e-5 if adapter else None,  # DUNE-MASt3R's nn.LayerNorm default eps
        backbone=recipe,
    )
    model = ReconModel(encoder, config)
    model.backbone.requires_grad_(False)
    return model


class FinetuneNet(nn.Module):
    """Frozen backbone tokens (no gradient, eval mode) -> trainable adapter, decoder and heads.

    Args:
        model: the ``ReconModel`` being finetuned.
    """

    def __init__(self, model: ReconModel) -> None:
        super().__init__()
        self.model = model

    def train(self, mode: bool = True) -> FinetuneNet:
        super().train(mode)
        self.model.backbone.eval()  # frozen: no dropout / drop-path, whatever the backbone has
        return self

    @torch.no_grad()
    def backbone_tokens(self, images: Tensor) -> Tensor:
        """``[B, 3, H, W]`` in [0, 1] -> ``[B, h*w, D]`` backbone tokens, before the adapter.

        The same token choice as ``ReconModel.encode`` (final or pre-norm patch tokens), without the trainable
        adapter, so that the backbone's activations are never stored for backward.
        """
        m = self.model
        if m.config.tokens == "prenorm":
            return m.backbone.forward_features(images)["x_prenorm"][:, int(m.backbone.spec.num_prefix_tokens) :]
        return m.backbone(images)

    def forward(self, img1: Tensor, img2: Tensor, symmetrize: bool = False) -> tuple[dict, dict]:
        """Predict a batch of pairs.

        Args:
            img1, img2: ``[B, 3, H, W]`` RGB in [0, 1] (one resolution per batch).
            symmetrize: also decode the swapped pairs; the output batch is then ``2B``: ``(a, b)`` then ``(b, a)``.

        Returns:
            ``pred1, pred2`` as ``ReconModel.decode`` (``pts3d`` of both in the first view's frame).
        """
        if img1.shape != img2.shape:
            raise ValueError(f"the two views of a batch must have one shape, got {tuple(img1.shape)} and "
                             f"{tuple(img2.shape)}")  # fmt: skip
        B = img1.shape[0]
        feats = self.model.adapter(self.backbone_tokens(torch.cat([img1, img2])))
        f1, f2 = feats[:B], feats[B:]
        if symmetrize:
            f1, f2 = torch.cat([f1, f2]), torch.cat([f2, f1])
        shape = tuple(img1.shape[-2:])
        return self.model.decode(f1, f2, shape, shape)


# ---------------------------------------------------------------------------------------------- init
@dataclass
class InitReport:
    """What ``init_from_checkpoint`` did with each decoder / head tensor."""

    source: str
    """The checkpoint read."""
    source_format: str
    """``mast3r``, ``dust3r``, ``dune_mast3r``, ``recon-model`` or ``hf`` (``backbone.formats.FORMATS``)."""
    copied: list[str] = field(default_factory=list)
    """Tensors copied unchanged."""
    resampled: list[tuple[str, list[int], list[int]]] = field(default_factory=list)
    """Per-pixel output layers resampled to another patch size: ``(key, source shape, target shape)``."""
    reinitialised: list[tuple[str, list[int], list[int]]] = field(default_factory=list)
    """Shape mismatches left at their random init: ``(key, source shape, target shape)``."""
    skipped: list[str] = field(default_factory=list)
    """Source tensors with no counterpart in the model."""
    new: list[str] = field(default_factory=list)
    """Model tensors absent from the source (left at their init, e.g. the DUNE adapter LayerNorm)."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        lines = [
            f"init from {self.source} ({self.source_format}): {len(self.copied)} copied, {len(self.resampled)} "
            f"resampled, {len(self.reinitialised)} re-initialised, {len(self.skipped)} skipped, {len(self.new)} new"
        ]
        lines += [f"  resampled {k}: {s} -> {t}" for k, s, t in self.resampled]
        lines += [f"  re-initialised {k}: {s} -> {t}" for k, s, t in self.reinitialised]
        lines += [f"  skipped {k}" for k in self.skipped]
        lines += [f"  new {k}" for k in self.new]
        return "\n".join(lines)


def read_decoder_state(path_or_name: str) -> tuple[dict[str, Tensor], str]:
    """Decoder and head tensors of a checkpoint under ``ReconModel`` names, and the checkpoint's format.

    MASt3R / DUSt3R ``.pth`` and DUNE-MASt3R files go through their key maps without building any encoder; other
    layouts (Hugging Face exports) are loaded whole with ``recon.load_model``.

    Raises:
        CheckpointError: unreadable or unknown checkpoint, or keys no rule maps (named).
    """
    from recon.model.formats import DUNE_MAST3R, MAST3R_PTH, convert_state_dict
    from recon.model.loading import load_model

    path = resolve(path_or_name)
    ckpt, fmt = read(path)
    if fmt in ("mast3r", "dust3r"):
        return convert_state_dict(ckpt["model"], MAST3R_PTH)[0], fmt
    if fmt == "dune_mast3r":
        return convert_state_dict(ckpt["model"], DUNE_MAST3R)[0], fmt
    if fmt == "recon-model":
        return {k: v for k, v in ckpt["model"].items() if k.split(".", 1)[0] in PARTS}, fmt
    model = load_model(path)  # a Hugging Face export (other formats are refused there, naming them)
    return {k: v for k, v in model.state_dict().items() if k.split(".", 1)[0] in PARTS}, fmt


def _resample_pixel_layer(src: Tensor, dst_shape: torch.Size, patch: int) -> Tensor | None:
    """A per-pixel output layer ``[C * p_s^2, ...]`` resampled to ``[C * p^2, ...]`` over the sub-pixel grid.

    Channel ``c * p * p + p * i + j`` feeds sub-pixel ``(i, j)`` after the pixel shuffle, so the weights form a
    ``p_s x p_s`` image per output channel and input unit; it is resized bilinearly to ``p x p``. Returns ``None``
    when the shapes are not of that form.
    """
    if src.shape[1:] != dst_shape[1:] or dst_shape[0] % (patch * patch):
        return None
    C = dst_shape[0] // (patch * patch)
    ps = math.isqrt(src.shape[0] // C) if src.shape[0] % C == 0 else 0
    if ps * ps * C != src.shape[0] or ps == patch:
        return None
    rest = src.shape[1:]
    x = src.float().reshape(C, ps, ps, -1).permute(0, 3, 1, 2)  # C, rest, ps, ps
    x = F.interpolate(x, size=(patch, patch), mode="bilinear", align_corners=False)
    return x.permute(0, 2, 3, 1).reshape(C * patch * patch, *rest).to(src.dtype)


@torch.no_grad()
def init_from_checkpoint(model: ReconModel, path_or_name: str, resample_pixel_layers: bool = False) -> InitReport:
    """Copy a checkpoint's decoder and heads into ``model`` wherever shapes agree.

    Args:
        model: the model to initialise (its backbone is untouched).
        path_or_name: MASt3R / DUSt3R / DUNE-MASt3R / recon checkpoint, or a weights name.
        resample_pixel_layers: resample the descriptor MLP's per-pixel output to the model's patch size when only
            that differs (default: re-initialised, as the DUNE supplement B).

    Returns:
        ``InitReport``.
    """
    state, fmt = read_decoder_state(path_or_name)
    report = InitReport(str(path_or_name), fmt)
    target = {k: v for k, v in model.state_dict().items() if k.split(".", 1)[0] in PARTS}
    patch = model.patch_size
    for key, dst in target.items():
        src = state.get(key)
        if src is None:
            report.new.append(key)
            continue
        if src.shape == dst.shape:
            dst.copy_(src.to(dst.dtype))
            report.copied.append(key)
            continue
        resampled = None
        if resample_pixel_layers and ".head_local_features.fc2." in key:
            resampled = _resample_pixel_layer(src, dst.shape, patch)
        if resampled is not None:
            dst.copy_(resampled.to(dst.dtype))
            report.resampled.append((key, list(src.shape), list(dst.shape)))
        else:
            report.reinitialised.append((key, list(src.shape), list(dst.shape)))
    report.skipped = sorted(k for k in state if k not in target)
    logger.info("%s", report.summary())
    return report


def trainable_digest(module: nn.Module, prefix: str = "") -> str:
    """sha256 over the state tensors of ``module`` whose key starts with ``prefix`` (bit-identity checks)."""
    import hashlib

    h = hashlib.sha256()
    for key, value in module.state_dict().items():
        if key.startswith(prefix):
            h.update(key.encode())
            h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def state_of(model: ReconModel, parts: tuple[str, ...] = PARTS) -> dict[str, Tensor]:
    """CPU copies of the tensors of ``parts`` (the trainable state a training checkpoint holds)."""
    return {k: v.detach().cpu() for k, v in model.state_dict().items() if k.split(".", 1)[0] in parts}


def load_parts(model: ReconModel, state: Mapping[str, Tensor]) -> None:
    """Strictly load ``state`` (keys of ``PARTS`` only) into ``model``'s adapter, decoder and heads."""
    from backbone.checkpoint import load_strict

    for part in PARTS:
        sub = {k[len(part) + 1 :]: v for k, v in state.items() if k.startswith(part + ".")}
        load_strict(getattr(model, part), sub, f"finetune checkpoint ({part})")
