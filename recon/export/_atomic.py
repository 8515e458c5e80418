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

from recon import fileio

logger = logging.getLogger(__name__)


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
        fileio.publish_mode(tmp)
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
