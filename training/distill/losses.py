"""DUNE's distillation loss (supplementary eq. 1-3), teacher-feature normalisation and teacher dropping.

Per teacher t and token type k it supervises (reference/dune_mum.md §3-4, official ``model/losses.py``):

- per token: ``l = lam_cos * (1 - cos(s, y)) + lam_sl1 * mean_c smoothL1_beta=1(s_c, y_c)`` with ``s`` the
  student's projector output and ``y`` the teacher feature after ``TeacherNorm``;
- patch tokens are averaged over tokens (cls is one token), giving ``[B]`` per token type;
- the per-image loss of teacher t is the mean over its token types (DINOv2: ``(L_cls + L_patch) / 2``);
- teacher dropping turns the ``[T, B]`` matrix into coefficients ``c`` normalised by their **global** sum, and the
  loss is ``sum(c.detach() * L)`` (without dropping: the mean over teachers and images).

All of it runs in float32 (the official code wraps it in an fp32 autocast region, which promotes bf16 inputs).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from backbone.dune import TeacherNorm
from training.common.distributed import all_gather_cat

logger = logging.getLogger(__name__)

TDROP_METHODS = ("none", "lowest_loss", "own_data", "own+generic_data")


def token_loss(pred: Tensor, target: Tensor, lam_cos: float = 0.5, lam_sl1: float = 0.5) -> tuple[Tensor, ...]:
    """Per-token loss between ``pred`` and ``target`` ``[..., D]`` (float32).

    Returns:
        ``(loss, cos_term, sl1_term)``, each ``[...]`` (the channel axis reduced).
    """
    pred, target = pred.float(), target.float()
    cos = 1.0 - F.cosine_similarity(pred, target, dim=-1)
    sl1 = F.smooth_l1_loss(pred, target, reduction="none", beta=1.0).mean(dim=-1)
    return lam_cos * cos + lam_sl1 * sl1, cos, sl1


def per_teacher_loss(
    preds: Mapping[str, Tensor],
    targets: Mapping[str, Mapping[str, Tensor]],
    lam_cos: float = 0.5,
    lam_sl1: float = 0.5,
) -> tuple[Tensor, list[str], dict[str, float]]:
    """Loss of every teacher on every image.

    Args:
        preds: ``{t: [B, 1 + N, D_t]}`` projector outputs (token 0 = cls prediction).
        targets: ``{t: {"patch": [B, N, D_t], "cls"?: [B, D_t]}}`` normalised teacher features.

    Returns:
        ``(L [T, B], teacher names in row order (sorted), metrics)``; metrics are the batch means of each term
        under the official names (``loss/dist_{type}_{cos|sl1}_{t}``, ``loss/dist_{t}``).
    """
    names = sorted(targets)
    rows, metrics = [], {}
    for t in names:
        pred = preds[t]
        per_type = []
        for ttype, target in targets[t].items():
            s = pred[:, 0] if ttype == "cls" else pred[:, 1:]
            if s.shape != target.shape:
                raise ValueError(f"teacher {t} {ttype}: prediction {tuple(s.shape)} vs target {tuple(target.shape)}")
            loss, cos, sl1 = token_loss(s, target, lam_cos, lam_sl1)
            if loss.ndim == 2:  # patch tokens: mean over tokens
                loss = loss.mean(dim=1)
            per_type.append(loss)
            metrics[f"loss/dist_{ttype}_cos_{t}"] = cos.mean().item()
            metrics[f"loss/dist_{ttype}_sl1_{t}"] = sl1.mean().item()
            metrics[f"loss/dist_{ttype}_{t}"] = loss.mean().item()
        row = torch.stack(per_type, dim=1).mean(dim=1)  # [B]
        metrics[f"loss/dist_{t}"] = row.mean().item()
        rows.append(row)
    return torch.stack(rows), names, metrics


def teacher_coefficients(
    losses: Tensor,
    method: str = "lowest_loss",
    p: float = 0.5,
    generator: torch.Generator | None = None,
    image_domains: Sequence[str] | None = None,
    teacher_domains: Sequence[str] | None = None,
) -> Tensor:
    """Teacher-dropping coefficients ``[T, B]``, normalised to sum to 1 over all teachers and images.

    Args:
        losses: ``[T, B]`` per-teacher, per-image losses (only their order matters; no gradient flows here).
        method: ``none`` (all teachers), ``lowest_loss`` (UNIC/DUNE: keep each image's highest-loss teacher, drop
            each other teacher with probability ``p``), ``own_data`` (only the teacher of the image's domain),
            ``own+generic_data`` (that teacher and the DINOv2 one).
        generator: draws for ``lowest_loss`` (a CPU generator; the official code uses Python's ``random``).
        image_domains: ``[B]`` domain of each image (``own_*`` methods).
        teacher_domains: ``[T]`` domain of each teacher row (``own_*`` methods).

    Raises:
        ValueError: unknown method, or an image that no teacher supervises.
    """
    if method not in TDROP_METHODS:
        raise ValueError(f"unknown teacher-dropping method {method!r}; expected one of {TDROP_METHODS}")
    if p and method != "lowest_loss":
        p = 0.0  # the official code allows p > 0 only with lowest_loss; the others ignore it
    T, B = losses.shape
    if method == "none":
        coeffs = torch.ones(T, B)
    elif method == "lowest_loss":
        draws = torch.rand(T, B, generator=generator)
        coeffs = (draws >= p).float()
        top = losses.detach().float().cpu().argmax(dim=0)
        coeffs[top, torch.arange(B)] = 1.0
    else:
        if image_domains is None or teacher_domains is None:
            raise ValueError(f"teacher dropping {method!r} needs the image and teacher domains")
        own = torch.tensor([[td == d for d in image_domains] for td in teacher_domains], dtype=torch.float32)
        if method == "own+generic_data":
            generic = torch.tensor([td == "dinov2" for td in teacher_domains], dtype=torch.float32)[:, None]
            own = torch.maximum(own, generic.expand_as(own))
        coeffs = own
    if (coeffs.sum(dim=0) == 0).any():
        n = int((coeffs.sum(dim=0) == 0).sum())
        raise ValueError(f"{n} image(s) in the batch are supervised by no teacher (method {method!r})")
    coeffs = coeffs / coeffs.sum()
    return coeffs.to(losses.device)


@torch.no_grad()
def normalize_targets(norm: TeacherNorm, x: Tensor, token_type: str, momentum: float, update: bool) -> Tensor:
    """Standardise teacher features and (training) update the running statistics.

    Training (``update`` and ``momentum > 0``): statistics of the batch gathered from every rank -- mean and
    unbiased std over images (cls ``[B, D]``) or images and tokens (patch ``[B, N, D]``) -- normalise the
    batch, and the buffers move by ``momentum`` towards them (momentum 1 at iteration 0 sets them exactly).
    Otherwise the stored buffers are used. Denominators are clamped at 1e-3 (official eps).

    Args:
        norm: the student's ``TeacherNorm`` of this teacher (its buffers are updated in place).
        x: ``[B, D]`` or ``[B, N, D]`` teacher features.

    Returns:
        Normalised features, float32, same shape.
    """
    n = norm.normalizers[token_type]
    x = x.float()
    if not update or momentum == 0:
        return (x - n.mean) / n.std.clamp(min=1e-3)
    x_all = all_gather_cat(x)
    dims = (0,) if x.ndim == 2 else (0, 1)
    mean = x_all.mean(dim=dims)
    std = x_all.std(dim=dims)
    out = (x - mean) / std.clamp(min=1e-3)
    n.mean.copy_(n.mean * (1 - momentum) + mean * momentum)
    n.std.copy_(n.std * (1 - momentum) + std * momentum)
    return out
