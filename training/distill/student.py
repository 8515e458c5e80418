"""The DUNE student (``backbone.dune.DuneBackbone``) for training, and its official checkpoint layout.

The student is the backbone package's ``DuneBackbone``: encoder + one ``Projector`` per teacher + the teachers'
feature statistics (``teacher_norms``). Training wraps it in ``StudentForward`` (what DDP sees), whose forward
returns every projector's prediction from the **pre-norm** encoder tokens, as the official training code does.

Checkpoints are written in the official layout (reference/dune_mum.md §8): ``{'model', 'args', 'iter'}`` with
keys ``encoder.*`` (blocks as one chunk: ``encoder.blocks.0.{i}.*``), ``projectors.<t>.*``,
``teacher_norms.<t>.normalizers.<cls|patch>.{mean,std}`` and ``args`` an ``argparse.Namespace`` holding
``image_size``, ``enc_args``, ``proj_args`` and ``teachers`` -- what ``load_dune_from_checkpoint`` and
``load_dune_encoder_from_checkpoint`` read, and what ``backbone.load`` detects as the ``dune`` format.
"""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from backbone.checkpoint import CheckpointError, load_strict
from backbone.dune import DUNE_VITB14, DUNE_VITS14, DuneBackbone, map_dune_keys, strip_wrapper_prefixes
from backbone.layers import interpolate_pos_embed
from backbone.vit import ViTConfig, apply_overrides

logger = logging.getLogger(__name__)

PATCH_SIZE = 14
_ARCHS = {"vit_small": DUNE_VITS14, "vit_base": DUNE_VITB14}
# Encoder keys of ours that the official encoder stores under ``encoder.`` (blocks additionally chunked).
_ENCODER_TOP = re.compile(r"^(cls_token|pos_embed|register_tokens|mask_token|patch_embed\..+|norm\..+)$")
_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")


def student_vit_config(cfg) -> ViTConfig:
    """``ViTConfig`` of the student described by a ``StudentConfig``."""
    if cfg.arch == "custom":
        base = apply_overrides(
            DUNE_VITS14,
            {"name": "dune_vit", "embed_dim": cfg.embed_dim, "depth": cfg.depth, "num_heads": cfg.num_heads},
        )
    else:
        base = _ARCHS[cfg.arch]
    grid = cfg.image_size // PATCH_SIZE
    return apply_overrides(
        base,
        {"image_size": cfg.image_size, "pos_embed_grid": grid, "num_register_tokens": cfg.num_register_tokens},
    )


def build_student(cfg, teachers: Sequence) -> DuneBackbone:
    """A randomly initialised student with one projector and one ``TeacherNorm`` per teacher.

    ``encoder.norm`` and ``mask_token`` are frozen: the official training never uses them (the projectors take the
    pre-norm tokens, no masking), so they never receive a gradient there either; freezing them keeps DDP from
    searching for unused parameters every step and leaves their values at init, as in the released checkpoints.

    Args:
        cfg: ``StudentConfig``.
        teachers: objects with ``name``, ``dim`` and ``token_types`` (``Teacher`` instances).
    """
    model = DuneBackbone(
        student_vit_config(cfg),
        teachers={t.name: t.dim for t in teachers},
        token_types={t.name: tuple(t.token_types) for t in teachers},
        projector_blocks=cfg.projector_blocks,
    )
    model.norm.requires_grad_(False)
    if model.mask_token is not None:
        model.mask_token.requires_grad_(False)
    return model


class StudentForward(nn.Module):
    """The module DDP wraps: images -> every projector's prediction."""

    def __init__(self, dune: DuneBackbone) -> None:
        super().__init__()
        self.dune = dune

    def forward(self, images: Tensor) -> dict[str, Tensor]:
        """images ``[B, 3, H, W]`` in [0, 1] -> ``{teacher: [B, 1 + N, D_t]}`` (token 0 predicts the cls token)."""
        return self.dune.forward_projectors(images)


# ---------------------------------------------------------------------------------------------- official layout
def to_official_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Our ``DuneBackbone`` keys -> the official DUNE keys (``encoder.`` prefix, blocks as one chunk)."""
    out = {}
    for key, value in state.items():
        if m := _BLOCK.match(key):
            out[f"encoder.blocks.0.{m.group(1)}.{m.group(2)}"] = value
        elif _ENCODER_TOP.match(key):
            out[f"encoder.{key}"] = value
        elif key.startswith(("projectors.", "teacher_norms.")):
            out[key] = value
        else:
            raise CheckpointError(f"no official DUNE name for key {key!r}")
    return out


def from_official_state(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Official DUNE keys (``module.`` / ``_orig_mod.`` prefixes allowed) -> our keys (``backbone.dune``'s map)."""
    return map_dune_keys(strip_wrapper_prefixes(state))


def official_args(model: DuneBackbone) -> argparse.Namespace:
    """The ``args`` namespace the official loaders read to rebuild this student.

    ``enc_args`` names the official arch for ViT-S/B and spells out the sizes otherwise (the official
    ``vision_transformer.get_model`` then calls ``DinoVisionTransformer`` itself); ``proj_args['num_heads']`` is the
    encoder's, as the official builder always sets it.
    """
    c = model.config
    sizes = {(384, 12, 6): "vit_small", (768, 12, 12): "vit_base"}
    arch = sizes.get((c.embed_dim, c.depth, c.num_heads))
    enc_args: dict = {"arch": arch} if arch else {
        "arch": "DinoVisionTransformer", "embed_dim": c.embed_dim, "depth": c.depth, "num_heads": c.num_heads,
    }  # fmt: skip
    if c.num_register_tokens != 4:
        enc_args["num_register_tokens"] = c.num_register_tokens
    proj_args: dict = {"num_heads": c.num_heads}
    blocks = max((len(p.blocks) for p in model.projectors.values()), default=1)
    if blocks != 1:
        proj_args["num_blocks"] = blocks
    image_size = (c.pos_embed_grid or 0) * c.patch_size
    return argparse.Namespace(
        image_size=image_size,
        enc_args=enc_args,
        proj_args=proj_args,
        dune_args={"last_enc_norm": False},
        teachers=sorted(model.projectors),
    )


def official_checkpoint(model: DuneBackbone, iteration: int) -> dict:
    """``{'model', 'args', 'iter'}`` in the official layout (CPU tensors)."""
    state = {k: v.detach() if v.is_meta else v.detach().cpu() for k, v in model.state_dict().items()}
    return {"model": to_official_state(state), "args": official_args(model), "iter": int(iteration)}


# ---------------------------------------------------------------------------------------------- second stage
def resize_pos_embed(pos_embed: Tensor, grid: int) -> Tensor:
    """``[1, 1 + M*M, D]`` -> ``[1, 1 + grid*grid, D]``: bicubic to a target *size*, cls row kept (official
    ``resize_positional_embed`` used when fine-tuning a 336-px student at 448 px)."""
    return interpolate_pos_embed(pos_embed, grid, grid, num_prefix=1, offset=0.0, antialias=False)


def init_from_checkpoint(model: DuneBackbone, ckpt: Mapping) -> int:
    """Load a trained student's weights into ``model`` (strict), resizing the position embedding when needed.

    Args:
        model: the new student (e.g. at 448 px).
        ckpt: a loaded checkpoint (official layout ``{'model', ...}`` or a bare state dict).

    Returns:
        The source checkpoint's ``iter`` (0 if absent).

    Raises:
        CheckpointError: keys or shapes that do not match (teacher set, width, depth...), named.
    """
    state = ckpt["model"] if isinstance(ckpt.get("model"), Mapping) else ckpt
    state = from_official_state(state)
    pos = state.get("pos_embed")
    if pos is not None and model.pos_embed is not None and pos.shape != model.pos_embed.shape:
        grid = model.config.pos_embed_grid
        logger.info("resizing pos_embed %s -> %s", tuple(pos.shape), tuple(model.pos_embed.shape))
        state = {**state, "pos_embed": resize_pos_embed(pos, grid)}
    load_strict(model, state, "student init_from checkpoint")
    return int(ckpt.get("iter", 0)) if isinstance(ckpt, Mapping) else 0


def weights_digest(model: nn.Module) -> str:
    """sha256 over every state tensor's bytes in key order (equal digests = bit-identical weights)."""
    import hashlib

    h = hashlib.sha256()
    for key, value in model.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
