"""Dense output of the official MASt3R-SfM alignment: every pixel through its anchor and offset
(``SparseGA.get_dense_pts3d(clean_depth=True, subsample=8)``), and the official ``clean_pointcloud``."""

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


def clean_pointcloud(conf, K, cam2w, depth, world, tol: float = 0.001, bad_conf: float = 0.0) -> list[torch.Tensor]:
    """Official ``clean_pointcloud``: a point of view i that lands in view j (rounded pixel, in front of the
    camera) more than ``tol`` (relative) in front of j's depth there, while less confident than j there, gets
    its confidence clipped to ``bad_conf``.

    Reproduced with the official's order dependence on purpose (views in order, each comparison against the
    confidences as already lowered), because the output confidence must select the official pixels;
    ``recon.scene.cleaned_conf`` is the order-free variant used by recon's own aligners.

    Args:
        conf: N ``[H_k, W_k]`` confidences.
        K, cam2w: ``[N, 3, 3]``, ``[N, 4, 4]``.
        depth: N ``[H_k, W_k]`` z-depths.
        world: N ``[H_k, W_k, 3]`` world points.

    Returns:
        N new confidence maps.
    """
    if not 0 <= tol < 1:
        raise ValueError(f"tol must be in [0, 1), got {tol}")
    res = [c.clone() for c in conf]
    w2cam = torch.linalg.inv(cam2w)
    for i, pts in enumerate(world):
        for j in range(len(world)):
            if i == j:
                continue
            proj = pts @ w2cam[j, :3, :3].T + w2cam[j, :3, 3]
            z = proj[..., 2]
            pix = proj @ K[j].T
            pix = pix / pix[..., -1:]
            u, v = pix[..., :2].round().long().unbind(-1)
            H, W = res[j].shape
            inside = (z > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
            vj, uj = v[inside], u[inside]
            bad = (z[inside] < (1 - tol) * depth[j][vj, uj]) & (res[i][inside] < res[j][vj, uj])
            mask = inside.clone()
            mask[inside] = bad
            res[i][mask] = res[i][mask].clip(max=bad_conf)
    return res
