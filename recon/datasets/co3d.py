"""CO3Dv2 reader for the multi-view pose benchmark (reference co3d_eval.md sections 2-3).

Layout read (as published): ``<root>/<category>/{frame_annotations.jgz, sequence_annotations.jgz,
set_lists/set_lists_fewview_dev.json}``; images at ``<root>/<image.path>``. Only the ``"test"`` list of the
fewview_dev set list is used, with the protocol's sequence filters:

- keep a sequence iff its ``viewpoint_quality_score`` is strictly above 0.5;
- optionally (RelPose++ preprocessing, "variant A") drop frames whose foreground mask is empty at > 0.4;
- drop a sequence with fewer than 50 frames;
- drop a whole sequence if any frame has ``T[0] + T[1] + T[2] > 1e5`` (signed sum, as PoseDiffusion).
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recon.datasets.cameras import CameraFormatError, co3d_viewpoint_to_opencv
from recon.datasets.data import DatasetError, EvalFrame, EvalSequence

logger = logging.getLogger(__name__)

# PoseDiffusion's "seen" categories (sorted), the 41 reported by DUSt3R / MASt3R / VGGT / DUNE.
SEEN_CATEGORIES = (
    "apple", "backpack", "banana", "baseballbat", "baseballglove", "bench", "bicycle", "bottle", "bowl",
    "broccoli", "cake", "car", "carrot", "cellphone", "chair", "cup", "donut", "hairdryer", "handbag", "hydrant",
    "keyboard", "laptop", "microwave", "motorcycle", "mouse", "orange", "parkingmeter", "pizza", "plant",
    "stopsign", "teddybear", "toaster", "toilet", "toybus", "toyplane", "toytrain", "toytruck", "tv", "umbrella",
    "vase", "wineglass",
)  # fmt: skip
UNSEEN_CATEGORIES = (
    "ball", "book", "couch", "frisbee", "hotdog", "kite", "remote", "sandwich", "skateboard", "suitcase",
)  # fmt: skip

SUBSET = "fewview_dev"
MIN_QUALITY = 0.5  # strict >
MIN_FRAMES = 50  # PoseDiffusion min_num_images: a sequence needs at least this many frames
MAX_T_SUM = 1e5  # signed T[0]+T[1]+T[2]; PoseDiffusion drops the whole sequence above it
MASK_THRESHOLD = 0.4  # RelPose++ bbox: mask / 255 > 0.4

DROP_REASONS = ("low_quality", "too_few_frames", "bad_translation")


def read_jgz(path: Path):
    """Load a gzip-compressed JSON file."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DatasetError(f"missing CO3D annotation file {path}") from None
    except (OSError, json.JSONDecodeError) as err:
        raise DatasetError(f"cannot read {path} as gzip JSON: {err}") from err


def mask_is_empty(path: Path, threshold: float = MASK_THRESHOLD) -> bool:
    """True if no pixel of the mask PNG exceeds ``threshold`` (in [0, 1]); RelPose++ drops such frames."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.asarray(im)
    except FileNotFoundError:
        raise DatasetError(
            f"missing mask {path}; the 'pd' recipe (RelPose++ preprocessing) reads every test frame's mask; "
            "use --recipe vggt to skip the mask check"
        ) from None
    # plt.imread (used by RelPose++) scales 8-bit to [0, 1] and 16-bit to [0, 1] as well.
    scale = 65535.0 if arr.dtype == np.uint16 else 255.0 if arr.dtype == np.uint8 else 1.0
    if arr.ndim == 3:
        arr = arr[..., 0]
    return not bool(np.any(arr / scale > threshold))


@dataclass
class Co3dCategory:
    """The parsed annotations of one category.

    Attributes:
        name: category name.
        root: dataset root.
        frames: ``(sequence_name, frame_number) -> frame annotation dict``.
        quality: ``sequence_name -> viewpoint_quality_score``.
        test_list: ``[(sequence_name, frame_number, image_path)]`` of the set list's ``"test"`` key, in order.
    """

    name: str
    root: Path
    frames: dict[tuple[str, int], dict]
    quality: dict[str, float]
    test_list: list[tuple[str, int, str]]
    dropped: dict[str, list[str]] = field(default_factory=lambda: {r: [] for r in DROP_REASONS})

    def frame(self, sequence: str, frame_number: int, rel_path: str | None = None) -> EvalFrame:
        """The ground-truth ``EvalFrame`` of one annotated frame."""
        try:
            ann = self.frames[(sequence, int(frame_number))]
        except KeyError:
            raise DatasetError(
                f"{self.root / self.name}/frame_annotations.jgz has no frame {frame_number} of sequence {sequence!r}"
            ) from None
        vp = ann["viewpoint"]
        H, W = (int(v) for v in ann["image"]["size"])
        try:
            T_world_cam, K = co3d_viewpoint_to_opencv(vp, (H, W))
        except CameraFormatError as err:
            raise DatasetError(f"{self.name}/{sequence} frame {frame_number}: {err}") from err
        rel_path = rel_path if rel_path is not None else ann["image"]["path"]
        return EvalFrame(
            frame_id=int(frame_number),
            rel_path=rel_path,
            image_path=str(self.root / rel_path),
            T_world_cam=T_world_cam,
            K=K,
            image_size=(H, W),
        )

    def candidate_sequences(self, drop_empty_masks: bool, sort_sequences: bool) -> list[EvalSequence]:
        """Sequences of the test list that pass the protocol's filters, with frames in set-list order.

        Also fills ``self.dropped`` (reason -> sequence names), for logs and the sampling file.

        Args:
            drop_empty_masks: RelPose++ preprocessing (variant A): skip frames whose mask is empty.
            sort_sequences: VGGT order (sorted names) instead of PoseDiffusion's first-appearance order.
        """
        self.dropped = {r: [] for r in DROP_REASONS}
        per_seq: dict[str, list[tuple[int, str]]] = {}
        for seq, fn, path in self.test_list:
            per_seq.setdefault(seq, []).append((int(fn), path))
        out = []
        for seq, entries in per_seq.items():
            if not self.quality.get(seq, float("-inf")) > MIN_QUALITY:
                self.dropped["low_quality"].append(seq)
                continue
            if drop_empty_masks:
                entries = [(fn, p) for fn, p in entries if not self._mask_empty(seq, fn)]
            if len(entries) < MIN_FRAMES:
                self.dropped["too_few_frames"].append(seq)
                continue
            T_sums = [float(np.sum(self.frames[(seq, fn)]["viewpoint"]["T"])) for fn, _ in entries]
            if max(T_sums) > MAX_T_SUM:
                self.dropped["bad_translation"].append(seq)
                continue
            out.append(EvalSequence(self.name, seq, [self.frame(seq, fn, p) for fn, p in entries]))
        if sort_sequences:
            out.sort(key=lambda s: s.name)
        logger.info(
            "co3d %s: %d sequences kept; dropped %s",
            self.name, len(out), {r: len(v) for r, v in self.dropped.items()},
        )  # fmt: skip
        return out

    def _mask_empty(self, seq: str, fn: int) -> bool:
        ann = self.frames.get((seq, fn))
        if ann is None:
            raise DatasetError(f"{self.name}: set list names frame {fn} of {seq!r}, absent from frame_annotations")
        mask = ann.get("mask") or {}
        if "path" not in mask:
            raise DatasetError(f"{self.name}/{seq} frame {fn} has no mask.path; use --recipe vggt (no mask check)")
        return mask_is_empty(self.root / mask["path"])


class Co3dReader:
    """Reads CO3Dv2 categories from ``root`` (the folder holding one folder per category).

    Category annotations are large (tens of MB of JSON), so the last parsed category is cached.
    """

    dataset = "co3d"

    def __init__(self, root: str | Path, subset: str = SUBSET):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DatasetError(f"CO3D root {self.root} is not a folder")
        self.subset = subset
        self._cache: Co3dCategory | None = None

    def available_categories(self, candidates: Sequence[str] = SEEN_CATEGORIES) -> list[str]:
        """Those of ``candidates`` that have a folder with a set list under the root, in the given order."""
        return [c for c in candidates if (self.root / c / "set_lists" / f"set_lists_{self.subset}.json").is_file()]

    def resolve_categories(self, requested: Sequence[str] | None) -> list[str]:
        """Validate a requested category list (default: the 41 seen categories, all of which must exist)."""
        names = list(requested) if requested else list(SEEN_CATEGORIES)
        unknown = [c for c in names if c not in SEEN_CATEGORIES and c not in UNSEEN_CATEGORIES]
        if unknown:
            raise DatasetError(f"unknown CO3D categories {unknown}; the benchmark uses {', '.join(SEEN_CATEGORIES)}")
        unseen = [c for c in names if c in UNSEEN_CATEGORIES]
        if unseen:
            logger.warning("categories %s are CO3D 'unseen' ones, not part of the 41-category protocol", unseen)
        missing = [c for c in names if c not in self.available_categories(names)]
        if missing:
            raise DatasetError(
                f"{len(missing)} categories have no set_lists/set_lists_{self.subset}.json under {self.root}: "
                f"{missing[:8]}{' ...' if len(missing) > 8 else ''}; pass --categories to evaluate a subset"
            )
        return sorted(names)  # PoseDiffusion sorts the categories; VGGT's list is alphabetical too

    def category(self, name: str) -> Co3dCategory:
        """Parse (or return the cached) annotations of one category."""
        if self._cache is not None and self._cache.name == name:
            return self._cache
        cat_dir = self.root / name
        set_list_path = cat_dir / "set_lists" / f"set_lists_{self.subset}.json"
        try:
            set_list = json.loads(set_list_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DatasetError(f"missing set list {set_list_path}") from None
        except json.JSONDecodeError as err:
            raise DatasetError(f"cannot parse {set_list_path}: {err}") from err
        if "test" not in set_list:
            raise DatasetError(f"{set_list_path} has no 'test' key (keys: {sorted(set_list)})")
        test_list = [(str(s), int(fn), str(p)) for s, fn, p in set_list["test"]]
        quality = {
            str(a["sequence_name"]): float(a["viewpoint_quality_score"])
            for a in read_jgz(cat_dir / "sequence_annotations.jgz")
            if a.get("viewpoint_quality_score") is not None
        }
        frame_anns = read_jgz(cat_dir / "frame_annotations.jgz")
        frames = {(str(a["sequence_name"]), int(a["frame_number"])): a for a in frame_anns}
        self._cache = Co3dCategory(name, self.root, frames, quality, test_list)
        return self._cache

    def category_candidates(self, category: str, recipe) -> tuple[list[EvalSequence], dict[str, list[str]]]:
        """Surviving sequences of one category under a sampling recipe, and the dropped ones by reason.

        Args:
            category: category name.
            recipe: a ``tools.eval.sampling.Recipe`` (uses ``drop_empty_masks`` and ``sort_sequences``).
        """
        cat = self.category(category)
        seqs = cat.candidate_sequences(recipe.drop_empty_masks, recipe.sort_sequences)
        if not seqs:
            logger.warning("co3d %s: no sequence survives the filters", category)
        return seqs, {r: list(v) for r, v in cat.dropped.items()}

    def load_frames(self, category: str, sequence: str, frame_ids: Sequence[int]) -> list[EvalFrame]:
        """GT frames of ``sequence`` by ``frame_number``, in the order given."""
        cat = self.category(category)
        return [cat.frame(sequence, int(fn)) for fn in frame_ids]
