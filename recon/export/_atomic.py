"""Atomic outputs: write into a temporary sibling, then ``os.replace`` it onto the destination.

A failed export leaves nothing behind (the temporary is removed) and never leaves a half-written destination.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

logger = logging.getLogger(__name__)


def _umask() -> int:
    """The process umask, read without changing it (``os.umask`` can only be read by setting it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


def _publish_mode(path: Path) -> None:
    """Give a temporary (created 0600 / 0700 by ``tempfile``) the permissions a plain ``open`` would have."""
    mask = _umask()
    path.chmod((0o777 if path.is_dir() else 0o666) & ~mask)


def check_parent(path: Path) -> None:
    """Raise ``FileNotFoundError`` when ``path``'s folder does not exist (checked before any work)."""
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder {path.parent} does not exist; create it or choose another path")


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is deleted."""
    check_parent(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _publish_mode(tmp_path)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return path


@contextlib.contextmanager
def atomic_dir(path: Path, replaceable: Iterable[str]) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it takes ``path``'s place, on error it is deleted.

    An existing ``path`` is replaced only when it is empty or holds nothing but names from ``replaceable``
    (i.e. it looks like an earlier export of the same format); anything else raises ``FileExistsError``, so a
    mistyped path can never wipe a folder of photos. Replacing swaps the two folders with two renames, so the
    destination is either the old or the new export, never a mix.

    Args:
        path: destination folder.
        replaceable: top-level names an earlier export of this format may contain.
    """
    check_parent(path)
    if path.exists():
        if not path.is_dir():
            raise FileExistsError(f"{path} exists and is not a folder; remove it or choose another path")
        foreign = sorted(p.name for p in path.iterdir() if p.name not in set(replaceable))
        if foreign:
            raise FileExistsError(
                f"{path} exists and holds files this export did not write ({', '.join(foreign[:5])}); "
                "choose an empty or new folder"
            )
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        yield tmp
        _publish_mode(tmp)
        if path.exists():
            old = path.parent / f".{path.name}.old.{uuid.uuid4().hex[:8]}"
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old, path)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
