"""Data plumbing shared by the recipes: an infinite, seeded, resumable distributed sampler and robust image datasets.

Exact resume needs two things besides the model and optimizer states:

1. **Which samples come next.** ``InfiniteDistributedSampler`` is a pure function of ``(seed, position)``: pass
   ``k`` (shuffled with ``seed + k``, padded to a multiple of the world size, strided by rank, as DUNE's and
   torch's ``DistributedSampler``) then the offset inside the pass. The trainer sets ``position`` from the
   iteration count (``iteration x per-rank batch``), so DataLoader workers that prefetch ahead do not matter.
2. **Which augmentation each sample gets.** With ``with_seeds=True`` the sampler yields ``(index, seed)`` pairs
   whose seed depends only on ``(seed, rank, position)``; datasets draw their random crops from a
   ``torch.Generator`` seeded with it, so results do not depend on the number of workers or on restarts.

``RobustImageDataset`` reads images from a list of files (``image_folder`` / ``file_list``), skips unreadable or
corrupt files by moving on to another index deterministically, and reports how many it skipped in each sample
(``"skipped"``), so that the trainer can sum the counts across workers and ranks.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset, Sampler

from training.common import distributed

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".ppm")
_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant: spreads consecutive (seed, position) pairs over 64 bits


def sample_seed(seed: int, global_position: int) -> int:
    """A 63-bit seed for the sample at ``global_position`` of the stream of run seed ``seed`` (SplitMix64)."""
    z = (seed * _MIX + (global_position + 1) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) >> 1


class InfiniteDistributedSampler(Sampler):
    """Endless shuffled indices for one rank, resumable at any position.

    Args:
        length: dataset length.
        rank, world_size: default to the running process group (0 / 1 without one).
        seed: run seed; pass ``k`` is a permutation drawn with ``torch.Generator().manual_seed(seed + k)``.
        shuffle: permute each pass (else ``0..length-1``).
        with_seeds: yield ``(index, sample_seed)`` instead of ``index``.
        position: samples this rank has already consumed (where iteration starts).
    """

    def __init__(
        self,
        length: int,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        seed: int = 0,
        shuffle: bool = True,
        with_seeds: bool = False,
        position: int = 0,
    ) -> None:
        if length <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.length = length
        self.rank = distributed.get_rank() if rank is None else rank
        self.world_size = distributed.get_world_size() if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} outside [0, {self.world_size})")
        self.seed = seed
        self.shuffle = shuffle
        self.with_seeds = with_seeds
        self.position = position
        self.per_rank = math.ceil(length / self.world_size)  # samples per rank and pass (padded)

    def _pass_indices(self, k: int) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + k)
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        total = self.per_rank * self.world_size
        order = (order * math.ceil(total / self.length))[:total]  # pad by repeating, as DistributedSampler
        return order[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[Any]:
        pos = self.position
        k, offset = divmod(pos, self.per_rank)
        while True:
            indices = self._pass_indices(k)
            for idx in indices[offset:]:
                if self.with_seeds:
                    yield idx, sample_seed(self.seed, pos * self.world_size + self.rank)
                else:
                    yield idx
                pos += 1
            k, offset = k + 1, 0

    def __len__(self) -> int:
        """Samples per rank and pass (the iterator itself never ends)."""
        return self.per_rank

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "position": self.position, "length": self.length, "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state.get("length", self.length) != self.length or state.get("world_size", self.world_size) != (
            self.world_size
        ):
            logger.warning(
                "sampler resumed with a different dataset length or world size (%s -> length %d, world %d): "
                "the sample order differs from the uninterrupted run",
                state, self.length, self.world_size,
            )  # fmt: skip
        self.seed = state["seed"]
        self.position = state["position"]


def split_item(item) -> tuple[int, int | None]:
    """``index`` or ``(index, seed)`` (as yielded by ``InfiniteDistributedSampler``) -> ``(index, seed or None)``."""
    if isinstance(item, (tuple, list)):
        return int(item[0]), int(item[1])
    return int(item), None


def make_generator(seed: int | None) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (``None``: seeded from the global torch RNG)."""
    g = torch.Generator()
    g.manual_seed(int(torch.randint(0, 2**62, (1,)).item()) if seed is None else seed)
    return g


# ---------------------------------------------------------------------------------------------- image sources
def list_image_folder(root: str | os.PathLike, extensions: Sequence[str] = IMAGE_EXTENSIONS) -> list[Path]:
    """Every image file under ``root`` (recursive, sorted, case-insensitive extensions; hidden files skipped).

    Raises:
        FileNotFoundError: ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"image folder not found: {root}")
    exts = tuple(e.lower() for e in extensions)
    files = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files.extend(Path(dirpath) / f for f in filenames if f.lower().endswith(exts) and not f.startswith("."))
    return sorted(files)


def read_file_list(list_file: str | os.PathLike, root: str | os.PathLike | None = None) -> list[Path]:
    """Paths from a text file, one per line (blank lines and ``#`` comments ignored), relative to ``root``.

    ``root`` defaults to the list file's folder; absolute paths in the list are kept as they are.

    Raises:
        FileNotFoundError: the list file does not exist.
    """
    list_file = Path(list_file)
    if not list_file.is_file():
        raise FileNotFoundError(f"file list not found: {list_file}")
    base = Path(root) if root is not None else list_file.parent
    out = []
    for line in list_file.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(base / line)
    return out


def load_rgb(path: str | os.PathLike):
    """Open an image as an RGB ``PIL.Image`` (EXIF orientation applied); raises on unreadable or corrupt files."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        return im.convert("RGB")  # forces the full decode, so truncated files fail here


class RobustImageDataset(Dataset):
    """Images from a list of files, transformed with a per-sample generator; corrupt files are skipped and counted.

    Args:
        files: image paths.
        transform: ``transform(pil_image, generator) -> Tensor [3, H, W]``.
        name: dataset name, reported in each sample (``"dataset"``).
        max_retries: consecutive unreadable files tolerated before giving up on an index.
        loader: ``loader(file) -> PIL.Image`` (default ``load_rgb``; e.g. a generator of synthetic images).

    Each item is ``{"image": Tensor, "index": int, "dataset": str, "skipped": int}`` where ``skipped`` counts the
    unreadable files passed over to produce it; an index that fails is replaced by a deterministic other index.
    """

    def __init__(
        self,
        files: Sequence[str | os.PathLike],
        transform: Callable[[Any, torch.Generator], torch.Tensor],
        name: str = "images",
        max_retries: int = 20,
        loader: Callable[[str], Any] | None = None,
    ) -> None:
        if not files:
            raise ValueError(f"dataset {name!r} has no files")
        self.files = [str(f) for f in files]
        self.transform = transform
        self.name = name
        self.max_retries = max_retries
        self.loader = loader or load_rgb
        self.failed: set[str] = set()  # in this process (each DataLoader worker has its own)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, item) -> dict[str, Any]:
        index, seed = split_item(item)
        generator = make_generator(seed)
        skipped = 0
        idx = index
        for attempt in range(self.max_retries + 1):
            path = self.files[idx]
            try:
                image = self.loader(path)
            except Exception as err:  # PIL raises many types (OSError, SyntaxError, ValueError, DecompressionBomb)
                if path not in self.failed:
                    logger.warning("%s: skipping unreadable %s (%s: %s)", self.name, path, type(err).__name__, err)
                    self.failed.add(path)
                skipped += 1
                # A different, deterministic index: a large odd stride visits many files before repeating.
                idx = (index + (attempt + 1) * 7919) % len(self.files)
                continue
            return {"image": self.transform(image, generator), "index": idx, "dataset": self.name, "skipped": skipped}
        raise RuntimeError(
            f"{self.name}: {self.max_retries + 1} unreadable images in a row around index {index}; "
            f"check the dataset root (first failures: {sorted(self.failed)[:3]})"
        )
