"""Losses of the feed-forward recipe (MuM supplement, after VGGT): ``L = L_camera + L_depth + L_pmap``.

- ``camera_loss``: Huber loss (delta 1) between predicted and ground-truth 9-d pose encodings of every frame
  (``recon.feedforward.camera``), summed over the 9 numbers (weights per group: translation, quaternion, field of
  view; 1 each in the paper recipe) and averaged over frames, summed over the refinement passes with weights
  ``gamma ** (n - 1 - i)`` (VGGT weighs later passes more; gamma = 0.6).
- ``conf_loss`` (DUSt3R's aleatoric loss): mean over valid pixels of ``c ||x - y|| - alpha log c``.
- ``gradient_loss`` (VGGT's extra term): mean over horizontally / vertically adjacent valid pixel pairs of
  ``c |grad(x - y)|_1``, the finite differences of the error, weighted by the confidence of the first pixel.
- ``L_depth`` and ``L_pmap``: ``conf_loss + gradient_loss`` on depth ``[.., 1]`` and on world points ``[.., 3]``.
- ``distillation_loss``: the finetuning variant, plain L2 errors summed over cameras, depth and points, no
  confidence weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from recon.feedforward.model import FeedForwardOutput


@dataclass(frozen=True)
class Targets:
    """Ground truth of ``B`` sequences of ``V`` views, normalised (first camera's frame, unit mean distance).

    Attributes:
        pose_enc: ``[B, V, 9]``.
        depth: ``[B, V, H, W]`` z-depth (0 where invalid).
        pts3d: ``[B, V, H, W, 3]`` world points.
        valid: ``[B, V, H, W]`` bool.
    """

    pose_enc: Tensor
    depth: Tensor
    pts3d: Tensor
    valid: Tensor


def camera_loss(
    pose_enc: list[Tensor], target: Tensor, gamma: float = 0.6, weights: tuple[float, float, float] = (1.0, 1.0, 1.0)
) -> Tensor:
    """Huber loss of every pass ``[B, V, 9]`` against ``target [B, V, 9]`` (weighted sum over the 9 numbers:
    ``weights`` = (translation, quaternion, field of view), mean over frames)."""
    n = len(pose_enc)
    wt, wq, wf = weights
    w = target.new_tensor([wt] * 3 + [wq] * 4 + [wf] * 2)
    per_frame = [(F.huber_loss(p, target, delta=1.0, reduction="none") * w).sum(-1).mean() for p in pose_enc]
    return sum(gamma ** (n - 1 - i) * loss for i, loss in enumerate(per_frame))


def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def conf_loss(pred: Tensor, gt: Tensor, conf: Tensor, valid: Tensor, alpha: float = 0.2) -> Tensor:
    """Aleatoric-uncertainty loss ``mean_valid(c ||x - y|| - alpha log c)``.

    Args:
        pred, gt: ``[..., H, W, C]``.
        conf: ``[..., H, W]`` (> 0).
        valid: ``[..., H, W]`` bool.
        alpha: weight of the ``log c`` regulariser (DUSt3R: 0.2).
    """
    err = (pred - gt).norm(dim=-1)
    return _masked_mean(conf * err - alpha * torch.log(conf), valid.float())


def gradient_loss(pred: Tensor, gt: Tensor, conf: Tensor, valid: Tensor) -> Tensor:
    """``mean(c |grad(x - y)|_1)`` over adjacent valid pixel pairs along W and H; shapes as ``conf_loss``."""
    e = pred - gt
    m = valid.float()
    dx = (e[..., :, 1:, :] - e[..., :, :-1, :]).abs().sum(-1)  # ... H W-1
    mx = m[..., :, 1:] * m[..., :, :-1]
    dy = (e[..., 1:, :, :] - e[..., :-1, :, :]).abs().sum(-1)  # ... H-1 W
    my = m[..., 1:, :] * m[..., :-1, :]
    total = (conf[..., :, :-1] * dx * mx).sum() + (conf[..., :-1, :] * dy * my).sum()
    return total / (mx.sum() + my.sum()).clamp(min=1)


def feedforward_loss(
    out: FeedForwardOutput,
    gt: Targets,
    alpha: float = 0.2,
    gamma: float = 0.6,
    camera_weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> tuple[Tensor, dict[str, float]]:
    """``L_camera + L_depth + L_pmap`` and its parts (floats, for logging)."""
    cam = camera_loss(out.pose_enc, gt.pose_enc, gamma, camera_weights)
    d_pred, d_gt = out.depth[..., None], gt.depth[..., None]
    depth = conf_loss(d_pred, d_gt, out.depth_conf, gt.valid, alpha) + gradient_loss(
        d_pred, d_gt, out.depth_conf, gt.valid
    )
    pmap = conf_loss(out.pts3d, gt.pts3d, out.pts_conf, gt.valid, alpha) + gradient_loss(
        out.pts3d, gt.pts3d, out.pts_conf, gt.valid
    )
    total = cam + depth + pmap
    return total, {"loss": total.item(), "camera": cam.item(), "depth": depth.item(), "pmap": pmap.item()}


def distillation_loss(out: FeedForwardOutput, teacher: Targets) -> tuple[Tensor, dict[str, float]]:
    """Distillation finetuning: ``||pose - pose_t|| + mean_valid|d - d_t| + mean_valid||X - X_t||`` (L2 norms,
    no confidences; the camera term uses the last refinement pass)."""
    cam = (out.pose_enc[-1] - teacher.pose_enc).norm(dim=-1).mean()
    m = teacher.valid.float()
    depth = _masked_mean((out.depth - teacher.depth).abs(), m)
    pmap = _masked_mean((out.pts3d - teacher.pts3d).norm(dim=-1), m)
    total = cam + depth + pmap
    return total, {"loss": total.item(), "camera": cam.item(), "depth": depth.item(), "pmap": pmap.item()}
