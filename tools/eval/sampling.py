"""The benchmark's "10 random frames" per sequence, saved to a JSON sampling file so any run repeats exactly.

Sampling follows the reference (co3d_eval.md section 3.3): one legacy NumPy RNG seeded once, then for every
surviving sequence, in iteration order, ``choice(n, 10, replace=False)`` on its frame list. Only surviving
sequences consume the RNG, so the draws depend on the set (and order) of categories sampled together; build the
file once over all categories you will ever evaluate and reuse it (``--sampling FILE``).

The published recipes differ in three places, gathered in a ``Recipe``:

=======  =====================  ======================  ==============================
recipe   empty-mask frames      sequence order          order of the 10 frames
=======  =====================  ======================  ==============================
``pd``   dropped (RelPose++)    first appearance        sorted by image path
``vggt`` kept                   sorted by name          draw order
=======  =====================  ======================  ==============================
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from backbone.fileio import write_json_atomic
from recon.datasets.data import DatasetError, EvalSequence
from tools.eval.options import NUM_FRAMES

logger = logging.getLogger(__name__)

FORMAT = "recon-eval-sampling"
VERSION = 1


@dataclass(frozen=True)
class Recipe:
    """One published way of choosing sequences and frames.

    Attributes:
        name: preset name.
        drop_empty_masks: CO3D only: skip frames whose mask is empty (RelPose++ preprocessing, PoseDiffusion).
        sort_sequences: iterate sequences sorted by name (VGGT) instead of set-list order (PoseDiffusion).
        sort_frames_by_path: order the sampled frames by image path (PoseDiffusion ``sort_by_filename``) instead
            of keeping the draw order (VGGT). The order decides each pair's (i, j) and so the translation frame.
    """

    name: str
    drop_empty_masks: bool
    sort_sequences: bool
    sort_frames_by_path: bool


RECIPES = {
    "pd": Recipe("pd", drop_empty_masks=True, sort_sequences=False, sort_frames_by_path=True),
    "vggt": Recipe("vggt", drop_empty_masks=False, sort_sequences=True, sort_frames_by_path=False),
}


def get_recipe(name: str) -> Recipe:
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown sampling recipe {name!r}; expected one of {sorted(RECIPES)}") from None


@dataclass
class SampledSequence:
    """The frames drawn for one sequence.

    Attributes:
        category: category (``"re10k"`` for RealEstate10K).
        sequence: sequence name / clip id.
        n_frames: length of the filtered frame list the draw was made from.
        indices: positions drawn in that list, in evaluation order.
        frame_ids: the frames' ids as in the annotations, in evaluation order.
    """

    category: str
    sequence: str
    n_frames: int
    indices: list[int]
    frame_ids: list[int]

    @property
    def key(self) -> tuple[str, str]:
        return self.category, self.sequence


@dataclass
class Sampling:
    """A complete, reproducible choice of sequences and frames for one dataset."""

    dataset: str
    seed: int
    recipe: str
    num_frames: int
    categories: list[str]
    sequences: list[SampledSequence]
    dropped: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def save(self, path: str | Path) -> Path:
        """Write the sampling file atomically."""
        obj = {"format": FORMAT, "version": VERSION} | asdict(self)
        return write_json_atomic(path, obj, indent=None)

    @classmethod
    def load(cls, path: str | Path) -> Sampling:
        """Read a sampling file written by ``save``."""
        path = Path(path)
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DatasetError(f"sampling file {path} does not exist") from None
        except json.JSONDecodeError as err:
            raise DatasetError(f"sampling file {path} is not valid JSON: {err}") from err
        if obj.get("format") != FORMAT or obj.get("version") != VERSION:
            raise DatasetError(
                f"{path} is not a recon sampling file of version {VERSION} "
                f"(format={obj.get('format')!r}, version={obj.get('version')!r})"
            )
        seqs = [SampledSequence(**s) for s in obj["sequences"]]
        return cls(
            dataset=obj["dataset"],
            seed=int(obj["seed"]),
            recipe=obj["recipe"],
            num_frames=int(obj["num_frames"]),
            categories=list(obj["categories"]),
            sequences=seqs,
            dropped=obj.get("dropped", {}),
        )

    def select(self, categories: Sequence[str] | None) -> list[SampledSequence]:
        """The sampled sequences of the given categories (all when ``None``), in file order."""
        if not categories:
            return list(self.sequences)
        missing = sorted(set(categories) - set(self.categories))
        if missing:
            raise DatasetError(
                f"the sampling file covers categories {self.categories}, not {missing}; "
                "write a new sampling file (another --sampling path) that includes them"
            )
        wanted = set(categories)
        return [s for s in self.sequences if s.category in wanted]


def draw_indices(rng: np.random.RandomState, n: int, k: int) -> np.ndarray:
    """``rng.choice(n, k, replace=False)``: equals the legacy global ``np.random.choice`` after the same seed."""
    if n < k:
        raise ValueError(f"cannot draw {k} distinct frames from {n}")
    return rng.choice(n, k, replace=False)


def sample_sequences(
    candidates: Iterable[EvalSequence], rng: np.random.RandomState, recipe: Recipe, num_frames: int = NUM_FRAMES
) -> list[SampledSequence]:
    """Draw ``num_frames`` frames from each candidate sequence, in iteration order (one RNG for all).

    Sequences shorter than ``num_frames`` are skipped without consuming the RNG (PoseDiffusion ``test.py``).
    """
    out = []
    for seq in candidates:
        n = len(seq.frames)
        if n < num_frames:
            logger.info("%s/%s has %d < %d frames; skipped", seq.category, seq.name, n, num_frames)
            continue
        idx = [int(i) for i in draw_indices(rng, n, num_frames)]
        if recipe.sort_frames_by_path:
            # String order, as PoseDiffusion's sort_by_filename (RE10K timestamps of different lengths included).
            idx.sort(key=lambda i: seq.frames[i].rel_path)
        out.append(SampledSequence(seq.category, seq.name, n, idx, [seq.frames[i].frame_id for i in idx]))
    return out


def build_sampling(
    reader, categories: Sequence[str], seed: int, recipe: Recipe, num_frames: int = NUM_FRAMES
) -> Sampling:
    """Filter and sample every category with one RNG seeded once with ``seed``.

    Args:
        reader: a dataset reader with ``dataset`` and ``category_candidates(category, recipe)``.
        categories: categories in iteration order.
        seed: seed of the legacy NumPy RNG (PoseDiffusion and VGGT use 0).
        recipe: see ``RECIPES``.
        num_frames: frames per sequence.
    """
    # A private RandomState: same stream as np.random.seed(seed) + np.random.choice, without touching globals.
    rng = np.random.RandomState(seed)
    sequences: list[SampledSequence] = []
    dropped: dict[str, dict[str, list[str]]] = {}
    for cat in categories:
        cands, cat_dropped = reader.category_candidates(cat, recipe)
        sequences += sample_sequences(cands, rng, recipe, num_frames)
        dropped[cat] = cat_dropped
    if not sequences:
        raise DatasetError(f"no {reader.dataset} sequence survives the filters in categories {list(categories)}")
    return Sampling(reader.dataset, seed, recipe.name, num_frames, list(categories), sequences, dropped)
