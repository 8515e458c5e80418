"""Placing the source photos beside an export (COLMAP ``images/``, nerfstudio ``images/``)."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageOps

from recon.export._atomic import OverwriteRefusedError

logger = logging.getLogger(__name__)

# EXIF tag 0x0112; 1 means "already upright".
_EXIF_ORIENTATION = 0x0112


def image_names(images: Sequence[str | os.PathLike] | None, names: Sequence[str], keep: Sequence[int]) -> list[str]:
    """File names the exported views get: the source file's name when ``images`` is given, else the view name.

    Args:
        images: N source paths or ``None``.
        names: N view names.
        keep: indices of the exported views.

    Returns:
        One unique name per kept view; raises ``ValueError`` on duplicates (COLMAP and nerfstudio key by name).
    """
    if images is not None and len(images) != len(names):
        raise ValueError(f"images has {len(images)} paths but the scene has {len(names)} views")
    out = [Path(images[k]).name if images is not None else str(names[k]) for k in keep]
    seen: set[str] = set()
    dupes = sorted({n for n in out if n in seen or seen.add(n)})
    if dupes:
        raise ValueError(f"exported image names must be unique; repeated: {dupes[:5]}")
    return out


def check_sources(images: Sequence[str | os.PathLike], keep: Sequence[int]) -> None:
    """Raise ``FileNotFoundError`` listing the source images that do not exist (checked before any work)."""
    missing = [str(images[k]) for k in keep if not Path(images[k]).is_file()]
    if missing:
        raise FileNotFoundError(f"source images not found: {missing[:5]}")


def place_image(
    src: Path, dst: Path, expected_hw: tuple[int, int] | None, link: bool = False, final: Path | None = None
) -> None:
    """Copy (or symlink) ``src`` to ``dst`` so that its stored pixels match the exported intrinsics.

    Our intrinsics are for the image *after* EXIF orientation, while COLMAP and nerfstudio read raw pixels: a
    photo whose EXIF orientation is not upright is therefore re-encoded upright (same format) instead of copied.

    Args:
        src: source image.
        dst: destination path (in the export's staging folder).
        expected_hw: ``(H0, W0)`` the exported intrinsics assume; a mismatch is a ``ValueError``.
        link: symlink instead of copying (only possible for upright images).
        final: where ``dst`` will be published. When that is ``src`` itself (the photos already sit in the
            export's ``images/``), nothing is written: the photo stays as it is.

    Raises:
        OverwriteRefusedError: ``src`` is its own destination but is not stored upright (it would be replaced).
    """
    in_place = final is not None and final.exists() and os.path.samefile(src, final)
    with Image.open(src) as im:
        orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
        upright = ImageOps.exif_transpose(im) if orientation not in (1, None) else im
        size_hw = (upright.height, upright.width)
        if expected_hw is not None and tuple(expected_hw) != size_hw:
            raise ValueError(
                f"{src}: image is {size_hw[1]}x{size_hw[0]} (W x H, EXIF-oriented) but the scene expects "
                f"{expected_hw[1]}x{expected_hw[0]}; pass the images the scene was reconstructed from"
            )
        if in_place and orientation not in (1, None):
            raise OverwriteRefusedError(
                f"{src} is already at its place in the export but stored rotated (EXIF orientation {orientation}); "
                "the export needs an upright copy and never replaces your photo: choose another output folder"
            )
        if in_place:
            return
        if orientation not in (1, None):
            logger.info("%s: EXIF orientation %s, writing an upright copy", src.name, orientation)
            fmt = im.format or None
            params = {"quality": 95} if fmt == "JPEG" else {}
            upright.save(dst, format=fmt, **params)
            return
    if link:
        os.symlink(Path(src).resolve(), dst)
    else:
        shutil.copy2(src, dst)
