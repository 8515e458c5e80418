"""AdamW with weight decay on matrices only, and DUNE-style per-parameter gradient clipping."""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split trainable parameters into a decayed and a non-decayed group.

    Decayed: every parameter with ``ndim >= 2`` whose name does not end in ``.bias`` -- weight matrices, conv
    kernels and (as in DINOv2 / DUNE's ``get_params_groups``) the ``[1, N, D]`` token tables ``cls_token``,
    ``pos_embed``, ``register_tokens``. Not decayed: biases and 1-D parameters (LayerNorm, LayerScale gammas).
    Frozen parameters (``requires_grad=False``) are left out.

    Returns:
        ``[{"name": "decay", "params", "weight_decay"}, {"name": "no_decay", "params", "weight_decay": 0.0}]``,
        each with a ``"param_names"`` list for logging.
    """
    decay, no_decay, decay_names, no_decay_names = [], [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim >= 2 and not name.endswith(".bias"):
            decay.append(p)
            decay_names.append(name)
        else:
            no_decay.append(p)
            no_decay_names.append(name)
    return [
        {"name": "decay", "params": decay, "weight_decay": weight_decay, "param_names": decay_names},
        {"name": "no_decay", "params": no_decay, "weight_decay": 0.0, "param_names": no_decay_names},
    ]


def build_adamw(
    model: nn.Module,
    lr: float = 0.0,
    weight_decay: float = 0.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    fused: bool | None = None,
) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` over ``param_groups(model, weight_decay)``.

    Args:
        fused: fused CUDA kernel; ``None`` = use it when every parameter is on CUDA.
    """
    groups = param_groups(model, weight_decay)
    for g in groups:
        g.pop("param_names")
    params = [p for g in groups for p in g["params"]]
    if not params:
        raise ValueError("the model has no trainable parameters")
    if fused is None:
        fused = all(p.is_cuda for p in params)
    groups = [g for g in groups if g["params"]]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused)


@torch.no_grad()
def clip_grad_per_param(parameters: Iterable[Tensor], max_norm: float) -> Tensor:
    """Scale each parameter's gradient so that its own L2 norm is at most ``max_norm`` (no global norm).

    This is DUNE's ``clip_gradients`` (and DINO's): a parameter whose grad norm ``n`` exceeds ``max_norm`` is
    multiplied by ``max_norm / (n + 1e-6)``; others are untouched.

    Returns:
        The gradient norms before clipping, ``[P]`` for the ``P`` parameters that have a gradient (empty if none).
    """
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(0)
    norms = torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])
    coefs = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for g, c in zip(grads, coefs, strict=True):
        g.mul_(c.to(g.dtype))
    return norms
