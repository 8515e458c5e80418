"""Canonical view of each image, its focal, and anchor depths + offsets (official ``canonical_view``,
``estimate_focal_knowing_depth(focal_mode='weiszfeld')`` and ``anchor_depth_offsets``; reference/mast3r.md §8.3).

The canonical point map averages every prediction of a view in its own frame with weights ``w = conf - 0.999``.
Depth inside each ``subsample``² block is then described relative to the block's centre pixel (the *anchor*):
``canon2 = 1 + dz / z_anchor`` where ``dz`` comes from the conf-weighted mean of the elevation angle
``atan((z_pixel - z_centre) / radius_xy)`` over predictions ("avg-angle" mode), so ``canon2 == 1`` at the anchors.
Every pixel later hangs off its block's anchor depth with the fixed ratio ``offset = canon2[pixel] / canon2[anchor]``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def canonical_view(
    pts: torch.Tensor, conf: torch.Tensor, subsample: int = 8
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Official ``canonical_view(mode='avg-angle')``.

    Args:
        pts: ``[P, H, W, 3]`` point maps of one view in its own camera frame (P predictions).
        conf: ``[P, H, W]`` their confidences (> 1).
        subsample: anchor stride; ``H`` and ``W`` must be multiples of it.

    Returns:
        ``canon [H, W, 3]`` weighted mean point map, ``canon2 [H, W]`` relative depth w.r.t. the block anchors,
        ``conf [H, W]`` canonical confidence ``sum(w^2) / sum(w)`` with ``w = conf - 0.999``.
    """
    w = conf.unsqueeze(-1) - 0.999  # P H W 1
    canon = (w * pts).sum(0) / w.sum(0)
    S = slice(subsample // 2, None, subsample)
    depth = pts[..., 2].unsqueeze(1)  # P 1 H W
    centre_depth = depth[:, :, S, S].clip(min=torch.finfo(depth.dtype).eps)  # P 1 h w
    stacked_depth = F.pixel_unshuffle(depth, subsample)  # P s² h w
    stacked_w = F.pixel_unshuffle(w[:, None, :, :, 0], subsample)  # P s² h w
    xy = pts[..., 0:2].permute(0, 3, 1, 2)  # P 2 H W
    stacked_xy = F.pixel_unshuffle(xy, subsample)  # P 2s² h w (channel c*s² + dy*s + dx)
    P, _, h, wd = stacked_xy.shape
    radius = (stacked_xy.view(P, 2, -1, h, wd) - xy[:, :, None, S, S]).norm(dim=1).clip(min=1e-8)  # P s² h w
    angle = torch.arctan((stacked_depth - centre_depth) / radius)
    avg_angle = (stacked_w * angle).sum(0) / stacked_w.sum(0)  # s² h w
    dz = radius.mean(0) * torch.tan(avg_angle)
    canon2 = F.pixel_shuffle((1 + dz / canon[S, S, 2]).unsqueeze(0), subsample).squeeze(0).squeeze(0)
    out_conf = (w.square().sum(0) / w.sum(0))[..., 0]
    return canon, canon2, out_conf


def weiszfeld_focal(pts: torch.Tensor, min_focal: float = 0.5, max_focal: float = 3.5) -> torch.Tensor:
    """Focal of a camera-frame point map with the principal point at the image centre (official
    ``estimate_focal_knowing_depth(pts[None], (W/2, H/2), 'weiszfeld', min_focal, max_focal)``).

    Minimises ``sum |pixel - f * (x, y) / z|`` by iteratively re-weighted least squares: the L2 closed form, then
    10 rounds with weights ``1 / residual``. Clipped to ``[min_focal, max_focal] * max(H, W) / (2 tan 30°)``.

    Args:
        pts: ``[H, W, 3]`` points in the camera frame.

    Returns:
        ``[1]`` focal in pixels (dtype of ``pts``).
    """
    H, W = pts.shape[:2]
    pp = torch.tensor([W / 2, H / 2], dtype=pts.dtype)
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    pixels = torch.stack([xs, ys], dim=-1).reshape(-1, 2) - pp  # HW 2, centred
    p = pts.reshape(-1, 3)
    xy_over_z = (p[:, :2] / p[:, 2:3]).nan_to_num(posinf=0, neginf=0)
    dot_xy_px = (xy_over_z * pixels).sum(-1)
    dot_xy_xy = xy_over_z.square().sum(-1)
    focal = dot_xy_px.mean() / dot_xy_xy.mean()
    for _ in range(10):
        residual = (pixels - focal * xy_over_z).norm(dim=-1)
        weight = residual.clip(min=1e-8).reciprocal()
        focal = (weight * dot_xy_px).mean() / (weight * dot_xy_xy).mean()
    base = max(H, W) / (2 * math.tan(math.radians(60) / 2))
    return focal.clip(min=min_focal * base, max=max_focal * base).view(1)


def anchor_offsets(canon2: torch.Tensor, xy: torch.Tensor, subsample: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor index and relative depth offset of pixels (official ``anchor_depth_offsets``).

    Args:
        canon2: ``[H, W]`` relative depth (1 at the anchors ``subsample//2 :: subsample``).
        xy: ``[M, 2]`` pixel ``(x, y)`` (integers, any dtype).
        subsample: anchor stride.

    Returns:
        ``idx [M]`` int64 anchor index ``(y // s) * w + x // s`` in the ``[h, w]`` anchor grid, and
        ``offset [M]`` = ``canon2[pixel] / canon2[anchor]``.
    """
    H, W = canon2.shape
    core = canon2[subsample // 2 :: subsample, subsample // 2 :: subsample]
    if not bool((core > 0).all()):
        raise ValueError("canonical relative depth must be > 0 at every anchor")
    w = core.shape[1]
    px, py = xy.long().T
    idx = (py // subsample) * w + px // subsample
    return idx, canon2[py, px] / core.reshape(-1)[idx]
