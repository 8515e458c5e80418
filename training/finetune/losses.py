"""MASt3R's training losses (reference/mast3r.md §12), reimplemented on recon's prediction dicts.

The release criterion is::

    ConfLoss(Regr3D(L21, norm_mode='?avg_dis'), alpha=0.2)
      + 0.075 * ConfMatchingLoss(MatchingLoss(InfoNCE(mode='proper', temperature=0.05), blocksize=8192),
                                 alpha=10, confmode='mean')

- **Regression.** Ground-truth points of both views are expressed in view 1's camera; ``pred1['pts3d']`` and
  ``pred2['pts3d']`` (recon's heads already predict view 2 in view 1's frame) are compared with the per-pixel
  Euclidean distance (``L21``). ``avg_dis`` divides each pair's clouds by their mean distance to the origin over
  the valid pixels of both views (the prediction by its own factor). With the leading ``?`` the prediction of a
  *metric* sample is divided by the **ground truth's** factor instead, which forces metric outputs. ``none``
  regresses raw units (all metric). Sky pixels (invalid, known sky) get the constant loss ``sky_loss_value``.
- **Confidence.** Per view ``mean(loss * conf - alpha * log(conf))`` over the supervised pixels, summed over views.
- **Matching.** Descriptors gathered at the ground-truth correspondences; InfoNCE "proper": for positive ``i``,
  ``-(log softmax_row + log softmax_col)`` of the tempered similarity matrix, each log clipped at ``log(eps)``
  as the official ``clip(eps)``; rows of invalid (negative) correspondences take part as negatives only. With
  more correspondences than ``blocksize``, they are shuffled and split into block-diagonal chunks. Weighted by
  the mean of the two descriptor confidences: ``mean(loss * c - alpha * log(c))``.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import Tensor

from training.finetune.config import LossConfig

logger = logging.getLogger(__name__)


def avg_dis_factor(pts1: Tensor, pts2: Tensor, valid1: Tensor, valid2: Tensor) -> Tensor:
    """Mean distance to the origin over the valid points of both views: ``[B]`` (clipped at 1e-8).

    Args:
        pts1, pts2: ``[B, H, W, 3]`` (the views may differ in size).
        valid1, valid2: ``[B, H, W]`` bool.
    """
    d1 = (pts1.norm(dim=-1) * valid1).flatten(1).sum(1)
    d2 = (pts2.norm(dim=-1) * valid2).flatten(1).sum(1)
    n = valid1.flatten(1).sum(1) + valid2.flatten(1).sum(1)
    return ((d1 + d2) / (n + 1e-8)).clamp(min=1e-8)


def to_camera(pts_world: Tensor, T_world_cam: Tensor) -> Tensor:
    """World points ``[B, H, W, 3]`` -> the camera frame of ``T_world_cam [B, 4, 4]``."""
    T = torch.linalg.inv(T_world_cam.double()).to(pts_world.dtype)
    return torch.einsum("bij,bhwj->bhwi", T[:, :3, :3], pts_world) + T[:, None, None, :3, 3]


def _safe_mean(x: Tensor) -> Tensor:
    """Mean, or a graph-connected zero for an empty tensor (keeps every parameter in the DDP graph)."""
    return x.mean() if x.numel() else x.sum() * 0.0


def normalized_points(pred1, pred2, gt, norm_mode: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Predicted and ground-truth clouds after the ``norm_mode`` normalisation.

    Args:
        pred1, pred2: prediction dicts (``pts3d [B, H, W, 3]``, both in view 1's frame).
        gt: ``{"pts1", "pts2"}`` in view 1's camera, ``{"valid1", "valid2"}``, ``"is_metric" [B]`` bool.

    Returns:
        ``(pred_pts1, pred_pts2, gt_pts1, gt_pts2)``.
    """
    p1, p2 = pred1["pts3d"].float(), pred2["pts3d"].float()
    g1, g2 = gt["pts1"].float(), gt["pts2"].float()
    if norm_mode == "none":
        return p1, p2, g1, g2
    v1, v2 = gt["valid1"], gt["valid2"]
    gt_factor = avg_dis_factor(g1, g2, v1, v2)
    pred_factor = avg_dis_factor(p1, p2, v1, v2)
    if norm_mode.startswith("?"):
        # Metric samples are divided by the ground truth's factor: the network must predict their true scale.
        pred_factor = torch.where(gt["is_metric"].to(p1.device), gt_factor, pred_factor)
    pf, gf = pred_factor[:, None, None, None], gt_factor[:, None, None, None]
    return p1 / pf, p2 / pf, g1 / gf, g2 / gf


def regression_loss(pred1, pred2, gt, w: LossConfig) -> tuple[Tensor, dict[str, float]]:
    """Confidence-weighted 3D regression (``ConfLoss(Regr3D(L21, norm_mode), alpha)``), summed over both views.

    Args:
        pred1, pred2: prediction dicts with ``pts3d [B, H, W, 3]`` and ``conf [B, H, W]``.
        gt: see ``normalized_points``, plus ``"sky1"``, ``"sky2"`` ``[B, H, W]`` bool.
        w: the criterion's configuration.

    Returns:
        ``(loss, details)``; details hold the mean distances ``regr_1``, ``regr_2`` (un-weighted).
    """
    p1, p2, g1, g2 = normalized_points(pred1, pred2, gt, w.norm_mode)
    total = p1.new_zeros(())
    details = {}
    for k, (p, g, pred) in enumerate(((p1, g1, pred1), (p2, g2, pred2)), start=1):
        valid, sky = gt[f"valid{k}"], gt[f"sky{k}"] & ~gt[f"valid{k}"]
        mask = valid | sky if w.sky_loss_value > 0 else valid
        dist = (p[mask] - g[mask]).norm(dim=-1)
        if w.sky_loss_value > 0:
            dist = torch.where(sky[mask], torch.full_like(dist, w.sky_loss_value), dist)
        conf = pred["conf"].float()[mask]
        total = total + _safe_mean(dist * conf - w.alpha * torch.log(conf))
        details[f"regr_{k}"] = float(dist.detach()[valid[mask]].mean()) if bool(valid.any()) else 0.0
    return total, details


def gather_at(maps: Tensor, corres: Tensor) -> Tensor:
    """Per-pixel values at ``corres [B, N, 2]`` (x, y): ``maps [B, H, W, ...]`` -> ``[B, N, ...]``."""
    b = torch.arange(maps.shape[0], device=maps.device)[:, None]
    return maps[b, corres[..., 1], corres[..., 0]]


def infonce_proper(desc1: Tensor, desc2: Tensor, temperature: float, eps: float = 1e-8) -> Tensor:
    """Symmetric InfoNCE of matching rows: ``desc1, desc2 [B, N, D]`` -> per-row loss ``[B, N]``.

    Row ``i`` of ``desc1`` matches row ``i`` of ``desc2``; every other row is a negative, in both directions.
    Equals the official ``-(log(pos / col_sum).clip(eps) + log(pos / row_sum).clip(eps))`` on ``exp(sim / T)``,
    computed with log-sum-exp.
    """
    sim = desc1.float() @ desc2.float().transpose(-1, -2) / temperature  # B N N
    pos = sim.diagonal(dim1=-2, dim2=-1)
    floor = math.log(eps)
    log_row = (pos - torch.logsumexp(sim, dim=-1)).clamp(min=floor)
    log_col = (pos - torch.logsumexp(sim, dim=-2)).clamp(min=floor)
    return -(log_row + log_col)


def matching_loss(
    pred1, pred2, corres1: Tensor, corres2: Tensor, valid: Tensor, w: LossConfig, generator=None
) -> tuple[Tensor, dict[str, float]]:
    """``ConfMatchingLoss(MatchingLoss(InfoNCE(mode='proper')), alpha, confmode)`` on the descriptors.

    Args:
        pred1, pred2: prediction dicts with ``desc [B, H, W, D]`` and ``desc_conf [B, H, W]``.
        corres1, corres2: ``[B, N, 2]`` int64 pixel ``(x, y)`` in each view.
        valid: ``[B, N]`` bool, True for true correspondences.
        w: the criterion's configuration.
        generator: CPU ``torch.Generator`` for the block shuffle (used only when ``N > blocksize``).

    Returns:
        ``(loss, details)`` with ``infonce`` (mean over valid rows, un-weighted).
    """
    d1, d2 = gather_at(pred1["desc"], corres1), gather_at(pred2["desc"], corres2)  # B N D
    c1, c2 = gather_at(pred1["desc_conf"], corres1), gather_at(pred2["desc_conf"], corres2)  # B N
    B, N, D = d1.shape
    if N > w.blocksize:
        if N % w.blocksize:
            raise ValueError(f"{N} correspondences cannot be split into blocks of {w.blocksize}; make n_corres a "
                             "multiple of the block size")  # fmt: skip
        perm = torch.stack([torch.randperm(N, generator=generator) for _ in range(B)]).to(d1.device)
        d1, d2 = d1.gather(1, perm[..., None].expand(-1, -1, D)), d2.gather(1, perm[..., None].expand(-1, -1, D))
        c1, c2, valid = c1.gather(1, perm), c2.gather(1, perm), valid.gather(1, perm)
        chunks = N // w.blocksize
        d1, d2 = d1.reshape(B * chunks, w.blocksize, D), d2.reshape(B * chunks, w.blocksize, D)
        c1, c2, valid = (x.reshape(B * chunks, w.blocksize) for x in (c1, c2, valid))
    loss = infonce_proper(d1, d2, w.temperature, w.eps)[valid]
    conf = 0.5 * (c1 + c2) if w.confmode == "mean" else c1 * c2
    conf = conf.float()[valid]
    total = _safe_mean(loss * conf - w.matching_alpha * torch.log(conf))
    if not valid.any():  # no true match in the whole batch: keep the descriptor heads in the graph
        total = total + 0.0 * (pred1["desc"].sum() + pred2["desc"].sum())
    return total, {"infonce": float(loss.detach().mean()) if loss.numel() else 0.0}


def criterion(pred1, pred2, gt, w: LossConfig, generator=None) -> tuple[Tensor, dict[str, float]]:
    """The full MASt3R training loss: regression + ``matching_weight`` x matching.

    Args:
        pred1, pred2: prediction dicts (``pts3d``, ``conf``, ``desc``, ``desc_conf``).
        gt: ``pts1``, ``pts2`` (view 1's camera), ``valid1/2``, ``sky1/2``, ``is_metric``, ``corres1/2``,
            ``valid_corres``.
        w: the criterion's configuration.
        generator: for the matching block shuffle.

    Returns:
        ``(loss, details)`` with ``loss_regr``, ``loss_match`` and the un-weighted terms.
    """
    regr, details = regression_loss(pred1, pred2, gt, w)
    total = regr
    details["loss_regr"] = float(regr.detach())
    if w.matching_weight > 0 and "desc" in pred1:
        match, more = matching_loss(pred1, pred2, gt["corres1"], gt["corres2"], gt["valid_corres"], w, generator)
        total = total + w.matching_weight * match
        details.update(more, loss_match=float(match.detach()))
    return total, details


# ---------------------------------------------------------------------------------------------- validation
@torch.no_grad()
def pointmap_error(pred1, pred2, gt) -> Tensor:
    """Scale-invariant 3D error per pair: both clouds divided by their own ``avg_dis`` factor, then the mean
    Euclidean distance over the valid pixels of both views. Returns ``[B]``."""
    p1, p2, g1, g2 = normalized_points(pred1, pred2, {**gt, "is_metric": torch.zeros_like(gt["is_metric"])},
                                       "avg_dis")  # fmt: skip
    v1, v2 = gt["valid1"], gt["valid2"]
    err = ((p1 - g1).norm(dim=-1) * v1).flatten(1).sum(1) + ((p2 - g2).norm(dim=-1) * v2).flatten(1).sum(1)
    n = v1.flatten(1).sum(1) + v2.flatten(1).sum(1)
    return err / n.clamp(min=1)


@torch.no_grad()
def matching_accuracy(pred1, pred2, corres1: Tensor, corres2: Tensor, valid: Tensor, px: float = 2.0) -> Tensor:
    """Share of true correspondences whose view-1 descriptor's nearest neighbour among **all** view-2 pixels lies
    within ``px`` pixels of the true match. Returns ``[B]`` (NaN for a pair without true matches)."""
    B, H2, W2, D = pred2["desc"].shape
    q = gather_at(pred1["desc"], corres1).float()  # B N D
    nn_idx = (q @ pred2["desc"].float().reshape(B, -1, D).transpose(1, 2)).argmax(-1)  # B N
    nn_xy = torch.stack([nn_idx % W2, nn_idx // W2], dim=-1)
    ok = ((nn_xy - corres2).float().norm(dim=-1) <= px) & valid
    return ok.sum(1) / valid.sum(1).float()
