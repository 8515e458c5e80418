"""Held-out evaluation of a recon model on rendered scenes it never saw, through recon's own pipeline.

Per scene (``tools.synth`` orbit or room walk, seeds from ``HELD_OUT_SEED``), written as a folder of PNGs and
reconstructed with ``recon.pipeline.reconstruct`` (what ``recon run`` does):

- **RRA / RTA @ 15**: share of view pairs whose relative rotation / translation direction error is under 15 deg
  (``tools.eval.metrics.pair_errors``, all ``i < j`` pairs);
- **median depth error**: ``|s d - d_gt| / d_gt`` over the valid pixels of every view (network pixels, ground truth
  sampled through ``net_to_orig``), ``s`` the scene's median ratio ``d_gt / d`` (the scale is free); a pixel
  without predicted depth counts as 100 %;
- **match accuracy**: the reciprocal descriptor matches of consecutive views (``recon.correspondences``, the
  pipeline's matcher) whose true match (ground-truth depth and poses, visible in both views) lies within 3 px.

Figures are pooled over scenes per layout and over all scenes.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np

from recon.geometry import invert, pixel_grid, project, transform, unproject_points

logger = logging.getLogger(__name__)


def _sample(gt: np.ndarray, net_to_orig: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ground-truth values at network pixels ``xy [N, 2]`` (nearest original pixel) and whether they are inside."""
    orig = (net_to_orig @ np.c_[xy, np.ones(len(xy))].T).T[:, :2]
    ij = np.round(orig).astype(int)
    H, W = gt.shape[:2]
    inside = (ij[:, 0] >= 0) & (ij[:, 0] < W) & (ij[:, 1] >= 0) & (ij[:, 1] < H)
    ij = np.clip(ij, 0, [W - 1, H - 1])
    return gt[ij[:, 1], ij[:, 0]], inside


def depth_errors(scene, synth_by_name: dict) -> np.ndarray:
    """Per-pixel relative depth errors of a scene after the median scale (see the module doc); a pixel with
    ground truth but no predicted depth (``<= 0``: masked or behind the camera) counts as a 100 % error."""
    preds, gts = [], []
    for k, name in enumerate(scene.names):
        v = synth_by_name[Path(name).stem]
        d = scene.depth[k].ravel()
        xy = pixel_grid(*scene.depth[k].shape).reshape(-1, 2)
        gt, inside = _sample(v.depth, scene.net_to_orig[k], xy)
        has, _ = _sample(v.mask.astype(np.float32), scene.net_to_orig[k], xy)
        ok = inside & (has > 0.5) & (gt > 0)
        preds.append(d[ok])
        gts.append(gt[ok])
    pred, gt = np.concatenate(preds), np.concatenate(gts)
    err = np.ones_like(gt)
    positive = pred > 0
    if positive.any():
        s = np.median(gt[positive] / pred[positive])
        err[positive] = np.abs(s * pred[positive] - gt[positive]) / gt[positive]
    return err


def match_hits(model, folder: Path, synth_by_name: dict, image_size: int) -> tuple[int, int]:
    """``(hits, checked)``: reciprocal matches of consecutive views within ``MATCH_PX`` of the true match."""
    from recon.correspondences import match_unordered_pairs
    from recon.images import load_images
    from recon.inference import InferenceConfig, run_inference
    from training.chain.run import MATCH_PX

    views, _ = load_images(str(folder), size=image_size, patch_size=int(model.backbone.spec.patch_size), square_ok=True)
    pairs = [(i, i + 1) for i in range(len(views) - 1)]
    store = run_inference(model, views, pairs, InferenceConfig(), progress=False)
    hits = checked = 0
    for m in match_unordered_pairs(store, subsample=8):
        vi, vj = views[m.i], views[m.j]
        si, sj = synth_by_name[Path(vi.name).stem], synth_by_name[Path(vj.name).stem]
        d, inside = _sample(si.depth, vi.net_to_orig, m.xy_i.astype(np.float64))
        valid, _ = _sample(si.mask.astype(np.float32), vi.net_to_orig, m.xy_i.astype(np.float64))
        orig_i = (vi.net_to_orig @ np.c_[m.xy_i, np.ones(len(m.xy_i))].T).T[:, :2]
        # Back-project in view i, move to view j, project.
        world = transform(si.T_world_cam, unproject_points(orig_i, d, si.K))
        cam_j = transform(invert(sj.T_world_cam), world)
        orig_j = np.where(cam_j[:, 2:] > 0, project(cam_j, sj.K), -1.0)  # behind camera j: off the image
        net_j = (np.linalg.inv(vj.net_to_orig) @ np.c_[orig_j, np.ones(len(orig_j))].T).T[:, :2]
        dj, inside_j = _sample(sj.depth, vj.net_to_orig, net_j)
        # Visible in view j: in front, inside, and not occluded (its depth agrees with view j's depth map).
        z = cam_j[:, 2]
        visible = inside & inside_j & (valid > 0.5) & (z > 0) & (np.abs(dj - z) < 0.05 * z)
        err = np.linalg.norm(net_j - m.xy_j, axis=1)
        hits += int((err[visible] <= MATCH_PX).sum())
        checked += int(visible.sum())
    return hits, checked


def evaluate_model(model_path: Path, opts, work: Path, align: str | None = None) -> dict:
    """Figures of ``model_path`` on ``opts.eval_scenes`` held-out scenes per layout (see the module doc), through
    the pipeline's default alignment unless ``align`` names another."""
    import recon
    from recon.pipeline import ReconstructConfig, load_views, reconstruct
    from tools.eval.metrics import accuracy, pair_errors
    from tools.synth import render_scene
    from tools.synth.folder import write_folder
    from training.chain.run import EVAL_LAYOUTS, HELD_OUT_SEED

    model = recon.load_model(model_path, dtype=None).float()
    image_size = int(model.config.image_size)
    per_layout: dict[str, dict] = {}
    pooled = {"rot": [], "trans": [], "depth": [], "hits": 0, "checked": 0}
    for li, layout in enumerate(EVAL_LAYOUTS):
        acc = {"rot": [], "trans": [], "depth": [], "hits": 0, "checked": 0}
        for k in range(opts.eval_scenes):
            seed = HELD_OUT_SEED + 1000 * li + k
            views = render_scene(layout, n_views=opts.eval_views, size=tuple(opts.eval_size), seed=seed)
            folder = work / f"{layout}_{seed}"
            write_folder(views, folder, image_format="png")
            by_name = {Path(v.name).stem: v for v in views}
            cfg = ReconstructConfig(device=opts.device, image_size=image_size, progress=False, precision="float32")
            if align is not None:
                cfg = dataclasses.replace(cfg, align=align)
            scene, _ = reconstruct(load_views(folder, model, cfg), model, cfg)
            T_gt = np.stack([by_name[Path(n).stem].T_world_cam for n in scene.names])
            rot, trans = pair_errors(T_gt, scene.T_world_cam)
            acc["rot"] += list(rot)
            acc["trans"] += list(trans)
            acc["depth"] += list(depth_errors(scene, by_name))
            hits, checked = match_hits(model, folder, by_name, image_size)
            acc["hits"] += hits
            acc["checked"] += checked
        per_layout[layout] = _figures(acc, accuracy)
        for key in ("rot", "trans", "depth"):
            pooled[key] += acc[key]
        pooled["hits"] += acc["hits"]
        pooled["checked"] += acc["checked"]
    return {"all": _figures(pooled, accuracy), **per_layout, "scenes_per_layout": opts.eval_scenes,
            "views": opts.eval_views, "size": list(opts.eval_size)}  # fmt: skip


def _figures(acc: dict, accuracy) -> dict:
    rot, trans = np.asarray(acc["rot"]), np.asarray(acc["trans"])
    return {
        "RRA@15": accuracy(rot, 15), "RTA@15": accuracy(trans, 15),
        "median_depth_error": float(np.median(acc["depth"])) if acc["depth"] else float("inf"),
        "match_within_3px": acc["hits"] / acc["checked"] if acc["checked"] else 0.0, "matches_checked": acc["checked"],
    }  # fmt: skip


def camera_figures(model_path: Path, folder: Path, device: str = "cpu") -> dict:
    """Camera errors of ``model_path`` on a folder with ground-truth cameras (``cameras.json``, e.g. demo_data/orbit)
    through ``recon.pipeline.reconstruct`` with its defaults: RRA / RTA @ 15 and the median and largest relative
    rotation and translation-direction errors (degrees) over all view pairs."""
    import recon
    from recon.pipeline import ReconstructConfig, load_views, reconstruct
    from tools.eval.metrics import accuracy, pair_errors
    from tools.synth.folder import read_folder

    truth = {Path(v.name).stem: v for v in read_folder(folder, load_images=False, load_depth=False)}
    model = recon.load_model(model_path, dtype=None).float()
    cfg = ReconstructConfig(device=device, progress=False, precision="float32")
    scene, _ = reconstruct(load_views(folder, model, cfg), model, cfg)
    T_gt = np.stack([truth[Path(n).stem].T_world_cam for n in scene.names])
    rot, trans = pair_errors(T_gt, scene.T_world_cam)
    return {
        "RRA@15": accuracy(rot, 15), "RTA@15": accuracy(trans, 15), "rot_median_deg": float(np.median(rot)),
        "rot_max_deg": float(np.max(rot)), "trans_median_deg": float(np.median(trans)),
        "trans_max_deg": float(np.max(trans)), "views": len(scene.names), "pairs": len(rot),
    }  # fmt: skip
