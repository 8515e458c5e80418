"""Dense output of the official MASt3R-SfM alignment: every pixel through its anchor and offset
(``SparseGA.get_dense_pts3d(clean_depth=True, subsample=8)``); its ``clean_depth`` step is DUSt3R's official
``clean_pointcloud``, which ``recon.align.dust3r`` reproduces (the official MASt3R imports it from DUSt3R too)."""

from __future__ import annotations

import torch

from recon.align.mast3r_sfm.canonical import anchor_offsets
from recon.align.mast3r_sfm.optimise import Anchored, make_pts3d


def all_pixels(H: int, W: int) -> torch.Tensor:
    """``[H*W, 2]`` pixel ``(x, y)`` in row-major order, float."""
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    return torch.stack([xs, ys], dim=-1).reshape(-1, 2).float()


def densify(K, cam2w, depth, base_focals, canon2: list[torch.Tensor], anchor_start: list[int], subsample: int):
    """World points and z-depths of every pixel of every view.

    Args:
        K, cam2w: ``[N, 3, 3]``, ``[N, 4, 4]`` final cameras.
        depth: ``[A]`` final anchor depths of all views, concatenated.
        base_focals: ``[N]`` canonical focals (the offsets' reference).
        canon2: N ``[H_k, W_k]`` relative depths.
        anchor_start: N offsets of each view's anchors in ``depth``.
        subsample: anchor stride.

    Returns:
        ``(world, z)``: N ``[H_k, W_k, 3]`` world points and N ``[H_k, W_k]`` z-depths.
    """
    views, uv1, anchors, offsets, shapes = [], [], [], [], []
    for k, c2 in enumerate(canon2):
        H, W = c2.shape
        pix = all_pixels(H, W)
        idx, off = anchor_offsets(c2, pix, subsample)
        views.append(torch.full((H * W,), k))
        uv1.append(torch.cat((pix, torch.ones(H * W, 1)), 1).to(K.dtype))
        anchors.append(idx + anchor_start[k])
        offsets.append(off.to(K.dtype))
        shapes.append((H, W))
    pts = Anchored(
        view=torch.cat(views),
        counts=[H * W for H, W in shapes],
        uv1=torch.cat(uv1),
        anchor=torch.cat(anchors),
        offset=torch.cat(offsets),
    )
    world, z = make_pts3d(K, cam2w, depth, base_focals, pts, ret_depth=True)
    sizes = [H * W for H, W in shapes]
    world = [w.reshape(H, W, 3) for w, (H, W) in zip(world.split(sizes), shapes, strict=True)]
    z = [d.reshape(H, W) for d, (H, W) in zip(z.split(sizes), shapes, strict=True)]
    return world, z
