"""The one atomic file write of the project, and the one file hash.

Every package (bottom layer, standard library only) writes its outputs through ``atomic_file``: the bytes go
into a temporary beside the destination, named ``.<name>.<pid>.<random>.tmp``, which is flushed to disk
(``fsync``), given the permissions a plain ``open`` would have (``tempfile`` creates 0600) and ``os.replace``-d
onto the destination. Readers see the old file or the new one, never half of one; on an exception, or on SIGTERM
(turned into ``SystemExit`` while the write is in progress), the temporary is removed and the destination is
untouched. A temporary left by a killed process is removed when this process first writes into its folder.

``move_into_place`` is the same final step for a file that was finished elsewhere (a verified ``.part``
download, a staged export, an earlier result moved aside); ``sha256_file`` is the one file digest.
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


_RANDOM = r"(?P<pid>\d+)\.[a-z0-9_]{8}"  # what ``tempfile`` appends after a ``<pid>.`` prefix: 8 characters
_TEMPORARY = re.compile(r"\..+\." + _RANDOM + r"\.tmp")  # ``atomic_file``'s ``.<name>.<pid>.<random>.tmp``
_swept: set[str] = set()  # folders whose dead temporaries this process has removed (see ``atomic_file``)
_swept_lock = threading.Lock()


def _remove_dead(folder: Path, pattern: re.Pattern) -> list[Path]:
    """Remove the entries of ``folder`` whose whole name matches ``pattern`` and whose ``pid`` is not running."""
    removed = []
    try:
        with os.scandir(folder) as entries:  # names only: cheap even for a folder of thousands of files
            dead = [e.path for e in entries if (m := pattern.fullmatch(e.name)) and not _alive(int(m["pid"]))]
    except OSError:
        return removed
    for entry in map(Path, dead):
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
        logger.info("removed %s, left by an interrupted run", entry)
    return removed


def remove_leftovers(folder: Path, prefix: str, suffix: str) -> list[Path]:
    """Remove temporaries ``<prefix><pid>.<random><suffix>`` in ``folder`` whose writing process is gone.

    Only names of exactly that shape are touched (a killed export's ``.proj.export.1234.ab12cd34/`` staging
    folder), and only when no process with that id is alive, so a concurrent writer's temporary survives.

    Returns:
        The paths removed.
    """
    return _remove_dead(Path(folder), re.compile(re.escape(prefix) + _RANDOM + re.escape(suffix)))


def _sweep_once(folder: Path) -> None:
    """Remove dead ``atomic_file`` temporaries in ``folder``, the first time this process writes there.

    Once per folder, not per write: a cache folder receives thousands of files, and listing it for each would
    make writing them quadratic.
    """
    key = os.path.realpath(folder)
    with _swept_lock:
        if key in _swept:
            return
        _swept.add(key)
    _remove_dead(folder, _TEMPORARY)


def _raise_exit(signum, frame):
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """While active, SIGTERM raises ``SystemExit(143)`` so ``finally`` blocks remove temporaries.

    Python's default SIGTERM ends the process without unwinding; a ``kill`` during a write would leave its
    temporary behind. Only the default action is changed: a program's own SIGTERM handler (the app server's) or
    an outer ``sigterm_as_exit`` is left in place, and other threads are left alone (signals are delivered to the
    main thread only). The previous handler is restored on exit.
    """
    previous = None
    if threading.current_thread() is threading.main_thread():
        try:
            if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
                previous = signal.signal(signal.SIGTERM, _raise_exit)
        except (ValueError, OSError):  # no signals here (e.g. an embedded interpreter)
            previous = None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def move_into_place(src: str | os.PathLike, dst: str | os.PathLike, *, fsync: bool = True) -> Path:
    """Rename the finished ``src`` onto ``dst`` (same file system): ``dst`` is replaced whole or not at all.

    Args:
        src: a finished file (or a symlink or folder, moved as it is).
        dst: the destination; an existing file there is replaced.
        fsync: first flush a regular file's bytes to disk, so that after a power failure ``dst`` holds the old
            file or the complete new one. Off for a rename of a file that is already on disk (moving aside).

    Returns:
        ``dst``.
    """
    src, dst = Path(src), Path(dst)
    if fsync and src.is_file() and not src.is_symlink():
        fd = os.open(src, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    os.replace(src, dst)
    return dst


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error or SIGTERM it is deleted.

    The temporary is named ``.<name>.<pid>.<random>.tmp``. The first write of this process into a folder removes
    the temporaries of that shape left there by processes that no longer run.

    Args:
        path: the destination; its folder must exist.
        fsync: flush the finished temporary to disk before the replace (``move_into_place``). Off only for a
            cache, whose loss on a power failure costs a recomputation.
    """
    path = Path(path)
    _sweep_once(path.parent)
    with sigterm_as_exit():
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            yield tmp_path
            publish_mode(tmp_path)
            move_into_place(tmp_path, path, fsync=fsync)
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
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text atomically (parents created)."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | os.PathLike, obj, indent: int | None = 1) -> Path:
    """Write ``obj`` as JSON (plus a final newline) atomically (parents created)."""
    return write_text_atomic(path, json.dumps(obj, indent=indent) + "\n")
