"""Atomic outputs: write into a temporary sibling, then ``os.replace`` it onto the destination.

A failed export leaves nothing behind (the temporary is removed, on SIGTERM too) and never leaves a half-written
destination; temporaries left by a killed run (``.scene.glb.<pid>.<random>.tmp``, ``.<folder>.export.<pid>.<random>/``)
are removed by the next export into the same place. Folder exports never delete or overwrite a file recon did not
write (``export_dir``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import struct
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

from backbone import fileio
from recon.errors import UserError

logger = logging.getLogger(__name__)


class OverwriteRefusedError(UserError, FileExistsError):
    """An export would overwrite a file recon did not write (or needs a folder where a file is); nothing changed."""


def check_parent(path: Path) -> None:
    """Raise ``FileNotFoundError`` when ``path``'s folder does not exist (checked before any work)."""
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder {path.parent} does not exist; create it or choose another path")


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is deleted."""
    check_parent(path)
    with fileio.atomic_file(path) as tmp:
        yield tmp


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    check_parent(path)
    return fileio.write_bytes_atomic(path, data, make_parents=False)


MANIFEST = ".recon-export.json"
"""Kept in an exported folder: ``{relative path: sha256}`` of the files recon wrote there (see ``export_dir``)."""


@contextlib.contextmanager
def export_dir(path: Path) -> Iterator[Path]:
    """Yield an empty staging folder; on success its files are published into ``path``, on any exit it is removed.

    Publishing never deletes or overwrites a file recon did not write, so ``path`` may be a project folder that
    already holds the photos (``recon run proj/images --format colmap --out proj``), RAW files and notes:

    - a new file is added (parent folders created);
    - a file whose content is already at its place is kept as it is (e.g. the photos of ``proj/images``);
    - a file recon wrote earlier (listed in ``path/.recon-export.json`` with the same content) is replaced;
    - any other existing file at a name the export needs stops the export before anything is moved, with one
      line naming it (``OverwriteRefusedError``, a ``FileExistsError``): choose another output folder or move the file;
    - files of an earlier export that this one does not write are removed only if recon wrote them and they are
      unchanged; everything else in ``path`` is left alone.

    Each file is moved with ``fileio.move_into_place`` (whole or not at all); the manifest is written last.

    Args:
        path: destination folder (created when missing; its parent must exist).
    """
    check_parent(path)
    if path.exists() and not path.is_dir():
        raise OverwriteRefusedError(f"{path} exists and is not a folder; remove it or choose another path")
    fileio.remove_leftovers(path.parent, f".{path.name}.export.", "")
    stage = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.export.{os.getpid()}."))
    try:
        with fileio.sigterm_as_exit():
            yield stage
            _publish(stage, path)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _content(path: Path) -> str:
    """What a published entry is: the sha256 of a file, or the target of a symlink."""
    if path.is_symlink():
        return f"link:{os.readlink(path)}"
    return fileio.sha256_file(path)


def _read_manifest(path: Path) -> dict[str, str]:
    try:
        data = json.loads((path / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}  # none yet, or damaged: then no file counts as recon's and nothing is replaced
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _publish(stage: Path, path: Path) -> None:
    """Move the staged files into ``path`` following the rules of ``export_dir``."""
    ours = _read_manifest(path)
    staged = sorted(p.relative_to(stage).as_posix() for p in stage.rglob("*") if p.is_symlink() or p.is_file())
    moves, manifest, conflicts = [], {}, []
    for rel in staged:
        src, dst = stage / rel, path / rel
        new = _content(src)
        blocked = next((q for q in dst.parents if q != path and q.is_relative_to(path) and q.is_file()), None)
        if blocked is not None:
            conflicts.append(f"{blocked.relative_to(path)} (a file where a folder is needed)")
            continue
        if not (dst.exists() or dst.is_symlink()):
            moves.append(rel)
        elif dst.is_dir() and not dst.is_symlink():
            conflicts.append(f"{rel} (a folder)")
            continue
        elif _content(dst) == new:
            if rel in ours:  # ours and identical: keep it and keep owning it
                manifest[rel] = new
            continue  # identical content already there (e.g. the photo itself): nothing to write
        elif ours.get(rel) == _content(dst):
            moves.append(rel)
        else:
            conflicts.append(rel)
            continue
        manifest[rel] = new
    if conflicts:
        shown = ", ".join(conflicts[:5]) + (f" (+{len(conflicts) - 5} more)" if len(conflicts) > 5 else "")
        raise OverwriteRefusedError(
            f"{path} already holds files this export would overwrite and recon did not write: {shown}; "
            "move them or choose another output folder (nothing was changed)"
        )
    path.mkdir(exist_ok=True)
    for rel in moves:
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        fileio.move_into_place(stage / rel, path / rel)
    for rel, digest in ours.items():  # stale files of an earlier export: removed only if ours and unchanged
        old = path / rel
        if rel not in manifest and (old.is_file() or old.is_symlink()) and _content(old) == digest:
            old.unlink()
    fileio.write_json_atomic(path / MANIFEST, manifest)


def check_overwritable(path: Path, fmt: str) -> None:
    """Refuse to overwrite an existing ``path`` unless recon wrote it (checked before any work).

    A file output replaces its destination, so the destination must be an earlier recon output of the same
    format: a ``.glb`` whose scene extras hold ``recon``, a ``.ply`` with the ``comment written by recon3r``
    header line, a scene ``.npz`` with recon's ``format`` entry. Anything else (the user's own model, a photo, a
    folder) raises ``OverwriteRefusedError`` with one line.
    """
    if not (path.exists() or path.is_symlink()):
        return
    if path.is_symlink() or not path.is_file():
        raise OverwriteRefusedError(f"{path} exists and is not a regular file; choose another output name")
    try:
        ours = _WRITTEN_BY_RECON[fmt](path)
    except (OSError, ValueError, KeyError, IndexError, struct.error, zipfile.BadZipFile):
        ours = False
    if not ours:
        raise OverwriteRefusedError(
            f"{path} exists and was not written by recon, which never overwrites such a file; "
            "move it or choose another output name"
        )


def _glb_is_ours(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(20)
        if head[:4] != b"glTF" or head[16:20] != b"JSON":
            return False
        (length,) = struct.unpack("<I", head[12:16])
        if length > 64 << 20:  # recon's JSON chunk is a few kB; do not read a huge foreign one
            return False
        doc = json.loads(f.read(length))
    return any("recon" in (s.get("extras") or {}) for s in doc.get("scenes", []) if isinstance(s, dict))


def _ply_is_ours(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(1024)
    return head.startswith(b"ply\n") and b"comment written by recon3r\n" in head.split(b"end_header\n", 1)[0]


def _npz_is_ours(path: Path) -> bool:
    import numpy as np

    from recon.scene import SCENE_FORMAT

    with np.load(path, allow_pickle=False) as arrays:
        return "format" in arrays.files and str(arrays["format"]) == SCENE_FORMAT


_WRITTEN_BY_RECON = {"glb": _glb_is_ours, "ply": _ply_is_ours, "npz": _npz_is_ours}
