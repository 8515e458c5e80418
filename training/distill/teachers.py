"""Frozen teachers for DUNE distillation, built with the ``backbone`` package from their official checkpoints.

=============  ===================================  ========================  =========  ==========================
kind           architecture                         checkpoint                targets    notes
=============  ===================================  ========================  =========  ==========================
``dinov2``     DINOv2 ViT-L/14 + 4 registers        raw hub state dict        cls+patch  after the final norm
``mast3r``     MASt3R's CroCo ViT-L/16 encoder      MASt3R release ``.pth``   patch      after ``enc_norm``; input
                                                                                         upsampled by 16/14
``multihmr``   Multi-HMR's DINOv2 ViT-L/14          ``model_state_dict`` with patch      ``backbone.encoder.*``
                                                    ``backbone.encoder.*``               keys, no registers
``mum``        a MuM encoder (any size, RoPE)       recon backbone file       patch      recon-tiny's own teacher
                                                    (``training.mum``)                   (input resized as mast3r)
=============  ===================================  ========================  =========  ==========================

Facts from reference/dune_mum.md §5: teachers run in inference mode on the same images as the student; the
MASt3R teacher's input is resized by ``F.interpolate(scale_factor=16/14, bicubic, align_corners=True)`` so that
its token grid equals the student's (336 -> 384 px, 24x24 tokens), and teacher features are never interpolated.
DUNE builds both DINOv2 teachers with its local DINOv2 copy, whose position-embedding resampling uses
``antialias=False`` and offset 0.1 -- unlike the hub ``*_reg`` models (antialias, offset 0) -- so we do the same.

Our backbones take RGB in [0, 1] and normalise internally; the official code resizes the ImageNet-normalised
tensor instead. Both orders give the same teacher input because resampling is linear and the normalisation is a
per-channel affine map (bicubic overshoot included).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import backbone
from backbone.checkpoint import CheckpointError, load_strict, safe_load
from backbone.dinov2 import dinov2_config_from_state
from backbone.vit import VisionTransformer, apply_overrides

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeacherKind:
    """What a teacher kind is: its backbone family, supervised token types and data domain."""

    family: str
    token_types: tuple[str, ...]
    domain: str


TEACHER_KINDS: dict[str, TeacherKind] = {
    "dinov2": TeacherKind("dinov2_vitl14_reg", ("cls", "patch"), "dinov2"),
    "mast3r": TeacherKind("croco_vitl16", ("patch",), "mast3r"),
    "multihmr": TeacherKind("dinov2_vitl14", ("patch",), "multihmr"),
    # recon's own: a MuM encoder trained by ``training.mum`` (its ``mum_backbone.pth``); multi-view 3D data.
    "mum": TeacherKind("mum_vitl16", ("patch",), "mast3r"),
}
# DUNE's DINOv2 copy (teachers/dinov2) resamples position embeddings this way for both DINOv2-based teachers.
DUNE_DINOV2_INTERPOLATION = {"interpolate_antialias": False, "interpolate_offset": 0.1}
# Multi-HMR's checkpoint: the DINOv2 encoder lives under this prefix inside ``model_state_dict``.
MULTIHMR_STATE_KEY = "model_state_dict"
MULTIHMR_ENCODER_PREFIX = "backbone.encoder."


class Teacher(nn.Module):
    """A frozen backbone that returns distillation targets.

    Args:
        name: projector key in the student.
        kind: ``dinov2``, ``mast3r`` or ``multihmr``.
        model: the backbone (``VisionTransformer``), frozen and put in eval mode here.
    """

    def __init__(self, name: str, kind: str, model: VisionTransformer) -> None:
        super().__init__()
        self.name = name
        self.kind = kind
        self.spec = TEACHER_KINDS[kind]
        self.token_types = self.spec.token_types
        self.domain = self.spec.domain
        self.model = model.eval().requires_grad_(False)
        self.patch_size = model.spec.patch_size
        self.dim = model.spec.embed_dim
        self.eval()

    def train(self, mode: bool = True) -> Teacher:
        """Teachers stay in eval mode whatever the caller asks."""
        return super().train(False)

    @torch.inference_mode()
    def _features(self, images: Tensor, student_patch: int) -> dict[str, Tensor]:
        if self.patch_size != student_patch:
            h, w = images.shape[-2] // student_patch, images.shape[-1] // student_patch
            # align_corners=True samples by sizes only, so passing the exact size is the official 16/14 factor
            # without the floating-point risk of floor(336 * 16/14) landing on 383.
            images = F.interpolate(
                images, size=(h * self.patch_size, w * self.patch_size), mode="bicubic", align_corners=True
            )
        feats = self.model.forward_features(images)
        out = {"patch": feats["x_norm_patchtokens"]}
        if "cls" in self.token_types:
            out["cls"] = feats["x_norm_clstoken"]
        return out

    def forward(self, images: Tensor, student_patch: int = 14) -> dict[str, Tensor]:
        """Targets for ``images [B, 3, H, W]`` in [0, 1] (H, W multiples of ``student_patch``).

        Returns:
            ``{"patch": [B, N, D_t]}`` (+ ``"cls": [B, D_t]`` for DINOv2), N = (H / student_patch)(W / student_patch),
            as ordinary (non-inference) tensors without gradient.
        """
        feats = self._features(images, student_patch)
        # Inference tensors cannot take part in autograd graphs later (the loss): clone them outside the mode.
        return {k: v.clone() for k, v in feats.items()}


def _load_dinov2_like(state: Mapping[str, Tensor], what: str) -> VisionTransformer:
    config = apply_overrides(dinov2_config_from_state(state), DUNE_DINOV2_INTERPOLATION)
    with torch.device("meta"):
        model = VisionTransformer(config)
    load_strict(model, state, what)
    return model


def multihmr_encoder_state(ckpt: Mapping) -> dict[str, Tensor]:
    """The DINOv2 encoder of a Multi-HMR checkpoint: ``model_state_dict`` keys ``backbone.encoder.*``, prefix dropped.

    Raises:
        CheckpointError: no ``backbone.encoder.*`` keys.
    """
    state = ckpt.get(MULTIHMR_STATE_KEY, ckpt)
    if not isinstance(state, Mapping):
        raise CheckpointError(f"Multi-HMR checkpoint: {MULTIHMR_STATE_KEY!r} is not a state dict")
    n = len(MULTIHMR_ENCODER_PREFIX)
    enc = {k[n:]: v for k, v in state.items() if k.startswith(MULTIHMR_ENCODER_PREFIX)}
    if not enc:
        raise CheckpointError(
            f"Multi-HMR checkpoint has no {MULTIHMR_ENCODER_PREFIX}* keys (first keys: {sorted(state)[:5]})"
        )
    return enc


def load_teacher_model(kind: str, path: str | os.PathLike) -> VisionTransformer:
    """Read a teacher backbone from its official checkpoint (or a recon backbone checkpoint).

    Raises:
        CheckpointError: unreadable file or keys that do not match the kind's architecture (named).
    """
    ckpt = safe_load(path)
    if isinstance(ckpt, Mapping) and ckpt.get("format") == backbone.formats.RECON_FORMAT:
        return backbone.load(ckpt)
    if kind in ("mast3r", "mum"):
        return backbone.load(ckpt)
    if kind == "multihmr":
        return _load_dinov2_like(multihmr_encoder_state(ckpt), f"Multi-HMR encoder ({path})")
    if kind == "dinov2":
        state = ckpt.get("model", ckpt) if isinstance(ckpt, Mapping) else ckpt
        return _load_dinov2_like(state, f"DINOv2 teacher ({path})")
    raise ValueError(f"unknown teacher kind {kind!r}; expected one of {sorted(TEACHER_KINDS)}")


def build_teacher(cfg, device: torch.device | str = "cpu") -> Teacher:
    """A ``Teacher`` from a ``TeacherConfig``: the official checkpoint, or random weights (seeded) for tests."""
    if cfg.kind not in TEACHER_KINDS:
        raise ValueError(f"unknown teacher kind {cfg.kind!r}; expected one of {sorted(TEACHER_KINDS)}")
    if cfg.checkpoint:
        model = load_teacher_model(cfg.kind, cfg.checkpoint)
        logger.info("teacher %s: %s from %s", cfg.name, model.spec.name, cfg.checkpoint)
    else:
        overrides = dict(cfg.random_overrides)
        if cfg.kind not in ("mast3r", "mum"):
            overrides = {**DUNE_DINOV2_INTERPOLATION, **overrides}
        with torch.random.fork_rng(devices=[]):  # leave the caller's RNG stream untouched
            torch.manual_seed(cfg.seed)
            model = backbone.create(TEACHER_KINDS[cfg.kind].family, **overrides)
        logger.warning("teacher %s: RANDOM weights (%s, %s) -- for tests only", cfg.name, cfg.kind, overrides)
    return Teacher(cfg.name, cfg.kind, model).to(device)
