"""Pair datasets for decoder finetuning: sources, the weighted mixture, and the one-aspect-per-batch sampler.

A **source** yields pairs of ``Frame`` s (image, depth, cameras) at their native size:

- ``SyntheticPairs``: scenes of ``tools.synth.render_scene`` (exact depth and cameras; rays that hit nothing are
  sky); a view is paired with another view of its scene.
- ``Co3dPairs``: the published CO3Dv2 layout (``<category>/frame_annotations.jgz``, set lists, images, depth
  PNGs with ``scale_adjustment``, depth masks, foreground masks), cameras converted with the evaluation
  protocol's ``recon.datasets.cameras.co3d_viewpoint_to_opencv``; a frame is paired with another frame of its
  sequence at most ``max_frame_gap`` frames away.

``PairDataset`` turns a source pair into a training sample at the resolution the batch sampler chose (crop
around the principal point + resize, ``geometry.crop_resize``), with colour jitter, ground-truth
correspondences and point maps. ``MixtureDataset`` concatenates datasets with weights (MASt3R's ``N @ D + ...``);
``AspectBatchSampler`` groups the infinite sampler's items into batches and draws **one resolution and
orientation per batch** (MASt3R's ``BatchedRandomSampler``), identically on every rank.

Every random choice of a sample comes from its per-sample seed (``InfiniteDistributedSampler(with_seeds=True)``),
so samples do not depend on the number of workers and a resumed run sees the same data.
"""

from __future__ import annotations

import json
import logging
import math
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from training.common.config import DataConfigError
from training.common.data import InfiniteDistributedSampler, sample_seed
from training.finetune.geometry import (
    Frame,
    best_crop_pair,
    crop_homography,
    crop_resize,
    reciprocal_matches,
    sample_correspondences,
    with_points,
)

logger = logging.getLogger(__name__)

# Training resolutions (W, H), landscape; portrait batches use (H, W). DUNE supplementary B: the decoder of a
# backbone distilled at 336 is finetuned at 448 px, at 448 -> 518 px; MASt3R's list for patch-16 encoders.
RESOLUTIONS: dict[str, tuple[tuple[int, int], ...]] = {
    "dune336": ((448, 448), (448, 336), (448, 294), (448, 252), (448, 224), (448, 140)),
    "dune448": ((518, 518), (518, 392), (518, 336), (518, 294), (518, 252), (518, 168)),
    "mast3r512": ((512, 384), (512, 336), (512, 288), (512, 256), (512, 160)),
}


def check_resolutions(resolutions: Sequence[Sequence[int]], patch_size: int) -> tuple[tuple[int, int], ...]:
    """Validate ``[(W, H)]``: positive multiples of ``patch_size``.

    Raises:
        DataConfigError: naming the offending entry.
    """
    out = []
    for res in resolutions:
        if len(res) != 2:
            raise DataConfigError(f"a resolution is [W, H], got {list(res)}")
        W, H = int(res[0]), int(res[1])
        if W <= 0 or H <= 0 or W % patch_size or H % patch_size:
            raise DataConfigError(f"resolution {W}x{H} is not a positive multiple of the patch size {patch_size}")
        out.append((W, H))
    if not out:
        raise DataConfigError("no training resolution given")
    return tuple(out)


# ---------------------------------------------------------------------------------------------- sources
class SyntheticPairs:
    """Pairs of views of synthetic scenes (``tools.synth.render_scene``), rendered lazily and cached per process.

    Args:
        scenes: number of scenes; scene ``s`` is drawn from seed ``seed + s``.
        views_per_scene: views rendered per scene.
        size: ``(W, H)`` render size.
        layout: ``orbit``, ``room_walk`` or ``room_set``.
        seed: base seed.
        options: more ``render_scene`` options.
        cache_scenes: rendered scenes kept in memory per process.
        name: dataset name reported in samples.
        metric: whether the scene units are metric (synthetic units are consistent, so the default is True).
    """

    def __init__(
        self,
        scenes: int,
        views_per_scene: int,
        size: tuple[int, int],
        layout: str = "orbit",
        seed: int = 0,
        options: dict | None = None,
        cache_scenes: int = 64,
        name: str = "synthetic",
        metric: bool = True,
    ) -> None:
        if scenes <= 0 or views_per_scene < 2:
            raise DataConfigError(f"synthetic source needs scenes >= 1 and views_per_scene >= 2, got {scenes}, "
                                  f"{views_per_scene}")  # fmt: skip
        self.scenes, self.views = scenes, views_per_scene
        self.size, self.layout, self.seed = tuple(size), layout, seed
        self.options = dict(options or {})
        self.cache_scenes = cache_scenes
        self.name, self.metric = name, metric
        self._cache: OrderedDict[int, list[Frame]] = OrderedDict()

    def __len__(self) -> int:
        return self.scenes * self.views

    def _scene(self, s: int) -> list[Frame]:
        if s in self._cache:
            self._cache.move_to_end(s)
            return self._cache[s]
        from tools.synth import render_scene

        views = render_scene(self.layout, self.views, self.size, self.seed + s, **self.options)
        frames = [
            Frame(v.rgb, np.where(v.mask, v.depth, 0).astype(np.float32), v.K, v.T_world_cam, sky=~v.mask)
            for v in views
        ]
        self._cache[s] = frames
        while len(self._cache) > self.cache_scenes:
            self._cache.popitem(last=False)
        return frames

    def pair(self, index: int, rng: np.random.Generator) -> tuple[Frame, Frame]:
        """View ``index % views`` of scene ``index // views`` and another random view of that scene."""
        s, i = divmod(int(index), self.views)
        frames = self._scene(s)
        j = int(rng.integers(0, self.views - 1))
        j += j >= i
        return frames[i], frames[j]


class Co3dPairs:
    """Frame pairs of CO3Dv2 sequences, read from the published layout.

    Args:
        root: the folder holding one folder per category.
        categories: categories to use (default: every folder with the set list).
        subset: set-list name (``set_lists/set_lists_<subset>.json``), e.g. ``fewview_train``.
        split: key of the set list (``train``, ``val`` or ``test``).
        max_frame_gap: a frame is paired with one at most this many frames away in its sequence.
        mask_bg: ``none``; ``rand``: half of the views keep depth only on the foreground mask (DUSt3R's
            ``mask_bg='rand'``); ``always``.
        min_quality: drop sequences whose ``viewpoint_quality_score`` is not above this (``None``: keep all).
        name: dataset name reported in samples.
        metric: CO3D reconstructions have an arbitrary scale (MASt3R: not metric).
    """

    def __init__(
        self,
        root: str | Path,
        categories: Sequence[str] = (),
        subset: str = "fewview_train",
        split: str = "train",
        max_frame_gap: int = 10,
        mask_bg: str = "rand",
        min_quality: float | None = None,
        name: str = "co3d",
        metric: bool = False,
    ) -> None:
        from recon.datasets.cameras import co3d_viewpoint_to_opencv
        from recon.datasets.co3d import read_jgz

        self.root = Path(root)
        if not self.root.is_dir():
            raise DataConfigError(f"CO3D root {self.root} is not a folder")
        if mask_bg not in ("none", "rand", "always"):
            raise DataConfigError(f"mask_bg must be none, rand or always, got {mask_bg!r}")
        self.max_frame_gap, self.mask_bg = max(1, int(max_frame_gap)), mask_bg
        self.name, self.metric = name, metric
        cats = list(categories) or sorted(
            p.name for p in self.root.iterdir() if (p / "set_lists" / f"set_lists_{subset}.json").is_file()
        )
        if not cats:
            raise DataConfigError(f"no category under {self.root} has set_lists/set_lists_{subset}.json")
        records: list[dict] = []
        seq_ids: list[int] = []
        seq_index: dict[tuple[str, str], int] = {}
        for cat in cats:
            set_list_path = self.root / cat / "set_lists" / f"set_lists_{subset}.json"
            if not set_list_path.is_file():
                raise DataConfigError(f"missing set list {set_list_path}")
            entries = json.loads(set_list_path.read_text(encoding="utf-8")).get(split, [])
            quality = {
                str(a["sequence_name"]): a.get("viewpoint_quality_score")
                for a in read_jgz(self.root / cat / "sequence_annotations.jgz")
            }
            frames = {(str(a["sequence_name"]), int(a["frame_number"])): a
                      for a in read_jgz(self.root / cat / "frame_annotations.jgz")}  # fmt: skip
            for seq, fn, _ in sorted(entries, key=lambda e: (str(e[0]), int(e[1]))):
                q = quality.get(str(seq))
                if min_quality is not None and (q is None or not q > min_quality):
                    continue
                ann = frames.get((str(seq), int(fn)))
                if ann is None:
                    raise DataConfigError(f"{cat}: set list names frame {fn} of {seq!r}, absent from annotations")
                if "depth" not in ann or not ann["depth"]:
                    raise DataConfigError(f"{cat}/{seq} frame {fn} has no depth annotation; finetuning needs depth")
                H, W = (int(v) for v in ann["image"]["size"])
                T_world_cam, K = co3d_viewpoint_to_opencv(ann["viewpoint"], (H, W))
                key = (cat, str(seq))
                if key not in seq_index:
                    seq_index[key] = len(seq_index)
                seq_ids.append(seq_index[key])
                depth = ann["depth"]
                records.append({
                    "image": ann["image"]["path"],
                    "depth": depth["path"],
                    "scale": float(depth.get("scale_adjustment") or 1.0),
                    "depth_mask": depth.get("mask_path"),
                    "mask": (ann.get("mask") or {}).get("path"),
                    "K": K,
                    "T": T_world_cam,
                })  # fmt: skip
        if not records:
            raise DataConfigError(f"CO3D {self.root}: no frame in split {split!r} of {subset} for {cats}")
        self.records = records
        self.seq_ids = np.asarray(seq_ids, dtype=np.int64)
        # Frames of a sequence are contiguous (sorted above): [start, end) per frame for partner lookup.
        starts = np.r_[0, np.flatnonzero(np.diff(self.seq_ids)) + 1]
        ends = np.r_[starts[1:], len(self.seq_ids)]
        bounds = np.repeat(np.stack([starts, ends], 1), ends - starts, axis=0)
        self.bounds = bounds
        single = int(np.sum(ends - starts == 1))
        logger.info("co3d %s: %d frames in %d sequences (%d single-frame)", self.root, len(records), len(starts),
                    single)  # fmt: skip

    def __len__(self) -> int:
        return len(self.records)

    def _frame(self, i: int, rng: np.random.Generator) -> Frame:
        from PIL import Image

        from tools.synth.co3d import decode_depth_png

        rec = self.records[i]
        with Image.open(self.root / rec["image"]) as im:
            rgb = np.asarray(im.convert("RGB"))
        H, W = rgb.shape[:2]
        depth = decode_depth_png(self.root / rec["depth"], rec["scale"])
        if rec["depth_mask"]:
            depth = depth * (_read_gray(self.root / rec["depth_mask"], depth.shape) > 0.5)
        mask_bg = self.mask_bg == "always" or (self.mask_bg == "rand" and rng.integers(0, 2) == 1)
        if mask_bg and rec["mask"]:
            depth = depth * (_read_gray(self.root / rec["mask"], depth.shape) > 0.1)
        if depth.shape != (H, W):
            # Depth maps are stored at their own size in some releases: nearest sampling onto the image grid.
            rows = np.minimum(((np.arange(H) + 0.5) * depth.shape[0] / H).astype(np.int64), depth.shape[0] - 1)
            cols = np.minimum(((np.arange(W) + 0.5) * depth.shape[1] / W).astype(np.int64), depth.shape[1] - 1)
            depth = depth[np.ix_(rows, cols)]
        return Frame(rgb, depth.astype(np.float32), rec["K"], rec["T"], sky=None)

    def pair(self, index: int, rng: np.random.Generator) -> tuple[Frame, Frame]:
        """Frame ``index`` and a random frame of its sequence at most ``max_frame_gap`` away."""
        i = int(index)
        start, end = self.bounds[i]
        lo, hi = max(start, i - self.max_frame_gap), min(end - 1, i + self.max_frame_gap)
        if hi == lo:  # a single-frame sequence: both views are the same frame (MASt3R's monocular case)
            j = i
        else:
            j = int(rng.integers(lo, hi))
            j += j >= i
        return self._frame(i, rng), self._frame(j, rng)


def _read_gray(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A mask PNG as float ``[H, W]`` in [0, 1] at ``shape`` (nearest resize if needed)."""
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    if arr.shape != tuple(shape):
        arr = np.asarray(Image.fromarray(arr).resize((shape[1], shape[0]), Image.Resampling.NEAREST))
    return arr


# ---------------------------------------------------------------------------------------------- samples
class PairDataset(Dataset):
    """Training samples of one source at the batch's resolution.

    Items are ``(index, seed, (W, H))`` (from ``AspectBatchSampler``). A sample is::

        {"view1": view, "view2": view, "valid_corres": [n] bool, "is_metric": bool, "dataset": str}
        view = {"img": [3, H, W] float32 in [0, 1], "depth": [H, W], "pts3d": [H, W, 3] world (re-centred on
                view 1's camera), "valid": [H, W] bool, "sky": [H, W] bool, "K": [3, 3], "T_world_cam": [4, 4],
                "corres": [n, 2] int64 (x, y)}

    Args:
        source: a ``SyntheticPairs`` / ``Co3dPairs`` (anything with ``name``, ``metric``, ``__len__``, ``pair``).
        n_corres: correspondences per pair (MASt3R: 8192 at 512 px).
        neg_fraction: share of them that are random negatives (MASt3R ``nneg=0.5``).
        color_jitter: MASt3R's ``ColorJitter(0.5, 0.5, 0.5, 0.1)`` on each view.
        zoom_range: with ``aug_crop = "centred"``: crops zoom in by a factor drawn in ``[1, 1 + zoom_range]``
            (0: the largest centred crop).
        swap_prob: probability of swapping the two views.
        aug_crop: ``"auto"`` or a number of pixels: MASt3R's random crops (``n_tentative_crops`` per view, the
            pair sharing the most correspondences kept, rendered through a virtual camera whose principal point
            stays centred: ``geometry.crop_homography``); ``"centred"``: recon's crop around the principal point.
        n_tentative_crops: random crops tried per view (MASt3R: 4).
        aug_monocular: probability that view 2 is a copy of view 1 (MASt3R: 0.005).
    """

    def __init__(
        self,
        source,
        n_corres: int = 8192,
        neg_fraction: float = 0.5,
        color_jitter: bool = True,
        zoom_range: float = 0.0,
        swap_prob: float = 0.5,
        aug_crop: float | str = "auto",
        n_tentative_crops: int = 4,
        aug_monocular: float = 0.0,
    ) -> None:
        if not (aug_crop in ("auto", "centred") or (isinstance(aug_crop, (int, float)) and aug_crop >= 0)):
            raise DataConfigError(f"aug_crop must be 'auto', 'centred' or a number of pixels >= 0, got {aug_crop!r}")
        self.source = source
        self.n_corres, self.neg_fraction = int(n_corres), float(neg_fraction)
        self.color_jitter, self.zoom_range, self.swap_prob = color_jitter, float(zoom_range), float(swap_prob)
        self.aug_crop, self.n_tentative_crops = aug_crop, max(1, int(n_tentative_crops))
        self.aug_monocular = float(aug_monocular)
        self.name = source.name

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, item) -> dict[str, Any]:
        index, seed, res = item
        rng = np.random.default_rng(seed)
        f1, f2 = self.source.pair(int(index), rng)
        if rng.random() < self.swap_prob:
            f1, f2 = f2, f1
        target = (int(res[0]), int(res[1]))
        if self.aug_crop == "centred":
            f1 = crop_resize(f1, target, 1.0 + self.zoom_range * rng.random())
            f2 = crop_resize(f2, target, 1.0 + self.zoom_range * rng.random())
        else:
            f1, f2 = with_points(f1), with_points(f2)  # unprojected once for the matches and the crops
            box1, box2 = best_crop_pair(f1, f2, target, self.aug_crop, self.n_tentative_crops, rng)
            f1, f2 = crop_homography(f1, box1, target), crop_homography(f2, box2, target)
        # MASt3R's aug_monocular: both views are the same (already colour-jittered) image.
        monocular = self.aug_monocular > 0 and rng.random() < self.aug_monocular
        if monocular:
            f2 = f1
        matches = reciprocal_matches(f1, f2)
        c1, c2, valid = sample_correspondences(matches, self.n_corres, self.neg_fraction, f1.size, f2.size, rng)
        g = torch.Generator().manual_seed(int(rng.integers(0, 2**62)))
        origin = f1.T_world_cam[:3, 3].copy()  # re-centre the world on view 1's camera: float32 stays precise
        view1 = self._view(f1, c1, origin, g)
        if monocular:
            view2 = {k: v.clone() for k, v in view1.items()}
            view2["corres"] = torch.from_numpy(c2)
        else:
            view2 = self._view(f2, c2, origin, g)
        return {
            "view1": view1,
            "view2": view2,
            "valid_corres": torch.from_numpy(valid),
            "is_metric": bool(self.source.metric),
            "dataset": self.name,
        }

    def _view(self, f: Frame, corres: np.ndarray, origin: np.ndarray, g: torch.Generator) -> dict[str, Any]:
        img = torch.from_numpy(np.ascontiguousarray(f.rgb, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()
        if self.color_jitter:
            from training.distill.augment import color_jitter

            img = color_jitter(img, g, 0.5, 0.5, 0.5, 0.1)
        valid = f.valid
        T = f.T_world_cam.copy()
        T[:3, 3] -= origin
        sky = f.sky if f.sky is not None else np.zeros_like(valid)
        return {
            "img": img,
            "depth": torch.from_numpy(f.depth.astype(np.float32)),
            "pts3d": torch.from_numpy(np.where(valid[..., None], f.pts3d - origin, 0).astype(np.float32)),
            "valid": torch.from_numpy(valid),
            "sky": torch.from_numpy(np.asarray(sky, dtype=bool) & ~valid),
            "K": torch.from_numpy(f.K.astype(np.float32)),
            "T_world_cam": torch.from_numpy(T.astype(np.float32)),
            "corres": torch.from_numpy(corres),
        }


class MixtureDataset(Dataset):
    """Datasets concatenated with weights: dataset ``k`` gets ``round(weight_k / sum * size)`` indices, spread
    evenly over its own items (MASt3R's ``N @ D1 + M @ D2``).

    Args:
        datasets: ``PairDataset`` s.
        weights: one positive weight per dataset.
        size: total number of indices (one "epoch"; default: the sum of the dataset lengths).
    """

    def __init__(self, datasets: Sequence[Dataset], weights: Sequence[float], size: int | None = None) -> None:
        if not datasets or len(datasets) != len(weights):
            raise DataConfigError(f"need one weight per dataset, got {len(datasets)} datasets, {len(weights)} weights")
        if any(w <= 0 for w in weights):
            raise DataConfigError(f"dataset weights must be positive, got {list(weights)}")
        self.datasets = list(datasets)
        size = int(size or sum(len(d) for d in datasets))
        total = float(sum(weights))
        self.sizes = [max(1, round(size * w / total)) for w in weights]
        self.offsets = np.cumsum([0, *self.sizes])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def locate(self, index: int, seed: int | None = None) -> tuple[int, int]:
        """Global index -> ``(dataset k, index inside dataset k)``.

        Dataset ``k``'s ``sizes[k]`` indices split its items into equal strata, one per index. When it has more
        items than indices (MASt3R's ``N @ D`` with ``N < len(D)``) and a per-sample ``seed`` is given, the item is
        drawn uniformly inside its stratum, so every item can be seen over the epochs (else: the stratum's first).
        """
        k = int(np.searchsorted(self.offsets, index, side="right") - 1)
        n, size = len(self.datasets[k]), self.sizes[k]
        j = int(index) - int(self.offsets[k])
        lo, hi = j * n // size, (j + 1) * n // size
        if seed is not None and hi - lo > 1:
            return k, lo + int(np.random.default_rng(seed ^ 0x5EED).integers(0, hi - lo))
        return k, lo

    def __getitem__(self, item) -> dict[str, Any]:
        index, seed, res = item
        k, local = self.locate(int(index), seed)
        return self.datasets[k][(local, seed, res)]


# ---------------------------------------------------------------------------------------------- batches
class AspectBatchSampler:
    """Batches of ``(index, seed, (W, H))`` with one resolution and orientation per batch.

    The resolution of per-rank batch number ``b`` is drawn from ``(seed, b)`` only, so every rank uses the same one
    at the same step, and a resumed run (the sampler's ``position`` set from the iteration count) draws the same
    sequence. A non-square resolution is turned portrait (``(H, W)``) with probability ``portrait_prob``.

    Args:
        sampler: ``InfiniteDistributedSampler(with_seeds=True)``.
        batch_size: items per batch.
        resolutions: landscape ``[(W, H)]``.
        portrait_prob: share of non-square batches made portrait.
        seed: run seed.
    """

    def __init__(
        self,
        sampler: InfiniteDistributedSampler,
        batch_size: int,
        resolutions: Sequence[tuple[int, int]],
        portrait_prob: float = 0.5,
        seed: int = 0,
    ) -> None:
        if not sampler.with_seeds:
            raise ValueError("AspectBatchSampler needs an InfiniteDistributedSampler(with_seeds=True)")
        self.sampler, self.batch_size = sampler, int(batch_size)
        self.resolutions = [tuple(int(v) for v in r) for r in resolutions]
        self.portrait_prob, self.seed = float(portrait_prob), int(seed)

    def resolution(self, batch_number: int) -> tuple[int, int]:
        """``(W, H)`` of per-rank batch ``batch_number``."""
        g = torch.Generator().manual_seed(sample_seed(self.seed + 777, batch_number))  # 777: MASt3R's offset
        W, H = self.resolutions[int(torch.randint(len(self.resolutions), (1,), generator=g))]
        if W != H and float(torch.rand(1, generator=g)) < self.portrait_prob:
            W, H = H, W
        return W, H

    def __iter__(self) -> Iterator[list[tuple[int, int, tuple[int, int]]]]:
        number = self.sampler.position // self.batch_size
        batch: list = []
        for index, seed in self.sampler:
            batch.append((index, seed))
            if len(batch) == self.batch_size:
                res = self.resolution(number)
                yield [(i, s, res) for i, s in batch]
                number += 1
                batch = []

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)


def fixed_items(n: int, length: int, resolution: tuple[int, int], seed: int) -> list[tuple[int, int, tuple[int, int]]]:
    """``n`` deterministic held-out items spread over a dataset of ``length`` (validation)."""
    idx = np.unique(np.linspace(0, length - 1, num=min(n, length)).round().astype(np.int64))
    return [(int(i), sample_seed(seed, int(i)), tuple(resolution)) for i in idx]
