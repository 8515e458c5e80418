"""Bring a session's uploads into its workspace: photos, zip archives of photos, or one short video.

Nothing about an upload is trusted: files are classified by their content (PIL for images, the zip
signature for archives) besides their extension, copied under generated names (the uploaded name is only
shown, after sanitising), and held to ``AppLimits``. Zip archives are refused as a whole when an entry has an
absolute path, a drive letter or a ``..`` component, is a symlink or encrypted, or when the entry count, the
total uncompressed size or an entry's compression ratio exceeds its limit (a zip bomb); entries are
extracted by streaming with byte caps, never with ``extractall``, and never to a path derived from their names.
"""

from __future__ import annotations

import logging
import re
import shutil
import stat
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from PIL import Image, UnidentifiedImageError

from app.config import MB, AppLimits
from app.workspace import Workspace
from recon.errors import UserError
from recon.images import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, natural_key

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# Entries that archivers add next to the real content; ignored without a message.
_JUNK = re.compile(r"(^|/)(__MACOSX/|\.DS_Store$|Thumbs\.db$|desktop\.ini$|\._)")


class UploadError(UserError, ValueError):
    """An upload that cannot be used at all; the message is shown to the user as is."""


@dataclass
class IngestReport:
    """What an upload brought.

    Attributes:
        n_images: images now in the workspace.
        video: display name of the uploaded video, if one was given.
        skipped: ``(name, reason)`` of every file or archive entry not used.
        total_bytes: size of the uploads as received.
    """

    n_images: int = 0
    video: str | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    total_bytes: int = 0

    def message(self) -> str:
        """A short Markdown summary for the UI."""
        if self.video:
            lines = [f"Video **{self.video}** ready ({self.total_bytes / MB:.1f} MB); frames are sampled when you run."]
        else:
            lines = [
                f"**{self.n_images}** image{'s' if self.n_images != 1 else ''} ready "
                f"({self.total_bytes / MB:.1f} MB uploaded)."
            ]
            if self.n_images < 2:
                lines.append("A reconstruction needs **at least 2 images**: add more.")
        if self.skipped:
            lines.append(f"Not used ({len(self.skipped)}):")
            lines += [f"- `{name}`: {reason}" for name, reason in self.skipped[:20]]
            if len(self.skipped) > 20:
                lines.append(f"- ... and {len(self.skipped) - 20} more")
        return "\n".join(lines)


def display_name(name: str, max_len: int = 60) -> str:
    """A harmless version of an uploaded name for display and for generated file names."""
    base = PurePosixPath(str(name).replace("\\", "/")).name
    clean = _UNSAFE.sub("_", base).strip("._") or "file"
    return clean[-max_len:]


def _image_problem(path: Path, max_pixels: int) -> str | None:
    """None when PIL recognises ``path`` as an image within ``max_pixels``, else the reason it is not used."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:  # reads the header only
                w, h = im.size
    except Image.DecompressionBombError:
        return f"too many pixels (limit {max_pixels / 1e6:.0f} Mpx)"
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        if path.suffix.lower() in {".heic", ".heif", ".hif"}:
            return "HEIC/HEIF image: the server needs pillow-heif to read it"
        return "not an image PIL can read (JPEG, PNG, WebP, TIFF, BMP, GIF)"
    if w * h > max_pixels:
        return f"too many pixels ({w}x{h}; limit {max_pixels / 1e6:.0f} Mpx)"
    if min(w, h) < 8:
        return f"too small ({w}x{h})"
    return None


def _copy_capped(src, dst: Path, cap: int) -> int:
    """Stream ``src`` (a binary file object) into ``dst``; raises UploadError past ``cap`` bytes."""
    n = 0
    with open(dst, "xb") as out:
        while chunk := src.read(_CHUNK):
            n += len(chunk)
            if n > cap:
                raise UploadError(f"{dst.name}: more data than declared or allowed ({cap / MB:.0f} MB)")
            out.write(chunk)
    return n


class _Ingest:
    """Accumulates the images of one upload into ``ws.inputs_dir`` with generated names."""

    def __init__(self, ws: Workspace, limits: AppLimits):
        self.ws, self.limits = ws, limits
        self.report = IngestReport()

    def _target(self, shown: str) -> Path:
        k = len(self.ws.inputs)
        suffix = PurePosixPath(shown).suffix.lower()
        return self.ws.inputs_dir / f"{k:04d}_{display_name(PurePosixPath(shown).stem, 40)}{suffix}"

    def _accept(self, path: Path, shown: str) -> None:
        problem = _image_problem(path, self.limits.max_pixels)
        if problem:
            path.unlink(missing_ok=True)
            self.report.skipped.append((shown, problem))
            return
        self.ws.inputs.append(path)
        self.ws.input_names.append(shown)

    def add_image_file(self, src: Path, shown: str) -> None:
        if src.stat().st_size > self.limits.max_file_mb * MB:
            self.report.skipped.append((shown, f"larger than {self.limits.max_file_mb:g} MB"))
            return
        dst = self._target(shown)
        with open(src, "rb") as f:
            _copy_capped(f, dst, int(self.limits.max_file_mb * MB))
        self._accept(dst, shown)

    def add_zip(self, src: Path, shown: str) -> None:
        lim = self.limits
        try:
            zf = zipfile.ZipFile(src)
        except (zipfile.BadZipFile, OSError) as err:
            raise UploadError(f"{shown}: not a readable zip archive ({err})") from None
        with zf:
            infos = zf.infolist()
            if len(infos) > lim.max_zip_members:
                raise UploadError(f"{shown}: {len(infos)} entries; the limit is {lim.max_zip_members}")
            total = sum(i.file_size for i in infos)
            if total > lim.max_zip_uncompressed_mb * MB:
                raise UploadError(
                    f"{shown}: {total / MB:.0f} MB uncompressed; the limit is {lim.max_zip_uncompressed_mb:g} MB"
                )
            for info in infos:
                _check_member(info, shown, lim)
            members = sorted((i for i in infos if not i.is_dir()), key=lambda i: natural_key(i.filename))
            budget = int(lim.max_zip_uncompressed_mb * MB)
            for info in members:
                inner = f"{shown}/{display_name(info.filename)}"
                if _JUNK.search(info.filename):
                    continue
                suffix = PurePosixPath(info.filename).suffix.lower()
                if suffix not in IMAGE_EXTENSIONS:
                    self.report.skipped.append((inner, "not an image file (archives may hold photos only)"))
                    continue
                if info.file_size > lim.max_file_mb * MB:
                    self.report.skipped.append((inner, f"larger than {lim.max_file_mb:g} MB"))
                    continue
                self._check_count(extra=1)
                dst = self._target(info.filename)
                try:
                    with zf.open(info) as f:
                        # Cap at the declared size: a lying header cannot make an entry grow past it.
                        budget -= _copy_capped(f, dst, min(info.file_size, budget))
                except (zipfile.BadZipFile, OSError, EOFError) as err:
                    dst.unlink(missing_ok=True)
                    self.report.skipped.append((inner, f"corrupt entry ({err})"))
                    continue
                self._accept(dst, inner)

    def _check_count(self, extra: int = 0) -> None:
        n = len(self.ws.inputs) + extra
        if n > self.limits.max_images:
            raise UploadError(
                f"more than {self.limits.max_images} images in this upload; the limit is "
                f"{self.limits.max_images} per reconstruction: upload fewer"
            )


def _check_member(info: zipfile.ZipInfo, shown: str, lim: AppLimits) -> None:
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name) or ".." in parts:
        raise UploadError(f"{shown}: refused: entry {display_name(name)!r} has an absolute or '..' path")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise UploadError(f"{shown}: refused: entry {display_name(name)!r} is a symbolic link")
    if info.flag_bits & 0x1:
        raise UploadError(f"{shown}: refused: entry {display_name(name)!r} is encrypted")
    if info.file_size > MB and info.file_size > lim.max_zip_ratio * max(info.compress_size, 1):
        raise UploadError(
            f"{shown}: refused: entry {display_name(name)!r} expands {info.file_size / max(info.compress_size, 1):.0f}"
            f"x (limit {lim.max_zip_ratio:g}x); this looks like a zip bomb"
        )


def classify(path: Path) -> str:
    """``"zip"``, ``"video"``, ``"image"`` or ``"other"``, from the content for zips and the extension otherwise."""
    suffix = path.suffix.lower()
    if suffix == ".zip" or (suffix not in IMAGE_EXTENSIONS and zipfile.is_zipfile(path)):
        return "zip"
    if suffix in VIDEO_EXTENSIONS:
        return "video"
    if suffix in IMAGE_EXTENSIONS:
        return "image"
    return "other"


def ingest(ws: Workspace, files: Sequence[str | Path], limits: AppLimits) -> IngestReport:
    """Replace the workspace's inputs with ``files`` (photos, zips of photos, or one video).

    Args:
        ws: the session's workspace; its previous inputs and result are cleared first.
        files: uploaded file paths (Gradio's temporary copies; only their content and base name are used).
        limits: upload limits.

    Returns:
        What was ingested and what was skipped, and why.

    Raises:
        UploadError: the upload as a whole cannot be used (too large, too many images, an unsafe archive,
            a video mixed with other files); the workspace is left empty.
    """
    ws.clear_inputs()
    paths = [Path(f) for f in files or []]
    try:
        return _ingest(ws, paths, limits)
    except UploadError:
        ws.clear_inputs()
        raise


def _ingest(ws: Workspace, paths: list[Path], limits: AppLimits) -> IngestReport:
    if not paths:
        raise UploadError("nothing was uploaded")
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise UploadError(f"upload incomplete ({display_name(missing[0].name)} is gone): upload again")
    total = sum(p.stat().st_size for p in paths)
    if total > limits.max_upload_mb * MB:
        raise UploadError(f"{total / MB:.0f} MB uploaded; the limit is {limits.max_upload_mb:g} MB per session")
    kinds = [classify(p) for p in paths]
    job = _Ingest(ws, limits)
    job.report.total_bytes = total
    if "video" in kinds:
        if len(paths) > 1:
            raise UploadError("upload either photos (or zips of photos) or a single video, not both")
        src = paths[0]
        if src.stat().st_size > limits.max_video_mb * MB:
            raise UploadError(f"the video is larger than {limits.max_video_mb:g} MB; upload a shorter one")
        dst = ws.inputs_dir / f"video{src.suffix.lower()}"
        shutil.copyfile(src, dst)
        ws.inputs, ws.input_names = [dst], [display_name(src.name)]
        job.report.video = display_name(src.name)
        ws.input_bytes = total
        return job.report
    for p, kind in zip(paths, kinds, strict=True):
        shown = display_name(p.name)
        if kind == "zip":
            job.add_zip(p, shown)
        elif kind == "image":
            job._check_count(extra=1)
            job.add_image_file(p, shown)
        else:
            job.report.skipped.append((shown, "not an image, a zip of images or a video"))
    job.report.n_images = len(ws.inputs)
    ws.input_bytes = total
    logger.info("ingested %d images (%d skipped) into %s", len(ws.inputs), len(job.report.skipped), ws.root.name)
    return job.report


def ingest_folder(ws: Workspace, folder: Path, limits: AppLimits, max_images: int | None = None) -> IngestReport:
    """Ingest the images of a trusted local folder (the examples), naturally sorted, at most ``max_images``."""
    files = sorted(
        (p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS),
        key=lambda p: natural_key(p.name),
    )
    return ingest(ws, files[: max_images or limits.max_images], limits)
