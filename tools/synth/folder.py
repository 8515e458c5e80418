"""recon's plain folder layout: images plus one ``cameras.json`` holding ``K`` and ``T_world_cam`` per image.

Layout written by ``write_folder(views, out_dir)``::

    out_dir/
      view_000.jpg ...               # images at the top level, so `recon run out_dir` finds them directly
      cameras.json                   # written last: its presence means the folder is complete
      depth/view_000.npz ...         # only with with_depth=True: depth [H,W] float32, mask, fg_mask [H,W] bool

``cameras.json``::

    {"format": "recon-cameras", "version": 1,
     "convention": "...",            # a sentence restating the conventions below
     "meta": {...},                  # free-form: generator, layout, seed, command
     "views": [{"name": "view_000", "image": "view_000.jpg", "width": W, "height": H,
                "K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],      # pixels, centre of top-left pixel at (0, 0)
                "T_world_cam": [[...4...], x4],                  # camera-to-world, OpenCV camera
                "depth": "depth/view_000.npz"}, ...]}            # optional
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from backbone.fileio import write_bytes_atomic, write_json_atomic
from recon.errors import UserError
from tools.synth.io_utils import IMAGE_FORMATS, write_image_atomic
from tools.synth.render import SynthView

logger = logging.getLogger(__name__)

FORMAT = "recon-cameras"
VERSION = 1
CONVENTION = (
    "K: 3x3 intrinsics in pixels, centre of the top-left pixel at (0, 0). T_world_cam: 4x4 camera-to-world "
    "pose of an OpenCV camera (x right, y down, z forward). depth: z-depth in the camera frame, 0 = invalid."
)


class CamerasFileError(UserError, ValueError):
    """A ``cameras.json`` that is missing, malformed or inconsistent with its images."""


def write_folder(
    views: Sequence[SynthView],
    out_dir: str | os.PathLike,
    image_format: str = "jpg",
    quality: int = 90,
    with_depth: bool = False,
    meta: dict | None = None,
) -> Path:
    """Write views as images plus ``cameras.json`` (see the module docstring for the exact layout).

    Args:
        views: views with ``rgb`` set; names must be unique.
        out_dir: target folder (created).
        image_format: ``"jpg"`` or ``"png"``.
        quality: JPEG quality.
        with_depth: also write ``depth/<name>.npz`` (compressed ``depth``, ``mask``, ``fg_mask``).
        meta: free-form JSON-serialisable record stored under ``"meta"``.

    Returns:
        The path of ``cameras.json``.
    """
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {image_format!r}")
    names = [v.name for v in views]
    if len(set(names)) != len(names):
        raise ValueError(f"view names must be unique, got {names}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for v in views:
        if v.rgb is None:
            raise ValueError(f"view {v.name!r} has no image to write")
        W, H = v.size
        image = f"{v.name}.{image_format}"
        write_image_atomic(out / image, v.rgb, quality)
        rec = {
            "name": v.name,
            "image": image,
            "width": W,
            "height": H,
            "K": np.asarray(v.K, dtype=np.float64).tolist(),
            "T_world_cam": np.asarray(v.T_world_cam, dtype=np.float64).tolist(),
        }
        if with_depth:
            if v.depth is None:
                raise ValueError(f"with_depth=True but view {v.name!r} has no depth")
            arrays = {"depth": v.depth.astype(np.float32)}
            arrays["mask"] = v.mask if v.mask is not None else v.depth > 0
            if v.fg_mask is not None:
                arrays["fg_mask"] = v.fg_mask
            buf = io.BytesIO()
            np.savez_compressed(buf, **arrays)
            rec["depth"] = f"depth/{v.name}.npz"
            write_bytes_atomic(out / rec["depth"], buf.getvalue())
        records.append(rec)
    doc = {"format": FORMAT, "version": VERSION, "convention": CONVENTION, "meta": meta or {}, "views": records}
    return write_json_atomic(out / "cameras.json", doc)


def _matrix(rec: dict, key: str, shape: tuple[int, int], where: str) -> np.ndarray:
    try:
        m = np.asarray(rec[key], dtype=np.float64)
    except KeyError:
        raise CamerasFileError(f"{where}: missing {key!r}") from None
    except (TypeError, ValueError) as err:
        raise CamerasFileError(f"{where}: {key!r} is not a numeric matrix ({err})") from None
    if m.shape != shape or not np.all(np.isfinite(m)):
        raise CamerasFileError(f"{where}: {key!r} must be a finite {shape[0]}x{shape[1]} matrix, got shape {m.shape}")
    return m


def read_folder(folder: str | os.PathLike, load_images: bool = True, load_depth: bool = True) -> list[SynthView]:
    """Read a folder written by ``write_folder`` (or any folder with a ``cameras.json`` in that format).

    Args:
        folder: the folder holding ``cameras.json``.
        load_images: decode the images into ``rgb``; otherwise ``rgb`` is ``None``.
        load_depth: load ``depth``/``mask``/``fg_mask`` where the file names a depth record.

    Returns:
        Views in file order, with ``K [3, 3]`` and ``T_world_cam [4, 4]`` float64, ``rgb`` uint8 ``[H, W, 3]``
        (or ``None``), ``depth``/``mask`` (or ``None`` when absent).

    Raises:
        CamerasFileError: missing or malformed ``cameras.json``, or an image whose size disagrees with it.
    """
    folder = Path(folder)
    path = folder / "cameras.json"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CamerasFileError(f"no cameras.json in {folder}") from None
    except json.JSONDecodeError as err:
        raise CamerasFileError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("views"), list):
        raise CamerasFileError(f"{path} is not a {FORMAT!r} file (needs 'format': {FORMAT!r} and a 'views' list)")
    if doc.get("version", VERSION) > VERSION:
        raise CamerasFileError(f"{path} has version {doc['version']}; this recon reads up to {VERSION}")
    views = []
    for i, rec in enumerate(doc["views"]):
        where = f"{path} view {i}"
        if "name" not in rec or "image" not in rec:
            raise CamerasFileError(f"{where}: needs 'name' and 'image'")
        K = _matrix(rec, "K", (3, 3), where)
        T = _matrix(rec, "T_world_cam", (4, 4), where)
        rgb = None
        if load_images:
            from PIL import Image

            img_path = folder / rec["image"]
            try:
                with Image.open(img_path) as im:
                    rgb = np.asarray(im.convert("RGB"))
            except FileNotFoundError:
                raise CamerasFileError(f"{where}: image {img_path} is missing") from None
            if "width" in rec and (rgb.shape[1], rgb.shape[0]) != (rec["width"], rec["height"]):
                raise CamerasFileError(
                    f"{where}: image is {rgb.shape[1]}x{rgb.shape[0]} but cameras.json says "
                    f"{rec['width']}x{rec['height']}"
                )
        depth = mask = fg = None
        if load_depth and rec.get("depth"):
            with np.load(folder / rec["depth"]) as z:
                depth = z["depth"]
                mask = z["mask"] if "mask" in z else depth > 0
                fg = z["fg_mask"] if "fg_mask" in z else None
        views.append(SynthView(str(rec["name"]), rgb, depth, mask, K, T, fg))
    return views
