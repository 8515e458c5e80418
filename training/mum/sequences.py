"""Sequence sources for MuM pre-training: ordered frames grouped into sequences, per dataset.

A source holds ``sequences`` (lists of frame references, in order) and ``load(ref) -> PIL.Image``. How frames are
grouped follows the MuM paper:

- ``scene``: every frame of a small scene is one sequence;
- ``chunks``: long ordered captures (videos) are cut into consecutive chunks of ``chunk_length`` (100) frames;
- ``overlap``: where pairwise overlap scores exist, sequences are chains: from a random anchor, repeatedly append
  the unused frame that overlaps the chain's last frame most, until none overlaps more than ``min_overlap`` or
  the chain has ``chunk_length`` frames.

Kinds: ``folder`` (``root/<scene>/<frames>``, natural file-name order, optional ``<scene>/overlaps.json``),
``co3d`` (CO3Dv2 annotations, frames ordered by ``frame_number``; read with ``recon.datasets.co3d.read_jgz``),
``synthetic`` (``tools.synth.render_scene``, rendered once in memory), ``images`` (single images), ``sequences``
(a file of ``training.mum.overlaps``: MuM's MegaDepth overlap chains and MegaScenes IoU chains).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from training.common.config import DataConfigError
from training.common.data import IMAGE_EXTENSIONS, list_image_folder, load_rgb
from training.mum.config import DatasetConfig

logger = logging.getLogger(__name__)


def natural_key(name: str) -> list:
    """Sort key treating digit runs as numbers: ``frame2 < frame10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def chunk(frames: Sequence, length: int) -> list[list]:
    """Consecutive chunks of ``length`` frames; a last chunk shorter than 2 frames is dropped."""
    out = [list(frames[i : i + length]) for i in range(0, len(frames), length)]
    return [c for c in out if len(c) >= 2]


def overlap_chains(
    num_frames: int,
    pairs: Sequence[tuple[int, int, float]],
    *,
    num_chains: int,
    max_length: int,
    min_overlap: float,
    rng: np.random.Generator,
) -> list[list[int]]:
    """Greedy overlap chains over ``num_frames`` frames (see the module doc); chains shorter than 2 are dropped.

    Args:
        num_frames: F.
        pairs: ``(a, b, score)`` with frame indices in ``[0, F)``; symmetric, the larger score of duplicates wins.
        num_chains: anchors drawn (without replacement while possible).
        max_length: frames per chain at most.
        min_overlap: a frame joins only if its score with the chain's last frame exceeds this.
        rng: anchor draws.

    Returns:
        Lists of frame indices.
    """
    scores = np.full((num_frames, num_frames), -np.inf)
    for a, b, s in pairs:
        scores[a, b] = max(scores[a, b], s)
        scores[b, a] = max(scores[b, a], s)
    np.fill_diagonal(scores, -np.inf)
    anchors = rng.permutation(num_frames)[: min(num_chains, num_frames)]
    chains = []
    for anchor in anchors:
        chain = [int(anchor)]
        used = np.zeros(num_frames, dtype=bool)
        used[anchor] = True
        while len(chain) < max_length:
            row = np.where(used, -np.inf, scores[chain[-1]])
            nxt = int(np.argmax(row))
            if not row[nxt] > min_overlap:
                break
            chain.append(nxt)
            used[nxt] = True
        if len(chain) >= 2:
            chains.append(chain)
    return chains


class Source:
    """A named list of sequences of frame references, and a loader for a reference."""

    def __init__(self, name: str, sequences: list[list], weight: float = 1.0) -> None:
        self.name = name
        self.sequences = sequences
        self.weight = weight
        self.lengths = np.array([len(s) for s in sequences], dtype=np.int64)

    def load(self, ref):
        """``PIL.Image`` (RGB) of one frame reference."""
        return load_rgb(ref)

    @property
    def num_frames(self) -> int:
        return int(self.lengths.sum())

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {len(self.sequences)} sequences, {self.num_frames} frames)"


def _group(cfg: DatasetConfig, frames: list, overlap: list[tuple[int, int, float]] | None, seed: int) -> list[list]:
    """Sequences of one scene's ordered ``frames`` according to ``cfg.sequences`` (see the module doc)."""
    mode = cfg.sequences
    if mode == "auto":
        mode = "overlap" if overlap is not None else ("scene" if len(frames) <= cfg.chunk_length else "chunks")
    if mode == "overlap":
        if overlap is None:
            raise DataConfigError(f"{cfg.name}: sequences = overlap but a scene has no {cfg.overlap_file}")
        chains = overlap_chains(
            len(frames), overlap, num_chains=cfg.chains_per_scene, max_length=cfg.chunk_length,
            min_overlap=cfg.min_overlap, rng=np.random.default_rng(seed),
        )  # fmt: skip
        return [[frames[i] for i in c] for c in chains]
    if mode == "chunks":
        return chunk(frames, cfg.chunk_length)
    return [list(frames)] if len(frames) >= 2 else []


def _read_overlaps(path: Path, names: list[str], dataset: str) -> list[tuple[int, int, float]]:
    """``{"pairs": [[a, b, score], ...]}`` with frames given by file name or index -> index triples."""
    try:
        data = json.loads(path.read_text())
        raw = data["pairs"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataConfigError(f"{dataset}: cannot read overlap scores {path}: {err}") from None
    index = {n: i for i, n in enumerate(names)}
    out = []
    for item in raw:
        a, b, s = item
        try:
            ia = a if isinstance(a, int) else index[a]
            ib = b if isinstance(b, int) else index[b]
        except KeyError as err:
            raise DataConfigError(f"{dataset}: {path} names frame {err.args[0]!r}, not in the scene folder") from None
        if not (0 <= ia < len(names) and 0 <= ib < len(names)):
            raise DataConfigError(f"{dataset}: {path} has frame index out of range in {item}")
        out.append((ia, ib, float(s)))
    return out


def folder_source(cfg: DatasetConfig, seed: int = 0) -> Source:
    """Scenes = sub-folders of ``cfg.root`` holding images (or the root itself when it holds images)."""
    root = Path(cfg.root)
    if not root.is_dir():
        raise DataConfigError(f"dataset {cfg.name!r}: folder not found: {root}")
    scene_dirs = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    scene_dirs.sort(key=lambda p: natural_key(p.name))
    if any(_images_in(root)):
        scene_dirs = [root, *scene_dirs]
    sequences = []
    for k, scene in enumerate(scene_dirs):
        files = sorted(_images_in(scene), key=lambda p: natural_key(p.name))
        if len(files) < 2:
            continue
        overlap_path = scene / cfg.overlap_file
        overlap = _read_overlaps(overlap_path, [f.name for f in files], cfg.name) if overlap_path.is_file() else None
        sequences += _group(cfg, [str(f) for f in files], overlap, seed + k)
    if not sequences:
        raise DataConfigError(f"dataset {cfg.name!r}: no scene with at least 2 images under {root}")
    return Source(cfg.name, sequences, cfg.weight)


def _images_in(folder: Path):
    return (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and p.name[0] != ".")


def co3d_source(cfg: DatasetConfig, seed: int = 0) -> Source:
    """CO3Dv2: every annotated sequence of the chosen categories, frames in ``frame_number`` order."""
    from recon.datasets.co3d import read_jgz
    from recon.datasets.data import DatasetError

    root = Path(cfg.root)
    if not root.is_dir():
        raise DataConfigError(f"dataset {cfg.name!r}: CO3D root not found: {root}")
    categories = list(cfg.categories) or sorted(
        d.name for d in root.iterdir() if (d / "frame_annotations.jgz").is_file()
    )
    sequences = []
    for category in categories:
        try:
            anns = read_jgz(root / category / "frame_annotations.jgz")
        except DatasetError as err:
            raise DataConfigError(f"dataset {cfg.name!r}: {err}") from None
        per_seq: dict[str, list[tuple[int, str]]] = {}
        for a in anns:
            per_seq.setdefault(str(a["sequence_name"]), []).append((int(a["frame_number"]), a["image"]["path"]))
        for k, name in enumerate(sorted(per_seq)):
            frames = [str(root / p) for _, p in sorted(per_seq[name])]
            sequences += _group(cfg, frames, None, seed + k)
    if not sequences:
        raise DataConfigError(f"dataset {cfg.name!r}: no CO3D sequence under {root} (categories {categories})")
    return Source(cfg.name, sequences, cfg.weight)


class SyntheticSource(Source):
    """Scenes rendered once by ``tools.synth.render_scene`` and kept in memory (uint8); references are indices."""

    def __init__(self, cfg: DatasetConfig, seed: int = 0) -> None:
        from tools.synth import render_scene

        self.images = []
        sequences = []
        for i in range(cfg.synthetic_scenes):
            layout = cfg.synthetic_layout
            if layout == "mixed":
                layout = "orbit" if i % 2 == 0 else "room_walk"
            size = (cfg.synthetic_size, cfg.synthetic_size)
            views = render_scene(layout, n_views=cfg.synthetic_views, size=size, seed=seed * 1000 + i)
            first = len(self.images)
            self.images += [v.rgb for v in views]
            sequences += _group(cfg, list(range(first, len(self.images))), None, seed + i)
        super().__init__(cfg.name, sequences, cfg.weight)

    def load(self, ref):
        from PIL import Image

        return Image.fromarray(self.images[ref])


def images_source(cfg: DatasetConfig) -> Source:
    """Single images (each its own one-frame sequence), for single-view batches."""
    try:
        files = list_image_folder(cfg.root)
    except FileNotFoundError as err:
        raise DataConfigError(f"dataset {cfg.name!r}: {err}") from None
    if not files:
        raise DataConfigError(f"dataset {cfg.name!r}: no image under {cfg.root}")
    return Source(cfg.name, [[str(f)] for f in files], cfg.weight)


def sequences_file_source(cfg: DatasetConfig) -> Source:
    """Sequences listed in a ``training.mum.overlaps`` file; paths relative to ``cfg.root``; shorter than
    ``cfg.min_length`` dropped."""
    import gzip

    path = Path(cfg.sequences_file)
    if not path.is_file():
        raise DataConfigError(
            f"dataset {cfg.name!r}: sequences file not found: {path} (python -m training.mum.overlaps)"
        )
    try:
        raw = path.read_bytes()
        data = json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
        lists = data["sequences"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataConfigError(f"dataset {cfg.name!r}: cannot read {path}: {err}") from None
    root = Path(cfg.root)
    sequences = [[str(root / p) for p in seq] for seq in lists if len(seq) >= max(2, cfg.min_length)]
    if not sequences:
        raise DataConfigError(f"dataset {cfg.name!r}: no sequence of at least {cfg.min_length} frames in {path}")
    missing = [p for p in (sequences[0][0], sequences[-1][-1]) if not Path(p).is_file()]
    if missing:
        raise DataConfigError(f"dataset {cfg.name!r}: {missing[0]} not found: is root {root} the dataset folder?")
    return Source(cfg.name, sequences, cfg.weight)


def build_source(cfg: DatasetConfig, seed: int = 0) -> Source:
    """The source of one dataset config (see the module doc)."""
    if cfg.kind == "sequences":
        source = sequences_file_source(cfg)
    elif cfg.kind == "folder":
        source = folder_source(cfg, seed)
    elif cfg.kind == "co3d":
        source = co3d_source(cfg, seed)
    elif cfg.kind == "synthetic":
        source = SyntheticSource(cfg, seed)
    else:
        source = images_source(cfg)
    logger.info("%s", source)
    return source
