"""DUNE student encoders (naver/dune, CVPR 2025): ``dune_vits14``, ``dune_vitb14``, with their teacher projectors.

The encoder is DINOv2-style: patch 14, cls + 4 registers, learned position embedding for the 448-px grid (32x32;
336-px checkpoints: 24x24) resampled bicubically with DINOv2's +0.1 offset, LayerScale, LayerNorm eps 1e-6,
ImageNet normalisation. A full checkpoint also holds one transformer projector per teacher (1 block of the
encoder's width and heads + ``Linear(D, D_teacher)``) and the teachers' feature statistics (``teacher_norms``).

Two official quirks a user must know (reference/dune_mum.md sections 1-3 and 8):

- DUNE's final ``encoder.norm`` is never trained (the training code calls the encoder with ``apply_norm=False``):
  the projectors and the DUNE-MASt3R decoder consume the **pre-norm** tokens ``forward_features()["x_prenorm"]``.
  ``forward()`` follows the backbone protocol (tokens after the final norm), as the official hub ``*_encoder``
  entry point does.
- Projector outputs live in teacher-normalised space; ``teacher_norms`` hold the statistics (not applied here).

Official checkpoint: ``{'model', 'args', 'iter'}``; keys ``encoder.*`` (blocks stored as one chunk,
``encoder.blocks.0.{i}.*``), ``projectors.<teacher>.*``, ``teacher_norms.<teacher>.normalizers.<cls|patch>.*``,
possibly prefixed ``module.`` (DDP) and/or ``_orig_mod.`` (torch.compile). Encoder-only state dicts (what the
hub ``*_encoder`` entries hold) have the encoder keys without ``encoder.``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping

import torch
from torch import Tensor, nn

from backbone.checkpoint import CheckpointError, load_strict, safe_load
from backbone.layers import Block
from backbone.limits import check_vit_config, count_blocks
from backbone.registry import register
from backbone.vit import VisionTransformer, ViTConfig, apply_overrides

logger = logging.getLogger(__name__)

DUNE_VITS14 = ViTConfig(
    name="dune_vits14",
    patch_size=14,
    embed_dim=384,
    depth=12,
    num_heads=6,
    layer_scale_init=1e-4,
    cls_token=True,
    num_register_tokens=4,
    mask_token=True,
    pos_embed_grid=32,
    interpolate_offset=0.1,
    interpolate_antialias=False,
    image_size=448,
)
DUNE_VITB14 = apply_overrides(DUNE_VITS14, {"name": "dune_vitb14", "embed_dim": 768, "num_heads": 12})

# The released models' teachers (sorted, as the projector ModuleDict) and the token types each one supervises.
DUNE_TEACHERS: dict[str, tuple[str, ...]] = {
    "dino2reg_vitlarge_14": ("cls", "patch"),
    "mast3r_vitlarge_16": ("patch",),
    "multihmr_vitlarge_14_672": ("patch",),
}
TEACHER_DIM = 1024  # num_features of every released (ViT-L) teacher
# enc_args['arch'] -> heads, for checkpoints whose args name the arch instead of the sizes.
ARCH_HEADS = {"vit_tiny": 3, "vit_small": 6, "vit_base": 12, "vit_large": 16, "vit_giant2": 24}


class StandardNormalizer(nn.Module):
    """Per-channel teacher feature statistics (buffers ``mean``, ``std`` ``[D_t]``, stored in checkpoints)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        """Eval-mode normalisation ``(x - mean) / max(std, 1e-3)``; x: ``[..., D_t]``."""
        return (x - self.mean) / self.std.clamp(min=1e-3)


class TeacherNorm(nn.Module):
    """One ``StandardNormalizer`` per token type (``cls``, ``patch``) of a teacher."""

    def __init__(self, token_types: tuple[str, ...], dim: int) -> None:
        super().__init__()
        self.normalizers = nn.ModuleDict({t: StandardNormalizer(dim) for t in token_types})

    def forward(self, x: Tensor, token_type: str) -> Tensor:
        """Normalise teacher features ``x [..., D_t]`` of ``token_type`` with the stored statistics."""
        return self.normalizers[token_type](x)


class Projector(nn.Module):
    """DUNE's transformer projector: ``num_blocks`` DINOv2 blocks of the encoder width, then ``linear``.

    Args:
        dim: encoder width D.
        num_heads: heads (the official builder always uses the encoder's).
        out_dim: teacher width D_t.
        num_blocks: blocks (1 in every released model).
    """

    def __init__(self, dim: int, num_heads: int, out_dim: int, num_blocks: int = 1) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(dim, num_heads, layer_scale_init=1e-4) for _ in range(num_blocks))
        self.linear = nn.Linear(dim, out_dim)

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens: ``[B, 1 + N, D]`` pre-norm [cls, patches] -> ``[B, 1 + N, D_t]`` (token 0 = predicted cls)."""
        for blk in self.blocks:
            tokens = blk(tokens)
        return self.linear(tokens)


class DuneBackbone(VisionTransformer):
    """DUNE encoder plus (optionally) its teacher projectors ``projectors[t]`` and statistics ``teacher_norms[t]``.

    Args:
        config: encoder architecture.
        teachers: teacher name -> output width D_t; empty for the encoder alone.
        token_types: teacher name -> token types of its ``TeacherNorm`` (default: ``DUNE_TEACHERS``, else patch).
        projector_blocks: blocks per projector.
    """

    def __init__(
        self,
        config: ViTConfig,
        teachers: Mapping[str, int] | None = None,
        token_types: Mapping[str, tuple[str, ...]] | None = None,
        projector_blocks: int = 1,
    ) -> None:
        super().__init__(config)
        teachers = dict(teachers or {})
        token_types = dict(token_types or {})
        self.projectors = nn.ModuleDict(
            {t: Projector(config.embed_dim, config.num_heads, d, projector_blocks) for t, d in sorted(teachers.items())}
        )
        self.teacher_norms = nn.ModuleDict(
            {
                t: TeacherNorm(token_types.get(t, DUNE_TEACHERS.get(t, ("patch",))), d)
                for t, d in sorted(teachers.items())
            }
        )
        if teachers:
            self._init_projectors()

    @torch.no_grad()
    def _init_projectors(self) -> None:
        if self.patch_embed.proj.weight.is_meta:
            return
        for m in self.projectors.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    @staticmethod
    def projector_input(features: Mapping[str, Tensor], num_prefix_tokens: int = 5) -> Tensor:
        """``[cls, patches]`` of the **pre-norm** tokens (registers dropped): ``[B, 1 + N, D]``."""
        x = features["x_prenorm"]
        return torch.cat((x[:, :1], x[:, num_prefix_tokens:]), dim=1)

    def forward_projectors(self, images: Tensor, teachers: list[str] | None = None) -> dict[str, Tensor]:
        """Teacher-space predictions ``{t: [B, 1 + N, D_t]}`` (token 0 = cls), encoding ``images`` once.

        Args:
            images: ``[B, 3, H, W]`` RGB in [0, 1].
            teachers: subset of ``projectors`` (default: all).
        """
        if not self.projectors:
            raise RuntimeError(f"{self.spec.name} has no projectors: load a full DUNE checkpoint (load_dune)")
        names = list(self.projectors) if teachers is None else teachers
        unknown = sorted(set(names) - set(self.projectors))
        if unknown:
            raise KeyError(f"unknown teacher(s) {unknown}; this model has {sorted(self.projectors)}")
        tokens = self.projector_input(self.forward_features(images), self.num_prefix_tokens)
        return {t: self.projectors[t](tokens) for t in names}


def _dune_factory(base: ViTConfig, with_projectors: bool, projector_dim: int, overrides: dict) -> DuneBackbone:
    teachers = dict.fromkeys(DUNE_TEACHERS, projector_dim) if with_projectors else {}
    return DuneBackbone(apply_overrides(base, overrides), teachers=teachers)


@register("dune_vits14")
def dune_vits14(*, with_projectors: bool = False, projector_dim: int = TEACHER_DIM, **overrides) -> DuneBackbone:
    """DUNE ViT-S/14 (384-d, 12 blocks, 6 heads, 448 px); ``with_projectors`` adds the 3 released projectors."""
    return _dune_factory(DUNE_VITS14, with_projectors, projector_dim, overrides)


@register("dune_vitb14")
def dune_vitb14(*, with_projectors: bool = False, projector_dim: int = TEACHER_DIM, **overrides) -> DuneBackbone:
    """DUNE ViT-B/14 (768-d, 12 blocks, 12 heads, 448 px); ``with_projectors`` adds the 3 released projectors."""
    return _dune_factory(DUNE_VITB14, with_projectors, projector_dim, overrides)


# ------------------------------------------------------------------------------------------------ checkpoints
# Official key (after stripping 'module.' / '_orig_mod.') -> our key. Encoder blocks are stored as chunks
# ('blocks.<chunk>.<i>', the global index i kept), ours are flat ('blocks.<i>').
_DUNE_KEY_RULES = [
    (re.compile(r"^(?:encoder\.)?blocks\.\d+\.(\d+)\.(.+)$"), r"blocks.\1.\2"),
    (
        re.compile(
            r"^(?:encoder\.)?(cls_token|pos_embed|register_tokens|mask_token|patch_embed\.proj\.(?:weight|bias)"
            r"|norm\.(?:weight|bias))$"
        ),
        r"\1",
    ),
    (re.compile(r"^(projectors\.[^.]+\.blocks\.\d+\..+)$"), r"\1"),
    (re.compile(r"^(projectors\.[^.]+\.linear\.(?:weight|bias))$"), r"\1"),
    (re.compile(r"^(teacher_norms\.[^.]+\.normalizers\.(?:cls|patch)\.(?:mean|std))$"), r"\1"),
]
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def strip_wrapper_prefixes(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Remove leading DDP ``module.`` and torch.compile ``_orig_mod.`` prefixes (in any order, repeated)."""
    out = {}
    for key, value in state_dict.items():
        while key.startswith(_WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        out[key] = value
    return out


def map_dune_keys(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Official DUNE keys (full or encoder-only, prefixes already stripped) -> our keys.

    Raises:
        CheckpointError: naming every key that no rule maps.
    """
    ours, unmapped = {}, []
    for key, value in state_dict.items():
        for pattern, repl in _DUNE_KEY_RULES:
            if pattern.match(key):
                ours[pattern.sub(repl, key)] = value
                break
        else:
            unmapped.append(key)
    if unmapped:
        shown = ", ".join(sorted(unmapped)[:12]) + (" ..." if len(unmapped) > 12 else "")
        raise CheckpointError(f"DUNE checkpoint has {len(unmapped)} key(s) with no mapping: {shown}")
    return ours


def _args_dict(args) -> dict:
    if args is None:
        return {}
    return dict(vars(args)) if not isinstance(args, Mapping) else dict(args)


def dune_config_from_state(state: Mapping[str, Tensor], args: Mapping | None = None, num_heads: int | None = None):
    """Architecture of a mapped DUNE state dict: ``(ViTConfig, teachers {t: D_t}, token_types, projector_blocks)``.

    Sizes come from the weight shapes; the head count (not visible in shapes) from ``num_heads``, else
    ``args.enc_args`` (``num_heads`` or ``arch``), else D / 64 (the head dim of every DUNE arch).
    """
    try:
        dim = state["cls_token"].shape[-1]
        patch = state["patch_embed.proj.weight"].shape[-1]
    except KeyError as err:
        raise CheckpointError(f"not a DUNE encoder state dict: missing {err.args[0]!r}") from None
    depth = count_blocks(state, "blocks.")
    enc_args = dict((args or {}).get("enc_args") or {})
    heads = num_heads or enc_args.get("num_heads") or ARCH_HEADS.get(enc_args.get("arch", "")) or max(1, dim // 64)
    n_pos = state["pos_embed"].shape[1] - 1 if "pos_embed" in state else None
    grid = round(n_pos**0.5) if n_pos else None
    name = {(384, 12): "dune_vits14", (768, 12): "dune_vitb14"}.get((dim, depth), "dune_vit")
    base = DUNE_VITB14 if name == "dune_vitb14" else DUNE_VITS14
    config = apply_overrides(
        base,
        {
            "name": name,
            "embed_dim": dim,
            "depth": depth,
            "num_heads": heads,  # type and range checked by check_vit_config
            "patch_size": patch,
            "num_register_tokens": state["register_tokens"].shape[1] if "register_tokens" in state else 0,
            "mask_token": "mask_token" in state,
            "pos_embed_grid": grid,
            "image_size": (grid or 32) * patch,
            "layer_scale_init": 1e-4 if "blocks.0.ls1.gamma" in state else None,
        },
    )
    teachers, token_types, proj_blocks = {}, {}, 1
    for key, value in state.items():
        if m := re.match(r"^projectors\.([^.]+)\.linear\.weight$", key):
            teachers[m.group(1)] = value.shape[0]
        elif m := re.match(r"^projectors\.[^.]+\.blocks\.(\d+)\.", key):
            proj_blocks = max(proj_blocks, int(m.group(1)) + 1)
        elif m := re.match(r"^teacher_norms\.([^.]+)\.normalizers\.([^.]+)\.mean$", key):
            token_types.setdefault(m.group(1), []).append(m.group(2))
    token_types = {t: tuple(sorted(v)) for t, v in token_types.items()}
    return config, teachers, token_types, proj_blocks


def load_dune(
    path_or_state: str | os.PathLike | Mapping,
    *,
    device: str | torch.device = "cpu",
    num_heads: int | None = None,
    with_projectors: bool = True,
) -> DuneBackbone:
    """Load an official DUNE checkpoint (full or encoder-only; ``module.`` / ``_orig_mod.`` prefixes allowed).

    Args:
        path_or_state: a ``.pth`` path, the loaded ``{'model', 'args', 'iter'}`` dict, or a bare state dict.
        device: where the model ends up.
        num_heads: head count when neither the file's ``args`` nor the width tell it.
        with_projectors: keep the projectors and teacher norms (False: encoder only, their keys are dropped).

    Returns:
        ``DuneBackbone`` in eval mode; ``model.projectors[t]`` / ``model.teacher_norms[t]`` for each teacher.

    Raises:
        CheckpointError: unreadable file, unmapped, missing or mis-shaped keys (named).
    """
    ckpt = safe_load(path_or_state) if isinstance(path_or_state, (str, os.PathLike)) else path_or_state
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"a DUNE checkpoint is a dict, got {type(ckpt).__name__}")
    state = ckpt["model"] if "model" in ckpt and isinstance(ckpt["model"], Mapping) else ckpt
    state = map_dune_keys(strip_wrapper_prefixes(state))
    if not with_projectors:
        state = {k: v for k, v in state.items() if not k.startswith(("projectors.", "teacher_norms."))}
    config, teachers, token_types, proj_blocks = dune_config_from_state(state, _args_dict(ckpt.get("args")), num_heads)
    check_vit_config(config)
    with torch.device("meta"):
        model = DuneBackbone(config, teachers=teachers, token_types=token_types, projector_blocks=proj_blocks)
    load_strict(model, state, "DUNE checkpoint")
    logger.info("loaded %s (%d-d, %d blocks, teachers %s)", config.name, config.embed_dim, config.depth, teachers)
    return model.to(device).eval()


def is_dune_state(keys) -> bool:
    """Whether stripped state-dict ``keys`` look like DUNE (chunked blocks or ``encoder.``/``projectors.`` keys)."""
    return any(re.match(r"^(encoder\.)?blocks\.\d+\.\d+\.", k) or k.startswith("projectors.") for k in keys)
