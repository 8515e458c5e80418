"""Load photos (or video frames) into network-ready ``View``s, reporting every input that is not used.

Geometry is the official dust3r ``load_images`` (reference/mast3r.md §4), so a checkpoint sees the images it was
trained on: the long side is resized to ``size`` (LANCZOS when shrinking, BICUBIC when enlarging, new size
``round(x * size / max(W, H))``), then a centred crop to multiples of ``patch_size``; a square image becomes
4:3 landscape unless ``square_ok``; ``size == 224`` resizes the short side to 224 and crops a centred square.
Each ``View`` records the scale and crop in ``net_to_orig`` (network pixel -> original pixel, pixel centres at
integer coordinates), so intrinsics can be given and reported in original pixels.

What differs from the official loader, on purpose:

* More formats: JPEG, PNG (8/16-bit, RGBA, grayscale, palette), WebP, TIFF, BMP, GIF; HEIC/HEIF through
  ``pillow-heif`` when installed; videos sampled at ``video_fps`` through PyAV when installed.
* Nothing is dropped silently: unreadable, empty, non-image, duplicate (same file bytes), too small, too large
  and surplus (``max_images``) inputs come back as ``Skipped(path, reason)``.
* 16-bit images are scaled to 8 bits (``convert("RGB")`` would clip them to white); alpha is dropped as the
  official ``convert("RGB")`` does.
* Large JPEGs are decoded at a reduced DCT scale (``draft``) and other large images ``reduce``d first, never
  below ``DRAFT_OVERSAMPLING`` times the target size, to save memory and time; the resampling box is the exact
  original extent, so the geometry (and ``net_to_orig``) is unchanged and pixel values differ only slightly.
  ``draft=False`` decodes at full resolution, as the official code.
* When ``square_ok=False`` turns a square image 4:3 and ``3/4`` of the width is not a multiple of the patch
  size (e.g. 518 / patch 14, where the official crop is 388 px high), the height is floored to a multiple.
* A decompression-bomb guard with a clear, configurable limit (``max_pixels``) replaces PIL's global one.

EXIF focal length (``View.focal_exif``, in original pixels): ``FocalLengthIn35mmFilm`` first, converted through
the image diagonal (the 35 mm equivalent is defined on the 43.27 mm diagonal of a 36x24 mm frame, CIPA
DC-008), else ``FocalLength`` with ``FocalPlaneXResolution``/``FocalPlaneResolutionUnit`` (sensor pixels per
unit, rescaled by ``PixelXDimension`` when the file was resized). Values outside ``[0.1, 10]`` times the long
side are ignored as implausible.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from recon.errors import UserError
from recon.types import View

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset(
    ".jpg .jpeg .jpe .jfif .png .webp .tif .tiff .bmp .dib .gif .heic .heif .hif .avif".split()
)
HEIF_EXTENSIONS = frozenset(".heic .heif .hif".split())
VIDEO_EXTENSIONS = frozenset(".mp4 .mov .m4v .avi .mkv .webm .mpg .mpeg .wmv .flv .ts .mts .3gp".split())
# Files that live beside photos in a scene folder (camera files, notes, our own outputs). Inside a *folder* they
# are passed over quietly; named explicitly, they are still reported as skipped.
SIDECAR_EXTENSIONS = frozenset(".json .txt .md .csv .npz .npy .ply .glb .db .xml .yaml .yml".split())

# 500 Mpx: a 12000x9000 photo (108 Mpx) loads; a crafted 50000x50000 PNG (2.5 Gpx, 7.5 GB decoded) does not.
DEFAULT_MAX_PIXELS = 500_000_000
# Images smaller than this (short side, original pixels) carry too little for the network once enlarged.
DEFAULT_MIN_SIDE = 32
# draft/reduce never go below this many times the target size, so resampling still averages several pixels.
DRAFT_OVERSAMPLING = 4

_EXIF_IFD = 0x8769
_ORIENTATION = 0x0112
_FOCAL_LENGTH = 0x920A
_FOCAL_35MM = 0xA405
_FOCAL_PLANE_X_RES = 0xA20E
_FOCAL_PLANE_UNIT = 0xA210
_PIXEL_X_DIMENSION = 0xA002
_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 1e-3}  # EXIF FocalPlaneResolutionUnit: inch, cm, mm, um
_DIAGONAL_35MM = math.hypot(36.0, 24.0)

# EXIF orientation -> the transpose that displays the stored pixels upright (what ImageOps.exif_transpose does).
_ORIENT_OPS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}

_pil_limit_lock = threading.Lock()


class Skipped(NamedTuple):
    """An input that produced no view, and why."""

    path: str
    reason: str


class ImageLoadError(UserError, ValueError):
    """The inputs cannot be used at all (missing path, missing optional package, too few usable images)."""


class _Skip(Exception):
    """Internal: this one input is skipped with the message as reason."""


def natural_key(name: str) -> list:
    """Sort key that orders ``img2`` before ``img10`` (case-insensitive)."""
    key = [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name.lower())]
    return [*key, (2, 0, name)]  # ties ("img1" / "img01", "a" / "A") broken by the exact name


# --------------------------------------------------------------------------------------------------- geometry


def _long_edge(W0: int, H0: int, size: int) -> int:
    # official: size 224 sets the *short* side to 224 (then a square crop); any other size is the long side
    return round(size * max(W0 / H0, H0 / W0)) if size == 224 else size


def target_geometry(
    W0: int, H0: int, size: int = 512, patch_size: int = 16, square_ok: bool = False
) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
    """Resized size and crop box of the official preprocessing for an (oriented) ``W0 x H0`` image.

    Returns:
        ``((W, H), (left, top, right, bottom))``: the size after resizing and the integer crop box in it;
        ``right - left`` and ``bottom - top`` are multiples of ``patch_size`` (possibly 0 for extreme aspect ratios).
    """
    long_edge = _long_edge(W0, H0, size)
    S = max(W0, H0)
    W, H = (int(round(x * long_edge / S)) for x in (W0, H0))
    cx, cy = W // 2, H // 2
    if size == 224:
        half = min(cx, cy)
        halfw = halfh = (2 * half // patch_size) * patch_size / 2
    else:
        halfw = ((2 * cx) // patch_size) * patch_size / 2
        halfh = ((2 * cy) // patch_size) * patch_size / 2
        if not square_ok and W == H:
            halfh = 3 * halfw / 4
            if (2 * halfh) % patch_size:  # see module docstring: keep the height a multiple of the patch
                halfh = (int(2 * halfh) // patch_size) * patch_size / 2
    # PIL's crop rounds a float box with Python's round(); do it here so the box is explicit
    box = tuple(int(round(v)) for v in (cx - halfw, cy - halfh, cx + halfw, cy + halfh))
    return (W, H), box  # type: ignore[return-value]


def net_to_orig_matrix(orig_size: tuple[int, int], resized: tuple[int, int], box: Sequence[int]) -> np.ndarray:
    """``[3, 3]`` affine map from network pixels to original pixels (pixel centres at integer coordinates).

    PIL's resize maps output pixel centre ``u + 0.5`` to input ``(u + 0.5) * W0 / W``, and the crop shifts by the
    box's top-left corner, so ``x0 = (x + left + 0.5) * W0 / W - 0.5`` (likewise for y).

    Args:
        orig_size: ``(H0, W0)`` original size after EXIF orientation.
        resized: ``(W, H)`` size after resizing.
        box: ``(left, top, right, bottom)`` crop box in the resized image.
    """
    H0, W0 = orig_size
    sx, sy = W0 / resized[0], H0 / resized[1]
    return np.array(
        [[sx, 0.0, (box[0] + 0.5) * sx - 0.5], [0.0, sy, (box[1] + 0.5) * sy - 0.5], [0.0, 0.0, 1.0]],
        dtype=np.float64,
    )


# ------------------------------------------------------------------------------------------------------- EXIF


def _exif_tag(exif, tag: int):
    value = exif.get_ifd(_EXIF_IFD).get(tag)
    return exif.get(tag) if value is None else value  # some writers put Exif tags in IFD0


def exif_focal_px(exif, raw_size: tuple[int, int]) -> tuple[float | None, str]:
    """Focal length in pixels of the stored image from EXIF tags, and which tags gave it.

    Args:
        exif: ``PIL.Image.Exif`` of the file.
        raw_size: ``(W, H)`` of the stored (not yet oriented) image; focal lengths do not change with orientation.

    Returns:
        ``(focal_px, source)``; ``(None, reason)`` when absent or implausible.
    """
    W, H = raw_size
    try:
        f35 = _exif_tag(exif, _FOCAL_35MM)
        if f35 and float(f35) > 0:
            f = float(f35) * math.hypot(W, H) / _DIAGONAL_35MM
            source = f"FocalLengthIn35mmFilm={float(f35):g}mm"
        else:
            f_mm, res, unit = (_exif_tag(exif, t) for t in (_FOCAL_LENGTH, _FOCAL_PLANE_X_RES, _FOCAL_PLANE_UNIT))
            if not (f_mm and res and float(f_mm) > 0 and float(res) > 0):
                return None, "no focal tags"
            px_per_mm = float(res) / _UNIT_MM.get(int(unit or 2), 25.4)  # EXIF default unit: inch
            stored_w = _exif_tag(exif, _PIXEL_X_DIMENSION)
            scale = W / float(stored_w) if stored_w and float(stored_w) > 0 else 1.0  # file resized after capture
            f = float(f_mm) * px_per_mm * scale
            source = f"FocalLength={float(f_mm):g}mm, FocalPlaneXResolution={float(res):g}"
    except (TypeError, ValueError, ZeroDivisionError, KeyError) as exc:
        return None, f"unreadable focal tags ({exc})"
    if not 0.1 * max(W, H) <= f <= 10 * max(W, H):
        return None, f"implausible focal {f:.1f}px from {source}"
    return f, source


# ------------------------------------------------------------------------------------------------ conversion


def _to_rgb8(img: Image.Image) -> Image.Image:
    """RGB, 8 bits per channel; 16-bit and float images are scaled rather than clipped."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float32)
        if img.mode == "F" and a.size and np.nanmax(a) <= 1.0:
            a = a * 255.0
        elif img.mode != "F" and a.size and a.max() > 255:
            a = a / 257.0  # 16-bit range -> 8-bit
        return Image.fromarray(np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8), "L").convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # avoids PIL's warning; the RGB values are the same
    return img if img.mode == "RGB" else img.convert("RGB")


def _resample(img: Image.Image, size: tuple[int, int], enlarge: bool, box=None) -> Image.Image:
    return img.resize(size, Image.Resampling.BICUBIC if enlarge else Image.Resampling.LANCZOS, box=box)


def prepare_image(
    img: Image.Image,
    *,
    size: int = 512,
    patch_size: int = 16,
    square_ok: bool = False,
    orientation: int = 1,
    draft: bool = True,
    min_side: int = DEFAULT_MIN_SIDE,
) -> tuple[torch.Tensor, tuple[int, int], np.ndarray]:
    """Orient, convert, resize and crop one opened (not necessarily loaded) PIL image.

    Args:
        img: the image as stored; ``orientation`` is its EXIF orientation (1..8).
        size, patch_size, square_ok: as ``load_images``.
        draft: decode large images at reduced resolution (see module docstring).
        min_side: smallest accepted short side in original pixels.

    Returns:
        ``(image [3, H, W] float32 in [0, 1], orig_size (H0, W0), net_to_orig [3, 3])``.

    Raises:
        _Skip: the image is too small or too elongated for the network.
    """
    swap = orientation in (5, 6, 7, 8)
    raw_w, raw_h = img.size
    W0, H0 = (raw_h, raw_w) if swap else (raw_w, raw_h)
    if min(W0, H0) < min_side:
        raise _Skip(f"too small for the network ({W0}x{H0} px; the short side must be at least {min_side} px)")
    resized, box = target_geometry(W0, H0, size, patch_size, square_ok)
    if box[2] - box[0] < patch_size or box[3] - box[1] < patch_size:
        raise _Skip(f"aspect ratio too extreme ({W0}x{H0} px gives a {box[2] - box[0]}x{box[3] - box[1]} crop)")
    enlarge = max(W0, H0) <= _long_edge(W0, H0, size)  # official: BICUBIC unless shrinking, then LANCZOS
    raw_target = (resized[1], resized[0]) if swap else resized
    want = (raw_target[0] * DRAFT_OVERSAMPLING, raw_target[1] * DRAFT_OVERSAMPLING)

    src_box = None  # region of the decoded image that covers the whole original, when decoded smaller
    if draft and not enlarge and raw_w >= 2 * want[0] and raw_h >= 2 * want[1]:
        drafted = img.draft(img.mode, want)  # JPEG (and MPO) decode at 1/2, 1/4, 1/8 scale; a no-op elsewhere
        if drafted is not None and img.size != (raw_w, raw_h):
            src_box = drafted[1]
    img.load()
    img = _to_rgb8(img)
    if draft and src_box is None and not enlarge:
        factor = min(raw_w // want[0], raw_h // want[1])
        if factor >= 2:
            img = img.reduce(factor)
            src_box = (0.0, 0.0, raw_w / factor, raw_h / factor)  # reduce rounds the size up
    op = _ORIENT_OPS.get(orientation)
    if src_box is None:
        # official order: orient, then resize
        img = _resample(img.transpose(op) if op is not None else img, resized, enlarge)
    else:
        # resize in stored orientation first: the partial edge pixel of a drafted image lies on the right/bottom
        # there, where src_box excludes it; flips and quarter turns commute with the separable resampling
        img = _resample(img, raw_target, enlarge, box=src_box)
        if op is not None:
            img = img.transpose(op)
    img = img.crop(box)
    tensor = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255.0)
    return tensor, (H0, W0), net_to_orig_matrix((H0, W0), resized, box)


# --------------------------------------------------------------------------------------------------- inputs


class _HeaderOnly:
    """Lift PIL's global decompression-bomb check while ``Image.open`` reads a header (restored after, under a
    lock): ``open`` decodes no pixels, and ``_load_file`` applies our own ``max_pixels`` limit before any
    decoding, with a message that names the option instead of PIL's fixed limit."""

    def __enter__(self):
        _pil_limit_lock.acquire()
        self.saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None

    def __exit__(self, *exc):
        Image.MAX_IMAGE_PIXELS = self.saved
        _pil_limit_lock.release()


def _register_heif() -> bool:
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()  # idempotent; only done once a HEIC/HEIF file is actually met
    return True


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load_file(path: Path, opts: dict, max_pixels: int) -> tuple[torch.Tensor, tuple[int, int], np.ndarray, float]:
    """Decode and prepare one image file; raises ``_Skip`` with the reason it cannot be used."""
    ext = path.suffix.lower()
    if ext in HEIF_EXTENSIONS and not _register_heif():
        raise _Skip("HEIC/HEIF needs pillow-heif: pip install pillow-heif  (or: pip install 'recon3r[heic]')")
    try:
        with _HeaderOnly():
            img = Image.open(path)
    except UnidentifiedImageError:
        if ext in VIDEO_EXTENSIONS:
            raise _Skip("a video among images: pass the video on its own to sample its frames") from None
        if ext in IMAGE_EXTENSIONS:
            raise _Skip(f"corrupt or unsupported {ext} file (PIL cannot identify it)") from None
        raise _Skip(f"not an image ({ext or 'no extension'}; PIL cannot identify it)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise _Skip(f"corrupt or unreadable image ({exc})") from None
    with img:
        n_px = img.size[0] * img.size[1]
        if n_px > max_pixels:
            raise _Skip(
                f"too many pixels ({img.size[0]}x{img.size[1]} = {n_px / 1e6:.0f} Mpx > max_pixels = "
                f"{max_pixels / 1e6:.0f} Mpx, a decompression-bomb guard); pass max_pixels={n_px} if you trust it"
            )
        try:
            exif = img.getexif()
            orientation = int(exif.get(_ORIENTATION, 1) or 1)
        except Exception as exc:  # noqa: BLE001 - a broken EXIF block must not lose the image
            logger.warning("%s: unreadable EXIF (%s); using it as stored", path.name, exc)
            exif, orientation = None, 1
        focal, source = exif_focal_px(exif, img.size) if exif is not None else (None, "no EXIF")
        logger.debug("%s: focal %s (%s), orientation %d", path.name, focal, source, orientation)
        try:
            tensor, orig_size, to_orig = prepare_image(img, orientation=orientation, **opts)
        except _Skip:
            raise
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise _Skip(f"corrupt image data ({exc})") from None
    return tensor, orig_size, to_orig, focal


def _expand(inputs) -> tuple[list[Path], list[Skipped]]:
    """Paths in the order they will be used: folders natural-sorted (not recursive), lists as given."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    paths, skipped = [], []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            for child in sorted(p.iterdir(), key=lambda c: natural_key(c.name)):
                if child.is_dir():
                    skipped.append(Skipped(str(child), "a folder (folders are not searched recursively)"))
                elif child.suffix.lower() in SIDECAR_EXTENSIONS or child.name.startswith("."):
                    logger.debug("ignoring %s (not a photo)", child)
                else:
                    paths.append(child)
        elif p.exists():
            paths.append(p)
        else:
            skipped.append(Skipped(str(p), "file not found"))
    return paths, skipped


def load_images(
    inputs: str | os.PathLike | Sequence[str | os.PathLike],
    size: int = 512,
    patch_size: int = 16,
    square_ok: bool = False,
    max_images: int | None = None,
    *,
    video_fps: float = 1.0,
    min_side: int = DEFAULT_MIN_SIDE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft: bool = True,
    skip_duplicates: bool = True,
) -> tuple[list[View], list[Skipped]]:
    """Load images (or frames of one video) as network-ready views.

    Args:
        inputs: a folder (its files, natural-sorted, not recursive), a list of files and/or folders (in the given
            order), or one video file (sampled at ``video_fps``; needs PyAV).
        size: long side after resizing (512 for MASt3R; a backbone's native size otherwise, e.g. 518 with
            patch 14); 224 selects the official square 224 crop.
        patch_size: the crop is a multiple of this.
        square_ok: keep square images square (official default: crop them to 4:3).
        max_images: use at most this many images (the rest are reported as skipped).
        video_fps: frames per second sampled from a video.
        min_side: smallest usable short side in original pixels.
        max_pixels: decompression-bomb guard: files with more pixels are skipped, with the reason.
        draft: decode large images at reduced resolution (geometry unchanged; see module docstring).
        skip_duplicates: skip files whose bytes equal an earlier file's (and video frames equal to an earlier one).

    Returns:
        ``(views, skipped)``: views with ``idx`` 0..N-1 and ``image [3, H, W]`` float32 in [0, 1]; ``skipped``
        lists ``Skipped(path, reason)`` for every input not used. Call ``require_views`` for the >= 2 check.

    Raises:
        ImageLoadError: a video is given but PyAV is missing (a video that cannot be decoded is reported in
            ``skipped``).
    """
    opts = dict(size=size, patch_size=patch_size, square_ok=square_ok, draft=draft, min_side=min_side)
    single = inputs if isinstance(inputs, (str, os.PathLike)) else None
    if single is not None and Path(single).is_file() and Path(single).suffix.lower() in VIDEO_EXTENSIONS:
        return _load_video(Path(single), opts, video_fps, max_images, skip_duplicates)

    paths, skipped = _expand(inputs)
    views: list[View] = []
    seen: dict[str, str] = {}
    for k, path in enumerate(paths):
        if max_images is not None and len(views) >= max_images:
            skipped.extend(Skipped(str(p), f"beyond max_images={max_images}") for p in paths[k:])
            break
        try:
            if path.stat().st_size == 0:
                raise _Skip("empty file (0 bytes)")
            if skip_duplicates:
                digest = _file_digest(path)
                if digest in seen:
                    raise _Skip(f"duplicate of {seen[digest]} (same content)")
            tensor, orig_size, to_orig, focal = _load_file(path, opts, max_pixels)
        except _Skip as why:
            skipped.append(Skipped(str(path), str(why)))
            logger.info("skipped %s: %s", path, why)
            continue
        except OSError as exc:  # unreadable file (permissions, I/O error)
            skipped.append(Skipped(str(path), f"cannot read ({exc})"))
            continue
        if skip_duplicates:
            seen[digest] = path.name
        views.append(
            View(
                image=tensor,
                idx=len(views),
                name=path.name,
                path=str(path),
                orig_size=orig_size,
                net_to_orig=to_orig,
                focal_exif=focal,
            )
        )
    logger.info("loaded %d images, skipped %d", len(views), len(skipped))
    return views, skipped


def _video_frames(path: Path, fps: float) -> Iterator[tuple[int, Image.Image]]:
    """Frames nearest to the times ``0, 1/fps, 2/fps, ...``; raises ``_Skip`` if the file cannot be decoded."""
    try:
        import av
    except ImportError:
        raise ImageLoadError(
            f"reading the video {path.name} needs PyAV: pip install av  (or: pip install 'recon3r[video]')"
        ) from None
    try:
        container = av.open(str(path))
    except Exception as exc:  # noqa: BLE001 - PyAV raises many error types for unreadable files
        raise _Skip(f"cannot open the video ({exc})") from None
    with container:
        if not container.streams.video:
            raise _Skip("no video stream")
        stream = container.streams.video[0]
        rate = float(stream.average_rate or stream.guessed_rate or 30)
        next_t = 0.0
        frames = container.decode(stream)
        n = -1
        while True:
            try:
                frame = next(frames)
            except StopIteration:
                return
            except Exception as exc:  # noqa: BLE001 - a damaged stream ends the video, keeping earlier frames
                raise _Skip(f"decoding stopped after frame {n} ({exc})") from None
            n += 1
            t = float(frame.time) if frame.time is not None else n / rate
            if t + 0.5 / rate < next_t:
                continue
            while next_t <= t + 0.5 / rate:  # take the first frame within half a frame period of the sample time
                next_t += 1.0 / fps
            yield n, frame.to_image()


def _load_video(path: Path, opts: dict, fps: float, max_images: int | None, skip_duplicates: bool):
    if fps <= 0:
        raise ImageLoadError(f"video_fps must be > 0, got {fps}")
    views, skipped, seen = [], [], {}
    frames = _video_frames(path, fps)
    while max_images is None or len(views) < max_images:
        try:
            n, img = next(frames)
        except StopIteration:
            break
        except _Skip as why:
            skipped.append(Skipped(str(path), str(why)))
            break
        name = f"frame_{n:06d}"
        if skip_duplicates:
            digest = hashlib.sha256(img.tobytes()).hexdigest()
            if digest in seen:
                skipped.append(Skipped(f"{path}#{name}", f"duplicate of {seen[digest]} (same pixels)"))
                continue
            seen[digest] = name
        try:
            tensor, orig_size, to_orig = prepare_image(img, **opts)
        except _Skip as why:
            skipped.append(Skipped(f"{path}#{name}", str(why)))
            continue
        # a frame has no file of its own: path stays None
        views.append(View(image=tensor, idx=len(views), name=name, orig_size=orig_size, net_to_orig=to_orig))
    frames.close()
    logger.info("sampled %d frames from %s at %g fps, skipped %d", len(views), path.name, fps, len(skipped))
    return views, skipped


def format_skipped(skipped: Iterable[Skipped]) -> str:
    """One line per skipped input: ``name: reason``."""
    return "\n".join(f"  {Path(s.path).name}: {s.reason}" for s in skipped)


def require_views(views: Sequence[View], skipped: Sequence[Skipped], minimum: int = 2) -> None:
    """Raise ``ImageLoadError`` listing what was skipped when fewer than ``minimum`` views are usable."""
    if len(views) >= minimum:
        return
    msg = f"need at least {minimum} usable images, got {len(views)}"
    if skipped:
        msg += f"; skipped {len(skipped)}:\n{format_skipped(skipped)}"
    else:
        msg += " (no inputs were given)"
    raise ImageLoadError(msg)
