"""MuM's training sequences, built from each scene's own COLMAP reconstruction (shared 3D points).

Two builders, as MuM's ``train-dev`` preprocessing (facts read from davnords/MuM; the code here is our own):

- **MegaDepth** (``experiments/preprocess/megadepth``, after D2-Net's ``preprocess_scene.py``): the overlap of
  image ``i`` with ``j`` is the share of ``i``'s triangulated points that ``j`` also sees,
  ``|P_i & P_j| / |P_i|`` (asymmetric). A sequence is a random anchor followed by the ``length - 1`` images it
  overlaps most (any overlap >= 0, ties in index order); an anchor with fewer candidates gives no sequence;
  ``1000`` anchors are drawn per scene (with replacement) and sequences have ``256`` images. The training reader
  then drops sequences shorter than 24 (``min_length``).
- **MegaScenes** (``experiments/preprocess/megascenes.py``, "IoU like CroCo v2"): greedy chains. Seeds are taken in
  decreasing number of visible points; from the current image, the next is the unused image maximising
  ``iou x 4 cos (1 - cos)`` where ``iou = |P_cur & P_other| / |P_cur|`` must be at least 0.10 and ``cos`` is the
  cosine of the relative rotation angle, which must be at least 10 degrees (viewpoint diversity: the factor
  ``4 cos (1 - cos)`` peaks at 60 degrees). Chains shorter than ``min_length`` (24) are discarded and their images
  freed for later seeds.

Reconstructions are read from ``images.bin`` or ``images.txt`` (COLMAP's formats: pose ``qvec`` (w, x, y, z) and
``tvec`` world-to-camera, and the 3D point id of each 2D point, -1 = none); only the images file is needed.

Output (``write_sequences``): gzipped JSON ``{"sequences": [[image path relative to the dataset root, ...], ...]}``,
read by ``training.mum.sequences`` (``kind = "sequences"``).

Command line::

    python -m training.mum.overlaps megadepth --root /data/MegaDepth/Undistorted_SfM --out md_train.json.gz
    python -m training.mum.overlaps megascenes --root /data/MegaScenes --out ms_train.json.gz
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.common.config import DataConfigError

logger = logging.getLogger(__name__)


class ColmapModelError(DataConfigError):
    """A COLMAP model folder is missing or malformed; the message names the file."""


@dataclass
class ColmapImage:
    """One registered image of a reconstruction."""

    name: str
    """File name relative to the reconstruction's image folder."""
    R_cam_world: np.ndarray
    """``[3, 3]`` world-to-camera rotation."""
    point3D_ids: np.ndarray
    """``[P]`` int64 ids of the triangulated points the image sees (unique, -1 removed)."""


def _qvec_to_matrix(q) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    w, x, y, z = (float(v) for v in q)
    return Rotation.from_quat([x, y, z, w]).as_matrix()


def read_colmap_images(model_dir: str | os.PathLike) -> list[ColmapImage]:
    """Images of a COLMAP model folder (``images.bin`` preferred, else ``images.txt``), in file order.

    Raises:
        ColmapModelError: neither file exists, or the file is truncated / malformed.
    """
    model_dir = Path(model_dir)
    if (model_dir / "images.bin").is_file():
        return _read_images_bin(model_dir / "images.bin")
    if (model_dir / "images.txt").is_file():
        return _read_images_txt(model_dir / "images.txt")
    raise ColmapModelError(f"{model_dir}: no images.bin or images.txt (a COLMAP sparse model folder)")


def _read_images_txt(path: Path) -> list[ColmapImage]:
    lines = [ln for ln in path.read_text().splitlines() if not ln.startswith("#")]
    out = []
    try:
        for head, points in zip(lines[0::2], lines[1::2], strict=False):
            f = head.split()
            ids = np.asarray(points.split()[2::3], dtype=np.int64)
            out.append(ColmapImage(" ".join(f[9:]), _qvec_to_matrix(f[1:5]), np.unique(ids[ids >= 0])))
    except (ValueError, IndexError) as err:
        raise ColmapModelError(f"{path}: malformed images.txt ({err})") from None
    return out


def _read_images_bin(path: Path) -> list[ColmapImage]:
    data = path.read_bytes()
    out = []
    try:
        (n,) = struct.unpack_from("<Q", data, 0)
        off = 8
        for _ in range(n):
            _image_id, qw, qx, qy, qz, _tx, _ty, _tz, _cam = struct.unpack_from("<i7di", data, off)
            off += 4 + 7 * 8 + 4
            end = data.index(b"\0", off)
            name = data[off:end].decode("utf-8")
            off = end + 1
            (n2d,) = struct.unpack_from("<Q", data, off)
            off += 8
            rec = np.frombuffer(data, dtype=np.dtype([("x", "<f8"), ("y", "<f8"), ("id", "<i8")]), count=n2d,
                                offset=off)  # fmt: skip
            off += 24 * n2d
            ids = rec["id"].astype(np.int64)
            out.append(ColmapImage(name, _qvec_to_matrix([qw, qx, qy, qz]), np.unique(ids[ids >= 0])))
    except (struct.error, ValueError) as err:
        raise ColmapModelError(f"{path}: truncated or malformed images.bin ({err})") from None
    return out


def shared_points(images: list[ColmapImage]) -> tuple[np.ndarray, np.ndarray]:
    """``(S [N, N], n [N])``: points seen by both images, and by each image (sparse incidence product)."""
    from scipy.sparse import csr_matrix

    all_ids = np.unique(np.concatenate([im.point3D_ids for im in images] or [np.zeros(0, np.int64)]))
    rows = np.concatenate([np.full(len(im.point3D_ids), i) for i, im in enumerate(images)] or [np.zeros(0)])
    cols = np.searchsorted(all_ids, np.concatenate([im.point3D_ids for im in images] or [np.zeros(0, np.int64)]))
    A = csr_matrix((np.ones(len(rows), np.float64), (rows, cols)), shape=(len(images), len(all_ids)))
    S = (A @ A.T).toarray()
    return S, np.diag(S).copy()


def overlap_matrix(images: list[ColmapImage]) -> np.ndarray:
    """D2-Net / MuM overlap ``O[i, j] = |P_i & P_j| / |P_i|`` (``[N, N]``; rows of images without points are 0)."""
    S, n = shared_points(images)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n[:, None] > 0, S / n[:, None], 0.0)


def topk_sequences(
    overlap: np.ndarray, *, length: int = 256, num_sequences: int = 1000, rng: np.random.Generator
) -> list[list[int]]:
    """MuM's MegaDepth sequences: ``num_sequences`` random anchors, each with its ``length - 1`` most overlapping
    images (``overlap >= 0``, stable order on ties); anchors with too few candidates are skipped."""
    n = overlap.shape[0]
    out = []
    for _ in range(num_sequences):
        anchor = int(rng.integers(n))
        row = overlap[anchor]
        candidates = np.flatnonzero(row >= 0)
        candidates = candidates[candidates != anchor]
        if len(candidates) < length - 1:
            continue
        best = candidates[np.argsort(-row[candidates], kind="stable")][: length - 1]
        out.append([anchor, *best.tolist()])
    return out


def iou_sequences(
    images: list[ColmapImage], *, min_iou: float = 0.10, min_angle_deg: float = 10.0, min_length: int = 24
) -> list[list[int]]:
    """MuM's MegaScenes chains (see the module doc); returns lists of image indices."""
    S, n = shared_points(images)
    R = np.stack([im.R_cam_world for im in images]) if images else np.zeros((0, 3, 3))
    # cos of the relative rotation angle between every two cameras: (trace(R_j R_i^T) - 1) / 2.
    cos = np.clip((np.einsum("iab,jab->ij", R, R) - 1.0) / 2.0, -1.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(n[:, None] > 0, S / n[:, None], 0.0)
    score = iou * 4.0 * cos * (1.0 - cos)
    eligible = (iou >= min_iou) & (np.degrees(np.arccos(cos)) >= min_angle_deg)
    np.fill_diagonal(eligible, False)
    used = np.zeros(len(images), dtype=bool)
    sequences = []
    for seed in np.argsort(-n, kind="stable"):
        if used[seed]:
            continue
        chain = [int(seed)]
        used[seed] = True
        while True:
            cand = np.where(eligible[chain[-1]] & ~used, score[chain[-1]], -np.inf)
            nxt = int(np.argmax(cand))
            if not np.isfinite(cand[nxt]):
                break
            chain.append(nxt)
            used[nxt] = True
        if len(chain) >= min_length:
            sequences.append(chain)
        else:
            used[chain] = False  # too short: its images may join a later chain
    return sequences


def write_sequences(path: str | os.PathLike, sequences: list[list[str]]) -> Path:
    """Write ``{"sequences": [[path, ...], ...]}`` as gzipped JSON (atomically)."""
    from backbone import fileio

    payload = gzip.compress(json.dumps({"sequences": sequences}).encode("utf-8"))
    return fileio.write_bytes_atomic(path, payload)


def megadepth_sequences(root: Path, *, length: int, num_sequences: int, seed: int) -> list[list[str]]:
    """Every ``<scene>/sparse-txt`` (or ``sparse``) model of an ``Undistorted_SfM`` root -> image paths
    ``<scene>/images/<name>`` (registered images missing from ``<scene>/images`` are left out)."""
    scenes = sorted(p for p in root.iterdir() if (p / "sparse-txt").is_dir() or (p / "sparse").is_dir())
    if not scenes:
        raise ColmapModelError(f"{root}: no <scene>/sparse-txt folder (the Undistorted_SfM layout of MegaDepth)")
    out = []
    for k, scene in enumerate(scenes):
        model = scene / "sparse-txt" if (scene / "sparse-txt").is_dir() else scene / "sparse"
        # As D2-Net's scene_info, only images present on disk take part (their overlaps stay -1 there).
        images = [im for im in read_colmap_images(model) if (scene / "images" / im.name).is_file()]
        chains = topk_sequences(overlap_matrix(images), length=length, num_sequences=num_sequences,
                                rng=np.random.default_rng(seed + k))  # fmt: skip
        out += [[f"{scene.name}/images/{images[i].name}" for i in c] for c in chains]
        logger.info("%s: %d images, %d sequences", scene.name, len(images), len(chains))
    return out


def megascenes_sequences(root: Path, *, min_length: int) -> list[list[str]]:
    """Every ``reconstruct/<a>/<b>/colmap/<r>`` model of a MegaScenes root -> image paths ``images/<a>/<b>/<name>``."""
    models = sorted(p.parent for p in root.glob("reconstruct/*/*/colmap/*/images.bin"))
    if not models:
        raise ColmapModelError(f"{root}: no reconstruct/<a>/<b>/colmap/<r>/images.bin (the MegaScenes layout)")
    out = []
    for model in models:
        a, b = model.parts[-4], model.parts[-3]
        images = read_colmap_images(model)
        out += [[f"images/{a}/{b}/{images[i].name}" for i in c] for c in iou_sequences(images, min_length=min_length)]
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Build MuM training sequences from COLMAP reconstructions.")
    parser.add_argument("dataset", choices=("megadepth", "megascenes"))
    parser.add_argument("--root", required=True, help="Undistorted_SfM folder (MegaDepth) or MegaScenes root")
    parser.add_argument("--out", required=True, help="output .json.gz")
    parser.add_argument("--length", type=int, default=256, help="MegaDepth: images per sequence")
    parser.add_argument("--per-scene", type=int, default=1000, help="MegaDepth: anchors drawn per scene")
    parser.add_argument("--min-length", type=int, default=24, help="MegaScenes: shortest chain kept")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    root = Path(args.root)
    try:
        if args.dataset == "megadepth":
            seqs = megadepth_sequences(root, length=args.length, num_sequences=args.per_scene, seed=args.seed)
        else:
            seqs = megascenes_sequences(root, min_length=args.min_length)
    except ColmapModelError as err:
        raise SystemExit(f"error: {err}") from None
    print(f"{len(seqs)} sequences -> {write_sequences(args.out, seqs)}")


if __name__ == "__main__":
    main()
