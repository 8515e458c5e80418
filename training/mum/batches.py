"""Multi-view batches under a per-GPU frame budget, each a pure function of ``(seed, iteration, rank)``.

For iteration ``it``:

1. with probability ``single_view_prob`` the batch is single-view: ``frame_budget`` images, shape
   ``[frame_budget, 1, 3, H, W]`` (the global decoder blocks then act within each image);
2. otherwise ``S`` is drawn uniformly in ``views`` and the batch holds ``floor(frame_budget / S)`` sequences of
   ``S`` frames, ``[floor(frame_budget / S), S, 3, H, W]``: for each, a dataset is drawn by weight (among those
   with a sequence of at least S frames), a sequence uniformly among its sequences of at least S frames, and S
   distinct frames of it (kept in sequence order);
3. every frame gets its own RandomResizedCrop (scale ``rrc_scale``, bicubic) and horizontal flip, as the
   official ``DataAugmentationMAE``.

The batch shape (single-view or S) depends on ``(seed, it)`` only, so every rank of a DDP job runs the same
shape at the same step (no rank waits for a longer sequence); the frames depend on ``(seed, it, rank)``. Resuming
at iteration ``it`` therefore replays exactly the batches an uninterrupted run would have seen, whatever the
number of DataLoader workers.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from training.mum.config import DataConfig
from training.mum.sequences import DataConfigError, Source

logger = logging.getLogger(__name__)


def random_resized_crop(image, size: int, rng: np.random.Generator, scale=(0.2, 1.0), ratio=(0.75, 4 / 3)):
    """torchvision's RandomResizedCrop (10 tries, else a centred crop) to ``size x size``, bicubic, from ``rng``."""
    from PIL import Image

    width, height = image.size
    area = width * height
    box = None
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1])))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            box = (left, top, left + w, top + h)
            break
    if box is None:
        in_ratio = width / height
        if in_ratio < ratio[0]:
            w, h = width, round(width / ratio[0])
        elif in_ratio > ratio[1]:
            h, w = height, round(height * ratio[1])
        else:
            w, h = width, height
        left, top = (width - w) // 2, (height - h) // 2
        box = (left, top, left + w, top + h)
    return image.resize((size, size), Image.Resampling.BICUBIC, box=box)


def to_tensor(image) -> torch.Tensor:
    """``PIL.Image`` RGB -> ``[3, H, W]`` float32 in [0, 1]."""
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)


class BatchPlan:
    """The shape decision of each iteration: ``plan(it) -> S`` (1 = single-view batch)."""

    def __init__(self, cfg: DataConfig, seed: int, max_sequence_length: int) -> None:
        lo, hi = cfg.views
        if lo > max_sequence_length:
            raise DataConfigError(
                f"data.views min {lo} exceeds the longest sequence ({max_sequence_length} frames) of the datasets"
            )
        if hi > max_sequence_length:
            logger.warning(
                "data.views max %d exceeds the longest sequence (%d frames): S is drawn in [%d, %d]",
                hi, max_sequence_length, lo, max_sequence_length,
            )  # fmt: skip
            hi = max_sequence_length
        self.views = (lo, hi)
        self.single_view_prob = cfg.single_view_prob
        self.frame_budget = cfg.frame_budget
        self.seed = seed

    def __call__(self, it: int) -> int:
        rng = np.random.default_rng([self.seed, it, 0x5EC])  # rank-independent
        if rng.random() < self.single_view_prob:
            return 1
        return int(rng.integers(self.views[0], self.views[1] + 1))

    def batch_shape(self, it: int) -> tuple[int, int]:
        """``(sequences, S)`` of iteration ``it``; ``sequences * S <= frame_budget``."""
        S = self(it)
        return self.frame_budget // S, S


class MultiViewBatches(Dataset):
    """``dataset[it]`` is the whole batch of iteration ``it`` for this rank (use with ``batch_size=None``).

    Args:
        sources: multi-view sources.
        single_sources: single-view sources (empty: single frames of ``sources``).
        cfg: data config (budget, views, crops).
        seed: run seed.
        rank: this rank (frames differ per rank; shapes do not).

    Each item: ``{"images": [n, S, 3, H, W] float32 in [0, 1], "views": S, "iteration": it, "skipped": int}``.
    """

    def __init__(
        self, sources: Sequence[Source], single_sources: Sequence[Source], cfg: DataConfig, seed: int, rank: int = 0
    ) -> None:
        if not sources:
            raise DataConfigError("no multi-view dataset")
        self.sources = list(sources)
        self.single_sources = list(single_sources)
        self.cfg = cfg
        self.seed = seed
        self.rank = rank
        longest = max(int(s.lengths.max()) for s in self.sources)
        self.plan = BatchPlan(cfg, seed, longest)
        self.weights = np.array([s.weight for s in self.sources], dtype=np.float64)
        self.single_weights = np.array([s.weight for s in self.single_sources], dtype=np.float64)

    def __len__(self) -> int:
        return 2**62  # indexed by iteration; the sampler decides which

    def _pick_sequence(self, S: int, rng: np.random.Generator) -> tuple[Source, list]:
        ok = np.array([(s.lengths >= S).any() for s in self.sources])
        weights = self.weights * ok
        source = self.sources[int(rng.choice(len(self.sources), p=weights / weights.sum()))]
        candidates = np.flatnonzero(source.lengths >= S)
        seq = source.sequences[int(candidates[rng.integers(len(candidates))])]
        frames = np.sort(rng.choice(len(seq), size=S, replace=False))
        return source, [seq[i] for i in frames]

    def _pick_single(self, rng: np.random.Generator) -> tuple[Source, list]:
        if not self.single_sources:  # a frame of a multi-view dataset, weighted like its dataset
            source = self.sources[int(rng.choice(len(self.sources), p=self.weights / self.weights.sum()))]
        else:
            p = self.single_weights / self.single_weights.sum()
            source = self.single_sources[int(rng.choice(len(self.single_sources), p=p))]
        seq = source.sequences[int(rng.integers(len(source.sequences)))]
        return source, [seq[int(rng.integers(len(seq)))]]

    def _frame(self, source: Source, ref, rng: np.random.Generator) -> tuple[torch.Tensor, int]:
        """One augmented frame; an unreadable file is replaced by another frame of the same source (counted)."""
        cfg = self.cfg
        for skipped in range(20):
            try:
                image = source.load(ref)
            except Exception as err:  # PIL raises many types (OSError, SyntaxError, ValueError, ...)
                logger.warning("%s: skipping unreadable %s (%s: %s)", source.name, ref, type(err).__name__, err)
                seq = source.sequences[int(rng.integers(len(source.sequences)))]
                ref = seq[int(rng.integers(len(seq)))]
                continue
            image = random_resized_crop(image, cfg.image_size, rng, cfg.rrc_scale, cfg.rrc_ratio)
            x = to_tensor(image)
            if rng.random() < cfg.hflip:
                x = x.flip(-1)
            return x, skipped
        raise RuntimeError(f"{source.name}: 20 unreadable images in a row; check the dataset (last: {ref})")

    def __getitem__(self, it: int) -> dict:
        n, S = self.plan.batch_shape(it)
        rng = np.random.default_rng([self.seed, it, self.rank, 0xDA7A])
        frames, skipped = [], 0
        for _ in range(n):
            source, refs = self._pick_single(rng) if S == 1 else self._pick_sequence(S, rng)
            for ref in refs:
                x, k = self._frame(source, ref, rng)
                frames.append(x)
                skipped += k
        size = self.cfg.image_size
        images = torch.stack(frames).reshape(n, S, 3, size, size)
        return {"images": images, "views": S, "iteration": it, "skipped": skipped}


class IterationSampler(Sampler):
    """Yields ``start, start + 1, ...`` (iteration numbers) forever; ``start`` is set from the resumed count."""

    def __init__(self, start: int = 0) -> None:
        self.start = start

    def __iter__(self) -> Iterator[int]:
        it = self.start
        while True:
            yield it
            it += 1

    def state_dict(self) -> dict:
        return {"start": self.start}

    def load_state_dict(self, state: dict) -> None:
        self.start = int(state["start"])
