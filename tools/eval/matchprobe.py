"""Feature-matching probes of a frozen encoder: what its patch features alone know about correspondence.

Two protocols (MuM supplement, Table 13 and section B), on any backbone recon loads:

**cosine** (Probe3D, El Banani et al. 2024, ``evaluate_navi_correspondence``): features are upsampled bicubically
to a grid at ``scale`` (0.25) of the network image; every grid cell with ground-truth depth is a candidate; each
cell of image 0 takes its cosine nearest neighbour in image 1, weighted by the ratio test ``1 - d1 / d2``
(cosine distances of the two nearest neighbours); the ``num_corr`` (1000) best are kept. Errors: 3D distance
between the matched points in camera 1's frame (recall at 1, 2, 5 cm, scene units being metres) and their
distance after projection into image 1 (recall at 5, 25, 50 px). "Average recall" is the mean of the three 3D
recalls. Dense **EPE** (MegaDepth / ScanNet rows of Table 13): for every patch centre of image 0 visible in
image 1 (depth-consistent), the centre of the most similar patch of image 1, end-point error in network
pixels. Both run with and without the encoder's final LayerNorm (``x_norm_patchtokens`` vs ``x_prenorm``) and
the better is reported, as MuM does.

**linear-probe** (MuM section B): a square linear map ``W`` (``D x D``, identity at start) trained on frozen
features; a kernel nearest-neighbour matcher scores ``s_ij = <W f_i, W f_j> / tau`` and is trained by the
log-softmax (cross-entropy) of each ground-truth patch; its dense warp is the soft-argmax of the scores around
the best patch. Pose: essential matrix on the top warp matches with the known intrinsics, AUC of
``max(rot, trans)`` error at 5/10/20 degrees (RoMa / DKM / LoFTR protocol). MuM trains 25k steps, batch 8,
evaluates every 2,500 and reports the best, over a small lr / weight-decay sweep: ``train_linear_probe``
takes those as arguments; the defaults here are small so tests and CPU runs finish.

Data: ``ROOT/pairs.json`` (``--pairs``), paths relative to ROOT::

    {"dataset": "megadepth1500", "pairs": [{"name": "0015/123_456",
        "image0": "...", "image1": "...", "depth0": "....npy", "depth1": "....npy",
        "K0": [[...]], "K1": [[...]], "T_world_cam0": [[...]], "T_world_cam1": [[...]]}]}

``depth0`` / ``depth1`` may be left out (pose AUC only; the linear probe's training pairs need them), and
``"T_1_0"`` (camera 0 -> 1) may replace the two ``T_world_cam`` (ScanNet-1500 ships relative poses).
Depth: ``.npy`` / ``.npz`` / ``.pfm`` float32 metres, or 16-bit PNG millimetres (ScanNet's release format); MegaDepth's
``.h5`` depth and the LoFTR ``scene_info`` ``.npz`` files (pickled object arrays, which recon will not load) are
converted to this list once (docs/evaluation.md).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from recon.datasets.data import DatasetError
from recon.geometry import pixel_grid, project, transform, unproject_points
from tools.eval.mvdepth import _matrix, orig_to_grid, read_depth, read_list

logger = logging.getLogger(__name__)

MATCH_DATASETS = ("navi", "megadepth1500", "scannet1500")
RECALL_3D = (0.01, 0.02, 0.05)
"""Probe3D's 3D thresholds (metres)."""
RECALL_2D = (5.0, 25.0, 50.0)
"""Probe3D's 2D thresholds (pixels)."""
AUC_THRESHOLDS = (5.0, 10.0, 20.0)
VIEW_BINS = (0, 30, 60, 90, 120)
"""Probe3D's relative-rotation bins (degrees) for the binned recall at 2 cm."""


@dataclass(frozen=True)
class MatchPair:
    """Two images, their ``K``, the relative pose ``T_1_0`` (camera 0 -> camera 1) and, where given, depth
    paths (``None``: pose metrics only, as on the LoFTR ScanNet-1500 test pairs, which ship no depth)."""

    name: str
    image_paths: tuple[str, str]
    depth_paths: tuple[str | None, str | None]
    K: tuple[np.ndarray, np.ndarray]
    T_1_0: np.ndarray

    @property
    def has_depth(self) -> bool:
        return None not in self.depth_paths


class MatchReader:
    """Pairs of one matching set from ``ROOT/pairs.json`` (layout in the module docstring)."""

    def __init__(self, root: str | os.PathLike, dataset: str, pairs_file: str | os.PathLike | None = None):
        if dataset not in MATCH_DATASETS:
            raise DatasetError(f"unknown dataset {dataset!r}; expected one of {', '.join(MATCH_DATASETS)}")
        self.root, self.dataset = Path(root), dataset
        path = Path(pairs_file) if pairs_file else self.root / "pairs.json"
        data = read_list(path, "pairs", dataset, "Feature matching")
        self.pairs = []
        for n, rec in enumerate(data["pairs"]):
            where = f"{path}: pair {n}"
            if not isinstance(rec, dict) or not all(isinstance(rec.get(k), str) for k in ("image0", "image1")):
                raise DatasetError(f"{where}: needs image0 and image1 paths")
            depth = [rec.get(k) for k in ("depth0", "depth1")]
            if any(d is not None and not isinstance(d, str) for d in depth) or (depth[0] is None) != (depth[1] is None):
                raise DatasetError(f"{where}: give both depth0 and depth1 paths, or neither")
            if "T_1_0" in rec:  # ScanNet-1500 ships relative poses
                T_1_0 = _matrix(rec["T_1_0"], (4, 4), f"{where}, T_1_0")
            else:
                T0, T1 = (_matrix(rec.get(f"T_world_cam{k}"), (4, 4), f"{where}, T_world_cam{k}") for k in "01")
                T_1_0 = np.linalg.inv(T1) @ T0
            self.pairs.append(
                MatchPair(
                    str(rec.get("name", n)),
                    (str(self.root / rec["image0"]), str(self.root / rec["image1"])),
                    tuple(None if d is None else str(self.root / d) for d in depth),
                    tuple(_matrix(rec.get(f"K{k}"), (3, 3), f"{where}, K{k}") for k in "01"),
                    T_1_0,
                )
            )

    def depth(self, pair: MatchPair, k: int) -> np.ndarray:
        """``[Hd, Wd]`` depth of image ``k`` of the pair (the image's size, or smaller as ScanNet's)."""
        # ScanNet ships 16-bit PNG millimetres; the other sets are converted to float metres (.npy / .pfm).
        png = Path(pair.depth_paths[k]).suffix.lower() == ".png"
        return read_depth(pair.depth_paths[k], divisor=1000.0 if png else 1.0)


# --- ground truth on the network grid -------------------------------------------------------------------------


@dataclass
class PairGeometry:
    """One pair on the network grid: images, depth, intrinsics (network pixels), relative pose.

    Attributes:
        images: two ``[3, H, W]`` float32 network images.
        depth: two ``[H, W]`` z-depth maps (nearest-sampled from the ground truth), 0 = invalid.
        K: two ``[3, 3]`` intrinsics in network pixels.
        T_1_0: ``[4, 4]`` camera-0 to camera-1 transform.
    """

    images: tuple[torch.Tensor, torch.Tensor]
    depth: tuple[np.ndarray, np.ndarray]
    K: tuple[np.ndarray, np.ndarray]
    T_1_0: np.ndarray


def _depth_at(depth: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """``[M]`` values of a ``[H, W]`` depth map at the nearest pixels of ``xy [M, 2]`` (clipped to the image)."""
    H, W = depth.shape
    xi = np.clip(np.rint(xy[:, 0]).astype(int), 0, W - 1)
    yi = np.clip(np.rint(xy[:, 1]).astype(int), 0, H - 1)
    return depth[yi, xi]


def gt_matches(g: PairGeometry, xy0: np.ndarray, rel_tol: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Where pixels ``xy0 [M, 2]`` of image 0 land in image 1, and whether they are visible there.

    Visible: valid depth in 0, projects inside image 1 in front of it, and image 1's depth there agrees with the
    transported point's z within ``rel_tol`` (not occluded).

    Returns:
        ``(xy1 [M, 2], visible [M] bool)``.
    """
    H, W = g.depth[1].shape
    X0 = unproject_points(xy0, _depth_at(g.depth[0], xy0), g.K[0])
    X1 = transform(g.T_1_0, X0)
    xy1 = project(X1, g.K[1])
    inside = (xy1[:, 0] > -0.5) & (xy1[:, 0] < W - 0.5) & (xy1[:, 1] > -0.5) & (xy1[:, 1] < H - 0.5)
    ok = (X0[:, 2] > 0) & (X1[:, 2] > 0) & inside
    z1 = np.zeros(len(xy0))
    xi = np.clip(np.rint(xy1[:, 0]).astype(int), 0, W - 1)
    yi = np.clip(np.rint(xy1[:, 1]).astype(int), 0, H - 1)
    z1[ok] = g.depth[1][yi[ok], xi[ok]]
    visible = ok & (z1 > 0) & (np.abs(z1 - X1[:, 2]) < rel_tol * X1[:, 2])
    return xy1, visible


def load_pair(reader: MatchReader, pair: MatchPair, size: int, patch_size: int) -> PairGeometry:
    """Network images of a pair, ground truth resampled onto them (nearest), network ``K``, ``T_1_0``."""
    from recon.images import load_images

    views, skipped = load_images(
        list(pair.image_paths), size=size, patch_size=patch_size, square_ok=patch_size != 16, skip_duplicates=False
    )
    if skipped or len(views) != 2:
        raise DatasetError(f"pair {pair.name}: cannot load " + "; ".join(f"{s[0]}: {s[1]}" for s in skipped))
    depths, Ks = [], []
    for k, v in enumerate(views):
        A = np.asarray(v.net_to_orig, dtype=np.float64)
        Ks.append(np.linalg.inv(A) @ pair.K[k])
        if not pair.has_depth:
            depths.append(np.zeros(v.true_shape, np.float32))  # pose metrics only
            continue
        gt = reader.depth(pair, k)
        G = orig_to_grid(v.orig_size, gt.shape) @ A  # network pixel -> ground-truth pixel
        h, w = v.true_shape
        xy = pixel_grid(h, w)
        xg = np.clip(np.rint(G[0, 0] * xy[..., 0] + G[0, 2]).astype(int), 0, gt.shape[1] - 1)
        yg = np.clip(np.rint(G[1, 1] * xy[..., 1] + G[1, 2]).astype(int), 0, gt.shape[0] - 1)
        depths.append(gt[yg, xg])
    return PairGeometry((views[0].image, views[1].image), (depths[0], depths[1]), (Ks[0], Ks[1]), pair.T_1_0)


# --- features -------------------------------------------------------------------------------------------------------

FeatureFn = Callable[[torch.Tensor], torch.Tensor]
"""``image [3, H, W]`` in [0, 1] -> patch features ``[h, w, D]``."""


def backbone_features(model, layernorm: bool) -> FeatureFn:
    """Frozen encoder features of a recon model's backbone, after (``x_norm_patchtokens``) or before
    (``x_prenorm``) its final LayerNorm."""
    backbone = model.backbone if hasattr(model, "backbone") else model
    p = int(backbone.spec.patch_size)
    prefix = int(backbone.num_prefix_tokens)
    device = next(backbone.parameters()).device

    @torch.no_grad()
    def fn(image: torch.Tensor) -> torch.Tensor:
        H, W = image.shape[-2:]
        out = backbone.forward_features(image[None].to(device))
        tokens = out["x_norm_patchtokens"] if layernorm else out["x_prenorm"][:, prefix:]
        return tokens[0].float().cpu().reshape(H // p, W // p, -1)

    return fn


# --- cosine protocol ---------------------------------------------------------------------------------------------


def _grid_centres(h: int, w: int, stride: float) -> np.ndarray:
    """``[h*w, 2]`` pixel centres (x, y) of an ``h x w`` grid of cells ``stride`` pixels wide."""
    return (pixel_grid(h, w).reshape(-1, 2) + 0.5) * stride - 0.5


def _top2_cosine(a: torch.Tensor, b: torch.Tensor, chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of ``a [M, D]``: cosine distances to its two nearest rows of ``b [N, D]`` and their indices."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    k = min(2, b.shape[0])
    dists, idx = [], []
    for s in range(0, a.shape[0], chunk):
        sim = a[s : s + chunk] @ b.T
        v, i = sim.topk(k, dim=-1)
        dists.append(1 - v)
        idx.append(i)
    return torch.cat(dists), torch.cat(idx)


def cosine_probe(feat0: torch.Tensor, feat1: torch.Tensor, g: PairGeometry, *, scale: float = 0.25,
                 num_corr: int = 1000) -> dict[str, float]:  # fmt: skip
    """Probe3D correspondence recall for one pair.

    Args:
        feat0, feat1: ``[h, w, D]`` patch features of the two network images.
        g: the pair's geometry on the network grid.
        scale: grid resolution relative to the network image (Probe3D: 0.25).
        num_corr: matches kept by ratio-test weight (Probe3D: 1000).

    Returns:
        ``recall_3d@{1,2,5}cm``, ``recall_2d@{5,25,50}px`` (percent) and ``matches``.
    """
    H, W = g.depth[0].shape
    gh, gw = max(1, round(H * scale)), max(1, round(W * scale))
    stride = H / gh

    def grid(feat, k):
        up = F.interpolate(feat.permute(2, 0, 1)[None], size=(gh, gw), mode="bicubic", align_corners=False)[0]
        xy = _grid_centres(gh, gw, stride)
        X = unproject_points(xy, _depth_at(g.depth[k], xy), g.K[k])
        valid = X[:, 2] > 0
        return up.permute(1, 2, 0).reshape(-1, feat.shape[-1])[torch.from_numpy(valid)], X[valid], valid.sum()

    f0, X0, n0 = grid(feat0, 0)
    f1, X1, n1 = grid(feat1, 1)
    if n0 == 0 or n1 == 0:
        return {**{f"recall_3d@{t * 100:g}cm": 0.0 for t in RECALL_3D},
                **{f"recall_2d@{t:g}px": 0.0 for t in RECALL_2D}, "matches": 0}  # fmt: skip
    d, idx = _top2_cosine(f0, f1)
    weight = 1 - d[:, 0] / d[:, 1].clamp(min=1e-9) if d.shape[1] > 1 else 1 - d[:, 0]
    keep = weight.topk(min(num_corr, len(weight))).indices
    c0 = X0[keep.numpy()]
    c1 = X1[idx[keep, 0].numpy()]
    c0_in1 = transform(g.T_1_0, c0)
    err3d = np.linalg.norm(c0_in1 - c1, axis=1)
    front = c0_in1[:, 2] > 0  # a point behind camera 1 has no pixel there: an infinite 2D error
    err2d = np.full(len(c0), np.inf)
    err2d[front] = np.linalg.norm(project(c0_in1[front], g.K[1]) - project(c1[front], g.K[1]), axis=1)
    out = {f"recall_3d@{t * 100:g}cm": 100.0 * float((err3d < t).mean()) for t in RECALL_3D}
    out |= {f"recall_2d@{t:g}px": 100.0 * float((err2d < t).mean()) for t in RECALL_2D}
    out["matches"] = len(keep)
    return out


def dense_epe(feat0: torch.Tensor, feat1: torch.Tensor, g: PairGeometry) -> tuple[float, int]:
    """Mean end-point error (network pixels) of cosine nearest-neighbour matches of visible patch centres.

    Returns:
        ``(epe, count)``; NaN and 0 when no patch centre of image 0 is visible in image 1.
    """
    h, w, D = feat0.shape
    H = g.depth[0].shape[0]
    stride = H / h
    xy0 = _grid_centres(h, w, stride)
    xy1_gt, vis = gt_matches(g, xy0)
    if not vis.any():
        return float("nan"), 0
    _, idx = _top2_cosine(feat0.reshape(-1, D)[torch.from_numpy(vis)], feat1.reshape(-1, feat1.shape[-1]))
    h1, w1 = feat1.shape[:2]
    xy1_pred = _grid_centres(h1, w1, stride)[idx[:, 0].numpy()]
    return float(np.linalg.norm(xy1_pred - xy1_gt[vis], axis=1).mean()), int(vis.sum())


def pair_rotation_deg(g: PairGeometry) -> float:
    """Relative rotation angle of a pair in degrees."""
    from tools.eval.metrics import rotation_error_deg

    return float(rotation_error_deg(np.eye(3)[None], g.T_1_0[None, :3, :3])[0])


def average_recall(metrics: dict[str, float]) -> float:
    """Mean of the three 3D recalls (MuM Table 13's 'average recall' on NAVI)."""
    return float(np.mean([metrics[f"recall_3d@{t * 100:g}cm"] for t in RECALL_3D]))


def run_cosine(reader: MatchReader, feature_fns: dict[str, FeatureFn], size: int, patch_size: int,
               max_pairs: int | None = None) -> dict:  # fmt: skip
    """Cosine protocol over the reader's pairs for each feature variant (e.g. ``{"ln": .., "no-ln": ..}``).

    Returns:
        ``{"variants": {name: {metric: mean over pairs}}, "best": name, "pairs": n}``; the best variant has the
        highest average recall (lowest EPE on ties).
    """
    pairs = reader.pairs[:max_pairs] if max_pairs else reader.pairs
    missing = [p.name for p in pairs if not p.has_depth]
    if missing:
        raise DatasetError(f"the cosine protocol needs depth for both images; pairs without: {missing[:5]}")
    per: dict[str, list[dict]] = {k: [] for k in feature_fns}
    angles = []
    for pair in pairs:
        g = load_pair(reader, pair, size, patch_size)
        angles.append(pair_rotation_deg(g))
        for name, fn in feature_fns.items():
            f0, f1 = fn(g.images[0]), fn(g.images[1])
            m = cosine_probe(f0, f1, g)
            m["epe"], m["epe_points"] = dense_epe(f0, f1, g)
            per[name].append(m)
    angles = np.array(angles)
    variants = {}
    for name, recs in per.items():
        keys = [k for k in recs[0] if k not in ("matches", "epe_points")]
        variants[name] = {k: float(np.nanmean([r[k] for r in recs])) for k in keys}
        variants[name]["avg_recall"] = average_recall(variants[name])
        # Probe3D also bins recall at 2 cm by the pair's relative rotation
        rec2 = np.array([r["recall_3d@2cm"] for r in recs])
        for lo, hi in zip(VIEW_BINS[:-1], VIEW_BINS[1:], strict=True):
            sel = (angles >= lo) & (angles < hi)
            variants[name][f"recall_3d@2cm_rot{lo}-{hi}"] = float(rec2[sel].mean()) if sel.any() else float("nan")
    best = max(variants, key=lambda k: (variants[k]["avg_recall"], -np.nan_to_num(variants[k]["epe"], nan=1e9)))
    return {"variants": variants, "best": best, "pairs": len(pairs)}


# --- linear probe + kernel-softmax matcher + pose AUC ----------------------------------------------------------


@dataclass(frozen=True)
class ProbeConfig:
    """Linear-probe training. MuM: 25k steps, batch 8, eval every 2,500, best kept, small lr / wd sweep."""

    steps: int = 200
    """Optimiser steps."""
    batch: int = 8
    """Pairs per step."""
    lr: float = 1e-3
    weight_decay: float = 0.0
    eval_every: int = 50
    """Validation (mean NLL of the GT patches on the held-out pairs) every this many steps; the best W is kept."""
    temperature: float = 0.05
    """Kernel temperature tau of the softmax over image-1 patches (on L2-normalised projected features)."""
    seed: int = 0


class LinearMatcher(torch.nn.Module):
    """``W`` (``D x D``, identity at start) and the kernel-softmax matcher over normalised projected features."""

    def __init__(self, dim: int, temperature: float = 0.05):
        super().__init__()
        self.proj = torch.nn.Linear(dim, dim, bias=False)
        torch.nn.init.eye_(self.proj.weight)
        self.temperature = temperature

    def log_scores(self, f0: torch.Tensor, f1: torch.Tensor) -> torch.Tensor:
        """``[M, D]``, ``[N, D]`` -> ``[M, N]`` log-softmax over image 1's patches."""
        a = F.normalize(self.proj(f0), dim=-1)
        b = F.normalize(self.proj(f1), dim=-1)
        return torch.log_softmax(a @ b.T / self.temperature, dim=-1)

    @torch.no_grad()
    def warp(self, f0: torch.Tensor, f1: torch.Tensor, centres1: torch.Tensor, radius: int = 1):
        """Dense warp: soft-argmax of the scores in the ``(2 radius + 1)^2`` patches around each best patch.

        Args:
            f0: ``[h0, w0, D]``; f1: ``[h1, w1, D]``; centres1: ``[h1*w1, 2]`` pixel centres of image 1's patches.

        Returns:
            ``(xy1 [h0*w0, 2], certainty [h0*w0])``: matched pixel and the probability of the best patch.
        """
        h1, w1 = f1.shape[:2]
        logp = self.log_scores(f0.reshape(-1, f0.shape[-1]), f1.reshape(-1, f1.shape[-1]))
        p = logp.exp()
        best = p.argmax(-1)
        by, bx = best // w1, best % w1
        dy, dx = torch.meshgrid(torch.arange(-radius, radius + 1), torch.arange(-radius, radius + 1), indexing="ij")
        ny = (by[:, None] + dy.reshape(1, -1)).clamp(0, h1 - 1)
        nx = (bx[:, None] + dx.reshape(1, -1)).clamp(0, w1 - 1)
        nb = ny * w1 + nx  # M x K
        wts = torch.gather(p, 1, nb)
        wts = wts / wts.sum(-1, keepdim=True).clamp(min=1e-12)
        xy = (wts[..., None] * centres1[nb]).sum(1)
        return xy, p.gather(1, best[:, None])[:, 0]


def _training_items(fn: FeatureFn, geoms: Sequence[PairGeometry]) -> list[tuple]:
    """Per pair: features of both images and (query patch indices, GT patch indices in image 1)."""
    items = []
    for g in geoms:
        f0, f1 = fn(g.images[0]), fn(g.images[1])
        h, w = f0.shape[:2]
        h1, w1 = f1.shape[:2]
        stride = g.depth[0].shape[0] / h
        xy1, vis = gt_matches(g, _grid_centres(h, w, stride))
        col = np.clip(np.floor((xy1[:, 0] + 0.5) / stride).astype(int), 0, w1 - 1)
        row = np.clip(np.floor((xy1[:, 1] + 0.5) / stride).astype(int), 0, h1 - 1)
        q = np.flatnonzero(vis)
        items.append((f0.reshape(-1, f0.shape[-1]), f1.reshape(-1, f1.shape[-1]), torch.from_numpy(q),
                      torch.from_numpy(row[q] * w1 + col[q])))  # fmt: skip
    return items


def _nll(matcher: LinearMatcher, items) -> torch.Tensor:
    losses = [-matcher.log_scores(f0[q], f1).gather(1, t[:, None]).mean() for f0, f1, q, t in items if len(q)]
    return torch.stack(losses).mean() if losses else torch.zeros(())


def train_linear_probe(fn: FeatureFn, train: Sequence[PairGeometry], val: Sequence[PairGeometry],
                       config: ProbeConfig = ProbeConfig()) -> tuple[LinearMatcher, list[dict]]:  # fmt: skip
    """Train ``W`` on frozen features by the log-softmax of the ground-truth patch; keep the best on ``val``.

    Returns:
        ``(matcher with the best W, history [{"step", "train_nll", "val_nll"}])``.
    """
    torch.manual_seed(config.seed)
    tr, va = _training_items(fn, train), _training_items(fn, val)
    if not any(len(q) for *_, q, _t in tr):
        raise DatasetError("no training pair has a visible ground-truth correspondence")
    matcher = LinearMatcher(tr[0][0].shape[-1], config.temperature)
    opt = torch.optim.AdamW(matcher.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    rng = np.random.default_rng(config.seed)
    best, best_state, history = float("inf"), None, []
    for step in range(1, config.steps + 1):
        batch = [tr[k] for k in rng.integers(0, len(tr), size=config.batch)]
        loss = _nll(matcher, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % config.eval_every == 0 or step == config.steps:
            with torch.no_grad():
                v = float(_nll(matcher, va or tr))
            history.append({"step": step, "train_nll": loss.item(), "val_nll": v})
            if v < best:
                best, best_state = v, {k: t.clone() for k, t in matcher.state_dict().items()}
    matcher.load_state_dict(best_state)
    return matcher, history


def pose_auc(errors_deg: Sequence[float], thresholds: Sequence[float] = AUC_THRESHOLDS) -> dict[str, float]:
    """Normalised area under the recall curve of pose errors up to each threshold, in percent.

    As LoFTR / DKM / RoMa compute it: the recall curve passes through ``(0, 0)`` and ``(e_k, k / n)`` for the
    sorted errors, linearly between them and flat after the last error below the threshold; its trapezoid
    integral from 0 to the threshold is divided by the threshold.
    """
    e = np.concatenate([[0.0], np.sort(np.asarray(errors_deg, dtype=np.float64))])
    r = np.linspace(0.0, 1.0, len(e))
    out = {}
    for t in thresholds:
        k = int(np.searchsorted(e, t))  # points strictly below t (e[0] = 0 always is)
        x = np.concatenate([e[:k], [t]])
        y = np.concatenate([r[:k], [r[k - 1]]])
        area = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))
        out[f"AUC@{t:g}"] = 100.0 * area / t
    return out


def probe_pose_errors(matcher: LinearMatcher, fn: FeatureFn, geoms: Sequence[PairGeometry],
                      num_matches: int = 5000, ransac_px: float = 1.0) -> list[float]:  # fmt: skip
    """Per pair ``max(rotation, translation-direction)`` error in degrees of the pose from the probe's warp
    (180 where no pose is found)."""
    from tools.eval.metrics import rotation_error_deg, translation_error_deg
    from tools.eval.pairwise import relative_pose_from_matches

    errs = []
    for g in geoms:
        f0, f1 = fn(g.images[0]), fn(g.images[1])
        stride = g.depth[0].shape[0] / f0.shape[0]
        c0 = _grid_centres(*f0.shape[:2], stride)
        c1 = torch.from_numpy(_grid_centres(*f1.shape[:2], stride)).float()
        xy1, cert = matcher.warp(f0, f1, c1)
        pose = relative_pose_from_matches(
            c0, xy1.numpy(), g.K[0], g.K[1], ransac_px=ransac_px, max_matches=num_matches, weights=cert.numpy()
        )
        if not pose.ok:
            errs.append(180.0)
            continue
        T = pose.T_j_i
        r = float(rotation_error_deg(g.T_1_0[None, :3, :3], T[None, :3, :3])[0])
        t = float(translation_error_deg(g.T_1_0[None, :3, 3], T[None, :3, 3])[0])
        errs.append(max(r, t))
    return errs


# --- converters from release files --------------------------------------------------------------------------------


def scannet1500_pairs(root: str | os.PathLike, npz: str | os.PathLike, intrinsics: str | os.PathLike) -> dict:
    """``pairs.json`` content for the LoFTR ScanNet-1500 test pairs.

    Facts of the release (LoFTR ``ScanNetDataset``): ``npz["name"]`` is ``[N, 4]`` integers (scene, sub-scene,
    frame 0, frame 1); images are ``ROOT/scene{scene:04d}_{sub:02d}/color/{frame}.jpg``; ``intrinsics.npz`` maps
    the scene folder name to a 3x3 ``K`` for 640x480 images (LoFTR resizes every image to that); poses are
    camera-to-world 4x4 text files ``.../pose/{frame}.txt``. ``K`` is rescaled to each image's size on disk;
    ``depth/{frame}.png`` is listed where it exists (the test release has none: pose AUC only).

    Both ``.npz`` files are read with ``allow_pickle=False``: object arrays are refused.
    """
    from PIL import Image

    root = Path(root)
    try:
        with np.load(npz, allow_pickle=False) as data:
            names = np.asarray(data["name"])
        with np.load(intrinsics, allow_pickle=False) as data:
            Ks = {k: np.asarray(data[k], dtype=np.float64).reshape(3, 3) for k in data.files}
    except (OSError, ValueError, KeyError) as err:
        raise DatasetError(f"cannot read the ScanNet-1500 files {npz} / {intrinsics}: {err}") from None
    if names.ndim != 2 or names.shape[1] != 4 or not np.issubdtype(names.dtype, np.integer):
        raise DatasetError(f"{npz}: 'name' must be an [N, 4] integer array, got {names.dtype} {names.shape}")
    pairs = []
    for scene, sub, f0, f1 in names.tolist():
        folder = f"scene{scene:04d}_{sub:02d}"
        if folder not in Ks:
            raise DatasetError(f"{intrinsics} has no intrinsics for {folder}")
        rec = {"name": f"{folder}/{f0}_{f1}"}
        for k, frame in enumerate((f0, f1)):
            image = f"{folder}/color/{frame}.jpg"
            pose = root / folder / "pose" / f"{frame}.txt"
            try:
                with Image.open(root / image) as im:
                    W, H = im.size
                T = np.loadtxt(pose, dtype=np.float64).reshape(4, 4)
            except (OSError, ValueError) as err:
                raise DatasetError(f"pair {rec['name']}: {err}") from None
            K = np.diag([W / 640.0, H / 480.0, 1.0]) @ Ks[folder]  # K of 640x480 -> this image (pixel edges)
            rec |= {f"image{k}": image, f"K{k}": K.tolist(), f"T_world_cam{k}": T.tolist()}
            depth = f"{folder}/depth/{frame}.png"
            if (root / depth).is_file():
                rec[f"depth{k}"] = depth
        if ("depth0" in rec) != ("depth1" in rec):
            rec.pop("depth0", None)
            rec.pop("depth1", None)
        pairs.append(rec)
    return {"dataset": "scannet1500", "pairs": pairs}
