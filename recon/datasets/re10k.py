"""RealEstate10K test-clip reader (reference co3d_eval.md section 5).

Layout (PoseDiffusion's): camera files ``<root>/<split>/<clip>.txt`` (the RealEstate10K download) and extracted
frames ``<root>/frames/<split>/<clip>/<int(timestamp)>.png``. Frames directly under ``<root>/<split>/<clip>/``
are accepted too. A camera file's first line is the video URL; every other line is one frame:
``timestamp_us fx fy cx cy k1 k2 r00 r01 r02 t0 r10 r11 r12 t1 r20 r21 r22 t2`` with intrinsics normalised by
the image size and an OpenCV world-to-camera ``[R|t]``.

The benchmark's 1.8K clips are the ids of PoseDiffusion's ``re10k_test_1800.txt`` (pass it as the split file;
it is not shipped here). Frames whose image is missing are skipped, clips without a frame folder are dropped
(some videos are no longer available), as are clips with fewer than ``min_frames`` frames.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recon.datasets.cameras import re10k_to_opencv
from recon.datasets.data import DatasetError, EvalFrame, EvalSequence

logger = logging.getLogger(__name__)

CATEGORY = "re10k"  # one pseudo-category: metrics pool all clips
IMAGE_EXTS = (".png", ".jpg")
DROP_REASONS = ("no_frames", "too_few_frames")


def read_camera_file(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse one RealEstate10K camera file.

    Returns:
        ``(timestamps [n] int64, intrinsics [n, 4] (fx, fy, cx, cy normalised), w2c [n, 3, 4])``.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()[1:]
    except FileNotFoundError:
        raise DatasetError(f"missing RealEstate10K camera file {path}") from None
    rows = [ln.split() for ln in lines if ln.strip()]
    bad = [k + 2 for k, r in enumerate(rows) if len(r) != 19]
    if bad:
        raise DatasetError(f"{path}: lines {bad[:5]} do not have 19 values (timestamp, 6 intrinsics, 12 pose)")
    vals = np.array(rows, dtype=np.float64).reshape(-1, 19)
    return vals[:, 0].astype(np.int64), vals[:, 1:5], vals[:, 7:].reshape(-1, 3, 4)


class Re10kReader:
    """Reads RealEstate10K clips.

    Args:
        root: dataset root (see the module docstring for the layout).
        split: split folder name.
        split_file: text file of clip ids, one per line (PoseDiffusion's ``re10k_test_1800.txt``); all camera
            files of the split folder, sorted, when ``None``.
        min_frames: clips with fewer frames (with an image on disk) are dropped.
    """

    dataset = "re10k"

    def __init__(self, root: str | Path, split: str = "test", split_file: str | Path | None = None, min_frames=10):
        self.root = Path(root)
        self.cam_dir = self.root / split
        if not self.cam_dir.is_dir():
            raise DatasetError(f"RealEstate10K camera folder {self.cam_dir} does not exist")
        self.frame_dirs = [self.root / "frames" / split, self.root / split]
        self.split_file = Path(split_file) if split_file else None
        self.min_frames = int(min_frames)
        self._size_cache: dict[str, tuple[int, int]] = {}

    def clip_ids(self) -> list[str]:
        """Clip ids to evaluate, in iteration order (split-file order, else sorted)."""
        if self.split_file is None:
            ids = sorted(p.stem for p in self.cam_dir.glob("*.txt"))
            logger.warning(
                "no split file: evaluating all %d clips of %s, not PoseDiffusion's 1.8K list", len(ids), self.cam_dir
            )
            return ids
        try:
            text = self.split_file.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DatasetError(f"split file {self.split_file} does not exist") from None
        ids = list(dict.fromkeys(ln.strip() for ln in text.splitlines() if ln.strip()))
        return ids

    def resolve_categories(self, requested: Sequence[str] | None) -> list[str]:
        if requested and list(requested) != [CATEGORY]:
            raise DatasetError(f"RealEstate10K has no categories (got {list(requested)}); omit --categories")
        return [CATEGORY]

    def _frame_dir(self, clip: str) -> Path | None:
        for d in self.frame_dirs:
            if (d / clip).is_dir():
                return d / clip
        return None

    def _image_size(self, clip: str, path: Path) -> tuple[int, int]:
        if clip not in self._size_cache:
            from PIL import Image

            with Image.open(path) as im:  # reads the header only
                self._size_cache[clip] = (im.height, im.width)
        return self._size_cache[clip]

    def clip(self, clip: str) -> EvalSequence | None:
        """All frames of a clip that have an image on disk, in file order; ``None`` without a frame folder."""
        ts, intr, w2c = read_camera_file(self.cam_dir / f"{clip}.txt")
        frame_dir = self._frame_dir(clip)
        if frame_dir is None:
            return None
        present = {p.stem: p for p in frame_dir.iterdir() if p.suffix.lower() in IMAGE_EXTS}
        frames = []
        for t, k, P in zip(ts, intr, w2c, strict=True):
            path = present.get(str(int(t)))
            if path is None:
                continue
            T_world_cam, K = re10k_to_opencv(k, P, self._image_size(clip, path))
            frames.append(
                EvalFrame(
                    frame_id=int(t),
                    rel_path=str(path.relative_to(self.root)),
                    image_path=str(path),
                    T_world_cam=T_world_cam,
                    K=K,
                    image_size=self._size_cache[clip],
                )
            )
        return EvalSequence(CATEGORY, clip, frames)

    def category_candidates(self, category: str, recipe) -> tuple[list[EvalSequence], dict[str, list[str]]]:
        """Clips that pass the filters, in split-file order (sorted when the recipe sorts sequences)."""
        self.resolve_categories([category])
        ids = self.clip_ids()
        if recipe.sort_sequences:
            ids = sorted(ids)
        dropped: dict[str, list[str]] = {r: [] for r in DROP_REASONS}
        out = []
        for clip in ids:
            seq = self.clip(clip)
            if seq is None or not seq.frames:
                dropped["no_frames"].append(clip)
            elif len(seq.frames) < self.min_frames:
                dropped["too_few_frames"].append(clip)
            else:
                out.append(seq)
        logger.info("re10k: %d clips kept; dropped %s", len(out), {r: len(v) for r, v in dropped.items()})
        return out, dropped

    def load_frames(self, category: str, sequence: str, frame_ids: Sequence[int]) -> list[EvalFrame]:
        """GT frames of a clip by timestamp, in the order given."""
        seq = self.clip(sequence)
        if seq is None:
            raise DatasetError(f"clip {sequence} has no frame folder under {[str(d) for d in self.frame_dirs]}")
        by_id = {f.frame_id: f for f in seq.frames}
        missing = [t for t in frame_ids if int(t) not in by_id]
        if missing:
            raise DatasetError(f"clip {sequence}: frames {missing[:5]} are missing (camera line or image)")
        return [by_id[int(t)] for t in frame_ids]
