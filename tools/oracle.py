"""An oracle "network": pair predictions and matches derived from ground truth, with controlled errors.

``oracle_predictions`` turns views with known depth, intrinsics and poses (e.g. ``tools.synth.render_scene``)
into exactly what the inference and matching steps would hand to ``recon.align``: for each ordered pair a point
map of both views in camera ``i``'s frame, at an unknown per-pair scale (as a network predicts up to scale),
with multiplicative depth noise drawn independently per pair, and per-pixel confidences; for each unordered
pair a set of pixel correspondences of which a chosen fraction is wrong. It lets users and evaluations check
the alignment (and anything downstream) against known cameras without a trained model.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch

from recon.geometry import invert, project, transform, unproject, unproject_points
from recon.types import Matches, PairPrediction, View

logger = logging.getLogger(__name__)


class GroundTruthView(Protocol):
    """What the oracle reads from a view (``tools.synth.SynthView`` fits)."""

    name: str
    rgb: np.ndarray  # [H,W,3] uint8
    depth: np.ndarray  # [H,W] float32 z-depth, 0 = invalid
    K: np.ndarray  # [3,3]
    T_world_cam: np.ndarray  # [4,4]


def _valid(v: GroundTruthView) -> np.ndarray:
    depth = np.asarray(v.depth, np.float64)
    ok = np.isfinite(depth) & (depth > 0)
    mask = getattr(v, "mask", None)
    return ok & np.asarray(mask, bool) if mask is not None else ok


def _check(gt_views: Sequence[GroundTruthView], pairs) -> list[tuple[int, int]]:
    n = len(gt_views)
    if n == 0:
        raise ValueError("oracle_predictions needs at least one view")
    for k, v in enumerate(gt_views):
        if v.depth is None or v.rgb is None:
            raise ValueError(f"view {k} ({v.name!r}) lacks depth or rgb; the oracle needs both")
        H, W = np.shape(v.depth)
        if np.shape(v.rgb) != (H, W, 3):
            raise ValueError(f"view {k}: rgb {np.shape(v.rgb)} does not match depth {(H, W)}")
        if np.shape(v.K) != (3, 3) or np.shape(v.T_world_cam) != (4, 4):
            raise ValueError(f"view {k}: need K [3,3] and T_world_cam [4,4]")
    out = []
    for p in pairs:
        i, j = (int(x) for x in p)
        if not (0 <= i < n and 0 <= j < n) or i == j:
            raise ValueError(f"pair {tuple(p)} does not name two different views among {n}")
        out.append((i, j))
    return out


def oracle_predictions(
    gt_views: Sequence[GroundTruthView],
    pairs: Sequence[tuple[int, int]],
    *,
    depth_noise: float = 0.01,
    wrong_match_frac: float = 0.1,
    n_matches: int = 512,
    scale_range: tuple[float, float] = (0.5, 2.0),
    focal_noise: float = 0.0,
    conf_range: tuple[float, float] = (3.0, 10.0),
    seed: int = 0,
) -> tuple[list[View], list[PairPrediction], list[Matches]]:
    """Pair predictions and matches computed from ground truth.

    Args:
        gt_views: N views with ``rgb [H, W, 3]`` uint8, ``depth [H, W]`` z-depth (0 = invalid; an optional
            ``mask`` is honoured), ``K [3, 3]``, ``T_world_cam [4, 4]`` and ``name``.
        pairs: ordered pairs ``(i, j)``; one ``PairPrediction`` per entry, one ``Matches`` per unordered pair.
        depth_noise: std of the multiplicative depth noise ``depth·(1 + ε)``, drawn per pair and per pixel.
        wrong_match_frac: fraction of each pair's matches whose second pixel is replaced by a random pixel.
        n_matches: matches per unordered pair (fewer where the views overlap less).
        scale_range: per-pair scale factor, log-uniform in this range (a network's unknown scale).
        focal_noise: std of a relative per-pair, per-view focal error used to back-project the point maps
            (a network's point maps rarely agree exactly with one pinhole camera); 0 keeps rays exact.
        conf_range: point confidences on valid pixels are uniform in this range; invalid pixels get 1.0.
        seed: seed of every random draw.

    Returns:
        ``(views, preds, matches)``: ``View`` s (``image [3, H, W]`` float32 in [0, 1]), ``PairPrediction`` s with
        float16 ``pts3d_i / pts3d_j [H, W, 3]`` and ``conf_i / conf_j [H, W]`` (no descriptors), and ``Matches``
        with int64 ``(x, y)`` pixels and float32 confidences.

    Raises:
        ValueError: a view without depth or rgb, inconsistent shapes, or a bad pair.
    """
    pairs = _check(gt_views, pairs)
    if not 0 <= wrong_match_frac <= 1:
        raise ValueError(f"wrong_match_frac must be in [0, 1], got {wrong_match_frac}")
    rng = np.random.default_rng(seed)
    views = [
        View(
            image=torch.from_numpy(np.ascontiguousarray(np.asarray(v.rgb).transpose(2, 0, 1))).float() / 255.0,
            idx=k,
            name=str(v.name),
            orig_size=tuple(np.shape(v.depth)),
        )
        for k, v in enumerate(gt_views)
    ]
    valid = [_valid(v) for v in gt_views]
    T_wc = [np.asarray(v.T_world_cam, np.float64) for v in gt_views]
    Ks = [np.asarray(v.K, np.float64) for v in gt_views]
    far = float(max(np.asarray(v.depth)[m].max() if m.any() else 1.0 for v, m in zip(gt_views, valid, strict=True)))

    def noisy_points(k: int) -> tuple[np.ndarray, np.ndarray]:
        """Camera-k points with fresh noise, and their confidences."""
        depth = np.where(valid[k], np.asarray(gt_views[k].depth, np.float64), 2.0 * far)
        depth = depth * (1.0 + depth_noise * rng.standard_normal(depth.shape))
        K = Ks[k].copy()
        if focal_noise > 0:
            K[0, 0] *= 1.0 + focal_noise * rng.standard_normal()
            K[1, 1] = K[0, 0] * Ks[k][1, 1] / Ks[k][0, 0]
        conf = np.where(valid[k], rng.uniform(*conf_range, size=depth.shape), 1.0)
        return unproject(depth, K), conf

    preds = []
    for i, j in pairs:
        s = float(np.exp(rng.uniform(np.log(scale_range[0]), np.log(scale_range[1]))))
        Pi, Ci = noisy_points(i)
        Pj, Cj = noisy_points(j)
        Pj = transform(invert(T_wc[i]) @ T_wc[j], Pj)
        preds.append(
            PairPrediction(
                i=i,
                j=j,
                pts3d_i=torch.from_numpy(s * Pi).half(),
                pts3d_j=torch.from_numpy(s * Pj).half(),
                conf_i=torch.from_numpy(Ci).half(),
                conf_j=torch.from_numpy(Cj).half(),
            )
        )

    matches = []
    seen = set()
    for i, j in pairs:
        if (min(i, j), max(i, j)) in seen:
            continue
        seen.add((min(i, j), max(i, j)))
        matches.append(_oracle_matches(gt_views, valid, Ks, T_wc, i, j, n_matches, wrong_match_frac, rng))
    logger.debug("oracle: %d pair predictions, %d match sets", len(preds), len(matches))
    return views, preds, matches


def _oracle_matches(gt_views, valid, Ks, T_wc, i, j, n_matches, wrong_frac, rng) -> Matches:
    """Correct correspondences by projecting view i's GT points into view j (visibility by depth test)."""
    Hi, Wi = valid[i].shape
    Hj, Wj = valid[j].shape
    cand = np.flatnonzero(valid[i].reshape(-1))
    cand = rng.choice(cand, min(len(cand), 8 * n_matches), replace=False) if len(cand) else cand
    yi, xi = np.divmod(cand, Wi)
    zi = np.asarray(gt_views[i].depth, np.float64)[yi, xi]
    Xc = unproject_points(np.stack([xi, yi], -1), zi, Ks[i])
    Xj = transform(invert(T_wc[j]) @ T_wc[i], Xc)
    u, v = project(Xj, Ks[j]).T
    xj, yj = np.rint(np.nan_to_num(u, nan=-1)).astype(np.int64), np.rint(np.nan_to_num(v, nan=-1)).astype(np.int64)
    ok = (Xj[:, 2] > 0) & (xj >= 0) & (xj < Wj) & (yj >= 0) & (yj < Hj)
    xj_c, yj_c = np.where(ok, xj, 0), np.where(ok, yj, 0)
    dj = np.asarray(gt_views[j].depth, np.float64)[yj_c, xj_c]
    ok &= valid[j][yj_c, xj_c] & (np.abs(dj - Xj[:, 2]) < 0.02 * Xj[:, 2])  # visible, not occluded
    sel = np.flatnonzero(ok)[:n_matches]
    xy_i = np.stack([xi[sel], yi[sel]], -1).astype(np.int64)
    xy_j = np.stack([xj[sel], yj[sel]], -1).astype(np.int64)
    n_wrong = int(round(wrong_frac * len(sel)))
    if n_wrong:
        bad = rng.choice(len(sel), n_wrong, replace=False)
        xy_j[bad] = np.stack([rng.integers(0, Wj, n_wrong), rng.integers(0, Hj, n_wrong)], -1)
    conf = rng.uniform(1.5, 3.0, len(sel)).astype(np.float32)
    return Matches(i=i, j=j, xy_i=xy_i, xy_j=xy_j, conf=conf)


class OracleModel(torch.nn.Module):
    """A stand-in for a binocular network that predicts the ground truth of known views.

    It implements the model protocol the pipeline uses (``encode`` / ``decode``, ``patch_size``,
    ``image_size``), so ``recon.reconstruct(views, OracleModel(gt))`` runs every step around the network —
    pairing, encode-once inference, reciprocal matching, alignment, export — on exact geometry:

    - point maps of both views in camera ``i``'s frame, times an unknown per-pair scale in [0.5, 1.5);
    - confidence 10 where the ground truth is valid, 1.01 elsewhere;
    - 24-d descriptors that are random Fourier features of the world point (frequencies from scene scale down to
      a few centimetres), so the real matcher finds true correspondences.

    Images are recognised by their pixel sum, so the views given to ``reconstruct`` must be the ground-truth
    images at the ground-truth size (no resizing).

    Args:
        gt_views: views with ``rgb [H,W,3]``, ``depth [H,W]`` (0 = invalid), ``K`` and ``T_world_cam``.
        seed: seeds the descriptor frequencies and the per-pair scales.
    """

    patch_size = 16

    def __init__(self, gt_views: Sequence[GroundTruthView], seed: int = 0):
        super().__init__()
        self._anchor = torch.nn.Parameter(torch.zeros(()))  # gives the module a device
        self.gt = list(gt_views)
        self.seed = seed
        self.image_size = max(max(v.rgb.shape[:2]) for v in self.gt)
        rng = np.random.default_rng(seed)
        freqs = np.geomspace(0.5, 40.0, 12)[:, None] * rng.standard_normal((12, 3))
        self._freqs = torch.tensor(freqs, dtype=torch.float32)
        self._keys = np.array([v.rgb.astype(np.float64).sum() / 255 for v in self.gt])
        self.encoded_images = 0

    def _index(self, image: torch.Tensor) -> int:
        return int(np.argmin(np.abs(self._keys - float(image.double().sum()))))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``[B,3,H,W]`` -> ``[B, h*w, 1]`` tokens that carry the view index."""
        self.encoded_images += images.shape[0]
        idx = torch.tensor([self._index(im) for im in images], dtype=torch.float32)
        n = (images.shape[-2] // self.patch_size) * (images.shape[-1] // self.patch_size)
        return idx[:, None, None].expand(-1, n, 1).clone()

    def _world(self, k: int) -> np.ndarray:
        v = self.gt[k]
        return transform(v.T_world_cam, unproject(np.asarray(v.depth, np.float64), v.K))

    def decode(self, feat1, feat2, shape1, shape2):
        """Ground-truth predictions for each ``(i, j)`` of the batch, as the model's ``decode`` returns them."""
        out: tuple[list, list] = ([], [])
        for a, b in zip(feat1[:, 0, 0].long().tolist(), feat2[:, 0, 0].long().tolist(), strict=True):
            scale = 0.5 + np.random.default_rng([self.seed, a, b]).random()
            T_cam_world = invert(self.gt[a].T_world_cam)
            for slot, k in enumerate((a, b)):
                Xw = self._world(k)
                pts = transform(T_cam_world, Xw) * scale
                valid = torch.from_numpy(self.gt[k].depth > 0)
                phase = torch.from_numpy(Xw).float() @ self._freqs.T
                desc = torch.nn.functional.normalize(torch.cat([phase.sin(), phase.cos()], -1), dim=-1)
                out[slot].append(
                    {
                        "pts3d": torch.from_numpy(pts).float(),
                        "conf": torch.where(valid, 10.0, 1.01),
                        "desc": desc,
                        "desc_conf": torch.where(valid, 10.0, 0.01),
                    }
                )
        return tuple({key: torch.stack([d[key] for d in ds]) for key in ds[0]} for ds in out)
