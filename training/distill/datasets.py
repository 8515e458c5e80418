"""Training data for DUNE: the 19 paper datasets by name, teacher-balanced batches, synthetic images for tests.

The registry (``PAPER_DATASETS``) holds each dataset's teacher domain and its training-image count in the
official code (reference/dune_mum.md §6; the paper's Table 1). Where the images live is the user's business: a
roots file ``{name: {"root": folder, "file_list": optional list, "layout": "auto"}}`` (or ``data.roots`` inline).
The official code reads image lists from pickles; here a paper dataset is read in its release layout
(``training.datasets.images``: only the image files, never the depth PNGs beside them), any other dataset is an
image folder (recursive), and a text file list always works.

**Teacher-balanced batches** (paper §4 / official ``teacher_balanced``): each domain's datasets are
concatenated; item ``i`` of ``TeacherBalancedDataset`` is one image of every domain (domain ``d`` takes its item
``i mod len_d``; the length is the largest domain's), a loader batch of ``ceil(B / G)`` items becomes ``G`` blocks
of images concatenated domain by domain and truncated to ``B`` -- 43 + 43 + 42 for ``B = 128`` and 3 domains.
(The official code draws the residual indices of smaller domains from a per-worker shuffled deque, which is not
reproducible; ``i mod len_d`` over a shuffled ``i`` is.)
"""

from __future__ import annotations

import bisect
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from training.common.config import DataConfigError
from training.common.data import RobustImageDataset, list_image_folder, read_file_list, split_item
from training.datasets.images import bedlam_loader
from training.distill.augment import DuneTrainTransform

logger = logging.getLogger(__name__)

DOMAINS = ("dinov2", "mast3r", "multihmr")


@dataclass(frozen=True)
class PaperDataset:
    """A dataset of the paper's training mix."""

    domain: str
    """Teacher domain."""
    train_images: int
    """Training images in the official code's lists."""


PAPER_DATASETS: dict[str, PaperDataset] = {
    # DINOv2 domain (18,492,301 images)
    "in19k": PaperDataset("dinov2", 13_153_480),
    "gldv2": PaperDataset("dinov2", 4_132_914),
    "mapillarystreet": PaperDataset("dinov2", 1_205_907),
    # MASt3R domain (1,748,558)
    "ARKitScenesV2": PaperDataset("mast3r", 456_108),
    "BlendedMVS": PaperDataset("mast3r", 98_937),
    "Co3d_v3": PaperDataset("mast3r", 185_100),
    "DL3DV": PaperDataset("mast3r", 208_800),
    "Habitat512": PaperDataset("mast3r", 284_965),
    "MegaDepthDense": PaperDataset("mast3r", 36_949),
    "Niantic": PaperDataset("mast3r", 41_300),
    "ScanNetppV2": PaperDataset("mast3r", 60_188),
    "TartanAir": PaperDataset("mast3r", 136_225),
    "Unreal4K": PaperDataset("mast3r", 14_386),
    "VirtualKitti": PaperDataset("mast3r", 1_200),
    "WildRgb": PaperDataset("mast3r", 224_400),
    # Multi-HMR domain (476,608)
    "bedlam": PaperDataset("multihmr", 353_116),
    "agora": PaperDataset("multihmr", 14_314),
    "cuffs": PaperDataset("multihmr", 54_944),
    "ubody": PaperDataset("multihmr", 54_234),
}


def load_roots(data_cfg) -> dict[str, dict]:
    """Merged dataset locations: ``roots_file`` entries overridden by inline ``roots``."""
    roots: dict[str, dict] = {}
    if data_cfg.roots_file:
        path = Path(data_cfg.roots_file)
        if not path.is_file():
            raise DataConfigError(f"data.roots_file not found: {path}")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise DataConfigError(f"{path}: invalid JSON ({err.msg} at line {err.lineno})") from None
        for name, entry in raw.items():
            entry = {"root": entry} if isinstance(entry, str) else dict(entry)
            unknown = set(entry) - {"root", "file_list", "domain", "layout"}
            if unknown:
                raise DataConfigError(f"{path}: dataset {name!r} has unknown key(s) {sorted(unknown)}")
            roots[name] = entry
    for name, entry in data_cfg.roots.items():
        roots[name] = {"root": entry.root, "file_list": entry.file_list, "domain": entry.domain, "layout": entry.layout}
    return roots


def dataset_files(name: str, entry: Mapping) -> list[Path]:
    """Image paths of one dataset from its roots entry: the file list if given; else, for the paper's datasets with
    ``layout`` ``auto`` / ``release``, the images of the release layout (``training.datasets.images``); else every
    image under the root."""
    from training.datasets.images import RELEASE_LAYOUTS, release_files
    from training.datasets.io import LayoutError

    root = entry.get("root") or ""
    if entry.get("file_list"):
        return read_file_list(entry["file_list"], root or None)
    if not root:
        raise DataConfigError(f"dataset {name!r}: no 'root' folder given in the roots file")
    layout = entry.get("layout") or "auto"
    if layout not in ("auto", "release", "folder"):
        raise DataConfigError(f"dataset {name!r}: layout must be auto, release or folder, got {layout!r}")
    if layout == "release" and name not in RELEASE_LAYOUTS:
        raise DataConfigError(f"dataset {name!r}: no release layout known; use layout 'folder' or a file_list")
    if layout != "folder" and name in RELEASE_LAYOUTS:
        try:
            return release_files(name, root)
        except LayoutError as err:
            raise DataConfigError(str(err)) from None
    return list_image_folder(root)


def dataset_domain(name: str, entry: Mapping) -> str:
    domain = entry.get("domain") or (PAPER_DATASETS[name].domain if name in PAPER_DATASETS else None)
    if domain is None:
        raise DataConfigError(f"dataset {name!r} is not one of the paper's; give its 'domain' ({'/'.join(DOMAINS)})")
    if domain not in DOMAINS:
        raise DataConfigError(f"dataset {name!r}: unknown domain {domain!r}; expected one of {DOMAINS}")
    return domain


# ---------------------------------------------------------------------------------------------- synthetic images
def synthetic_image(seed: int, size: int = 96):
    """A smooth random RGB ``PIL.Image`` (sum of planar sinusoids through tanh), the same for the same seed."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    img = np.empty((size, size, 3))
    for c in range(3):
        acc = np.zeros((size, size))
        for _ in range(5):
            fx, fy = rng.normal(0, 6, 2)
            acc += np.sin(2 * np.pi * (fx * xx + fy * yy) + rng.uniform(0, 2 * np.pi))
        img[..., c] = 0.5 + 0.5 * np.tanh(0.8 * acc)
    return Image.fromarray((img * 255).round().astype(np.uint8))


class _SyntheticLoader:
    """``loader(key)`` for ``RobustImageDataset``: keys ``synthetic:<seed>`` (picklable for workers)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, key: str):
        return synthetic_image(int(key.split(":", 1)[1]), self.size)


# ---------------------------------------------------------------------------------------------- datasets
class DomainDataset(Dataset):
    """The concatenated datasets of one teacher domain; items carry the domain name."""

    def __init__(self, domain: str, parts: Sequence[RobustImageDataset]) -> None:
        self.domain = domain
        self.parts = list(parts)
        self.concat = ConcatDataset(self.parts)

    def __len__(self) -> int:
        return len(self.concat)

    def __getitem__(self, item) -> dict:
        index, seed = split_item(item)
        part = bisect.bisect_right(self.concat.cumulative_sizes, index)
        offset = index - (self.concat.cumulative_sizes[part - 1] if part else 0)
        sample = self.parts[part][(offset, seed) if seed is not None else offset]
        sample["domain"] = self.domain
        return sample


class TeacherBalancedDataset(Dataset):
    """Item ``i`` = one image from each domain (see the module doc). Its length is the largest domain's."""

    def __init__(self, domains: Sequence[DomainDataset]) -> None:
        if not domains:
            raise ValueError("no domain datasets")
        self.domains = list(domains)

    def __len__(self) -> int:
        return max(len(d) for d in self.domains)

    def __getitem__(self, item) -> list[dict]:
        index, seed = split_item(item)
        out = []
        for k, d in enumerate(self.domains):
            sub_seed = None if seed is None else (seed * 1_000_003 + k) % (2**63)
            out.append(d[(index % len(d), sub_seed) if sub_seed is not None else index % len(d)])
        return out


class SingleStream(Dataset):
    """Non-balanced alternative: every domain's images in one concatenation (item = a one-element list)."""

    def __init__(self, domains: Sequence[DomainDataset]) -> None:
        self.domains = list(domains)
        self.cumulative = ConcatDataset(self.domains).cumulative_sizes

    def __len__(self) -> int:
        return self.cumulative[-1]

    def __getitem__(self, item) -> list[dict]:
        index, seed = split_item(item)
        part = bisect.bisect_right(self.cumulative, index)
        offset = index - (self.cumulative[part - 1] if part else 0)
        return [self.domains[part][(offset, seed) if seed is not None else offset]]


def build_train_dataset(data_cfg, image_size: int) -> Dataset:
    """The training dataset described by ``data_cfg`` (``DataConfig``) with DUNE's augmentations.

    Raises:
        DataConfigError: unknown dataset names, missing roots, unknown domains, empty datasets.
    """
    transform = DuneTrainTransform(image_size, data_cfg.rrc_scale, data_cfg.color_aug)
    by_domain: dict[str, list[RobustImageDataset]] = {}
    if data_cfg.source == "synthetic":
        for k, domain in enumerate(data_cfg.synthetic_domains):
            if domain not in DOMAINS:
                raise DataConfigError(f"unknown synthetic domain {domain!r}; expected one of {DOMAINS}")
            keys = [f"synthetic:{k * 1_000_000 + i}" for i in range(data_cfg.synthetic_images)]
            size = max(96, image_size + image_size // 2)
            ds = RobustImageDataset(keys, transform, name=f"synthetic_{domain}", loader=_SyntheticLoader(size))
            by_domain.setdefault(domain, []).append(ds)
    else:
        roots = load_roots(data_cfg)
        missing = [n for n in data_cfg.datasets if n not in roots]
        if missing:
            raise DataConfigError(
                f"no location for dataset(s) {missing}: add them to data.roots_file (JSON "
                '{"name": {"root": "/path/to/images"}}) or remove them from data.datasets'
            )
        for name in data_cfg.datasets:
            entry = roots[name]
            files = dataset_files(name, entry)
            if not files:
                raise DataConfigError(f"dataset {name!r} has no images under {entry.get('root')!r}")
            expected = PAPER_DATASETS[name].train_images if name in PAPER_DATASETS else None
            if expected is not None and len(files) != expected:
                logger.info("dataset %s: %d images (the official list has %d)", name, len(files), expected)
            loader = bedlam_loader if name == "bedlam" else None
            by_domain.setdefault(dataset_domain(name, entry), []).append(
                RobustImageDataset(files, transform, name=name, loader=loader)
            )
    domains = [DomainDataset(d, by_domain[d]) for d in DOMAINS if d in by_domain]
    for d in domains:
        logger.info("domain %s: %d images in %d dataset(s)", d.domain, len(d), len(d.parts))
    return TeacherBalancedDataset(domains) if data_cfg.teacher_balanced else SingleStream(domains)


def items_per_batch(dataset: Dataset, batch_size: int) -> int:
    """Dataset items per loader batch so that a batch holds at least ``batch_size`` images."""
    groups = len(dataset.domains) if isinstance(dataset, TeacherBalancedDataset) else 1
    return math.ceil(batch_size / groups)


class BalancedCollate:
    """Collate lists of per-domain samples into ``{"image" [B,3,S,S], "domain" [B], "dataset" [B], "skipped"}``.

    Images are grouped domain by domain (as the official ``prepare_teacher_balanced_batch``) and truncated to
    ``batch_size``; ``skipped`` sums the unreadable files passed over for the whole loader batch.
    """

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size

    def __call__(self, items: list[list[dict]]) -> dict:
        groups = len(items[0])
        ordered = [items[i][g] for g in range(groups) for i in range(len(items))]
        kept = ordered[: self.batch_size]
        return {
            "image": torch.stack([s["image"] for s in kept]),
            "domain": [s["domain"] for s in kept],
            "dataset": [s["dataset"] for s in kept],
            "skipped": torch.tensor(sum(s["skipped"] for s in ordered)),
        }


def write_roots_template(path: str | os.PathLike) -> Path:
    """Write a roots file listing the 19 paper datasets with empty roots, for the user to fill in."""
    from training.common.config import write_json_atomic

    return write_json_atomic({n: {"root": "", "file_list": None, "layout": "auto"} for n in PAPER_DATASETS}, path)
