"""Atomic file writes shared by every package that writes outputs (exports, datasets, results, configs).

A file is written into a temporary sibling, flushed, given the permissions a plain ``open`` would have
(``tempfile`` creates 0600), and ``os.replace``-d onto its destination: readers see the old file or the new one,
never half of one, and a failure leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
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


def publish_mode(path: Path) -> None:
    """Give a temporary (created 0600 / 0700 by ``tempfile``) the permissions a plain ``open`` would have."""
    path.chmod((0o777 if path.is_dir() else 0o666) & ~_umask())


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True  # our own temporary, maybe another thread's write in progress
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def remove_leftovers(folder: Path, prefix: str, suffix: str) -> list[Path]:
    """Remove temporaries ``<prefix><pid>.<random><suffix>`` in ``folder`` whose writing process is gone.

    Only names of exactly that shape are touched (a killed run's ``.scene.glb.1234.ab12cd34.tmp`` or
    ``.proj.export.1234.ab12cd34/``), and only when no process with that id is alive, so a concurrent writer's
    temporary survives.

    Returns:
        The paths removed.
    """
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.[A-Za-z0-9_]{6,}" + re.escape(suffix))
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if m is None or _alive(int(m.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
        logger.info("removed %s, left by an interrupted run", entry)
    return removed


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """While active (main thread only), SIGTERM raises ``SystemExit(143)`` so ``finally`` blocks remove temporaries.

    Python's default SIGTERM ends the process without unwinding; a ``kill`` during an export would leave its
    temporary behind. The previous handler is restored on exit. In other threads (the app's workers) it does
    nothing: signals are delivered to the main thread only.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _exit(signum, frame):
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, _exit)
    except (ValueError, OSError):  # no signals here (e.g. an embedded interpreter)
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is deleted.

    The temporary is named ``.<name>.<pid>.<random>.tmp``; leftovers of that shape from a killed process are
    removed first (``remove_leftovers``). The folder of ``path`` must exist.
    """
    path = Path(path)
    remove_leftovers(path.parent, f".{path.name}.", ".tmp")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        publish_mode(tmp_path)
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, make_parents: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (flushed to disk first); returns ``path``.

    Args:
        make_parents: create missing parent folders (exports instead require the folder to exist).
    """
    path = Path(path)
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text atomically (parents created)."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj, indent: int | None = 1) -> Path:
    """Write ``obj`` as JSON (plus a final newline) atomically (parents created)."""
    return write_text_atomic(path, json.dumps(obj, indent=indent) + "\n")
