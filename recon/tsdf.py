"""TSDF post-processing of depth maps, as the MASt3R demo's "TSDF Threshold" (official ``TSDFPostProcess``).

For every pixel of every view (reference/mast3r.md §8.11):

1. draw ``nsamples`` depths ``d + (n - 1) * thresh`` along its ray, ``n ~ N(0, 1)`` (centred one threshold in
   front of the current depth ``d``);
2. evaluate at each sample the confidence-weighted truncated SDF over all views: in view ``v`` the sample projects
   to pixel ``p`` at depth ``z``, ``sdf_v = depth_v[p] - z`` clipped below at ``-thresh``; views where the sample
   falls outside the image or is occluded (``sdf_v < -thresh``) do not vote; votes weigh ``exp(conf_v[p])``;
3. keep the sample whose ``|TSDF|`` is smallest (the fused surface crossing); if every sample sits at
   ``|TSDF| = thresh`` (a flat zone) the depth is left alone.

Deliberate differences from the official code: samples are drawn from a seeded generator (reproducible); pixels
are processed in batches of bounded size instead of ``H x W x 1000`` points at once (the official code needs
several GB per view at 512x384); a sample behind a camera (``z <= 0``) is out of that view (the official code
projects it through the camera and lets it vote); a pixel none of whose samples gets a vote keeps its depth (the
official code takes its first, random, sample); ``exp(conf)`` is computed as ``exp(conf - max conf)``, which gives
the same weighted mean without overflowing; pixel coordinates are rounded as the official code does (no
interpolation). Only registered views with positive depth take part.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np
import torch

from recon.types import Scene

logger = logging.getLogger(__name__)

# Official number of depth samples per pixel.
DEFAULT_SAMPLES = 1000
# Most (sample, view) projections held in memory at once: 2**24 x a few float32 = a few hundred MB.
DEFAULT_MAX_BATCH = 2**24


def _camera_tensors(scene: Scene, views: list[int]):
    T = torch.as_tensor(np.stack([scene.T_world_cam[k] for k in views]), dtype=torch.float64)
    K = torch.as_tensor(np.stack([scene.K[k] for k in views]), dtype=torch.float64)
    R_cw = T[:, :3, :3].transpose(1, 2)  # world -> camera rotation
    t_cw = -(R_cw @ T[:, :3, 3:])[..., 0]
    return T, K, R_cw, t_cw


@torch.no_grad()
def tsdf_refine(
    scene: Scene,
    thresh: float,
    *,
    nsamples: int = DEFAULT_SAMPLES,
    seed: int = 0,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> Scene:
    """Refine every registered view's depth with the fused TSDF of all views.

    Args:
        scene: the scene (``depth [H_k, W_k]``, ``conf [H_k, W_k]``, ``K``, ``T_world_cam``).
        thresh: truncation distance and sampling spread, in scene units (the demo slider's value); ``<= 0``
            returns ``scene`` unchanged.
        nsamples: depth samples per pixel (official 1000).
        seed: seed of the samples.
        max_batch: most ``samples x views`` projections evaluated at once (memory bound).

    Returns:
        A shallow copy of ``scene`` with new ``depth`` arrays (float32); the input is not modified.

    Raises:
        ValueError: non-finite ``thresh`` or ``nsamples < 1``.
    """
    if not np.isfinite(thresh):
        raise ValueError(f"TSDF threshold must be finite, got {thresh}")
    if nsamples < 1:
        raise ValueError(f"nsamples must be >= 1, got {nsamples}")
    if thresh <= 0:
        return scene
    reg = np.ones(len(scene), bool) if scene.registered is None else np.asarray(scene.registered, bool)
    views = [k for k in range(len(scene)) if reg[k]]
    if not views:
        return scene
    depth = [torch.as_tensor(np.asarray(scene.depth[k]), dtype=torch.float64) for k in views]
    conf = [torch.as_tensor(np.asarray(scene.conf[k]), dtype=torch.float64) for k in views]
    cmax = max(float(c.max()) for c in conf)
    weight = [torch.exp(c - cmax) for c in conf]  # exp(conf) up to a common factor that the mean cancels
    T, K, R_cw, t_cw = _camera_tensors(scene, views)
    gen = torch.Generator().manual_seed(int(seed))
    out = [np.asarray(d, np.float32).copy() for d in scene.depth]
    V = len(views)
    px_per_batch = max(1, max_batch // (nsamples * V))

    for a, k in enumerate(views):
        d = depth[a]
        H, W = d.shape
        ys, xs = torch.nonzero(d > 0, as_tuple=True)
        if len(ys) == 0:
            continue
        rays = (
            torch.stack([xs.double(), ys.double(), torch.ones_like(xs, dtype=torch.float64)], 1)
            @ torch.linalg.inv(K[a]).T
        )  # P 3, z = 1
        new = d.clone()
        for s in range(0, len(ys), px_per_batch):
            sl = slice(s, s + px_per_batch)
            d0 = d[ys[sl], xs[sl]]  # P
            z = d0[:, None] + (torch.randn(len(d0), nsamples, generator=gen, dtype=torch.float64) - 1) * thresh
            X_cam = rays[sl, None, :] * z[..., None]  # P S 3
            X = X_cam @ T[a, :3, :3].T + T[a, :3, 3]  # world, P S 3
            num = torch.zeros_like(z)
            den = torch.zeros_like(z)
            for b in range(V):
                Xb = X @ R_cw[b].T + t_cw[b]  # P S 3 in camera b
                zb = Xb[..., 2]
                front = zb > 0
                uv = (Xb @ K[b].T)[..., :2] / torch.where(front, zb, 1.0)[..., None]
                u, v = uv[..., 0].round(), uv[..., 1].round()
                Hb, Wb = depth[b].shape
                inside = front & (u >= 0) & (u < Wb) & (v >= 0) & (v < Hb)
                ui = torch.where(inside, u, 0).long()
                vi = torch.where(inside, v, 0).long()
                sdf = depth[b][vi, ui] - zb
                vote = inside & (depth[b][vi, ui] > 0) & (sdf >= -thresh)  # seen, not occluded
                w = weight[b][vi, ui] * vote
                num += w * sdf.clamp(min=-thresh)
                den += w
            voted = den > 0
            tsdf = torch.where(voted, num / torch.where(voted, den, 1.0), torch.inf).abs()
            best = tsdf.argmin(dim=1)
            flat = (tsdf == thresh).all(dim=1)  # official: a flat zone is left alone
            chosen = z.gather(1, best[:, None])[:, 0]
            keep = voted.any(dim=1) & ~flat & (chosen > 0)
            idx = (ys[sl][keep], xs[sl][keep])
            new[idx] = chosen[keep]
        out[k] = new.float().numpy()
        logger.debug("TSDF view %d: %d pixels refined", k, len(ys))
    return replace(scene, depth=out)
