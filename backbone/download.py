"""A resumable, atomic downloader for large weights files, and the file digests that check them.

- ``download_url`` streams into ``<file>.part`` with a progress bar, resumes a partial ``.part`` with an HTTP
  ``Range`` request (restarting cleanly when the server ignores it), checks size / sha256 when given, and only then
  moves the file into place (``fileio.move_into_place``), so a file under its final name is always complete;
- ``http(s)://`` and ``file://`` URLs; offline, ``WeightsUnavailableError`` names the URL and the target path;
- ``file_digest`` (``sha256_file`` memoised by size and mtime) and ``check_file`` (size, then hash).

Standard library only at import time (tqdm is imported when a download starts).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from backbone.errors import UserError
from backbone.fileio import move_into_place, sha256_file, write_json_atomic

logger = logging.getLogger(__name__)

HOME_ENV = "RECON_HOME"  # named in the errors about an unwritable cache folder (backbone.hub.recon_home)


class WeightsError(UserError, RuntimeError):
    """Base class of every weights error; messages are one line and say what to do."""


class WeightsUnavailableError(WeightsError):
    """A file is not there and cannot be downloaded; the message names the URL and where to place the file.

    Attributes:
        url: the URL that was (or would have been) tried.
        path: where the file is looked for.
    """

    def __init__(self, message: str, url: str | None = None, path: Path | None = None):
        super().__init__(message)
        self.url = url
        self.path = path


class WeightsIntegrityError(WeightsError):
    """A file has the wrong size or sha256, cannot be loaded safely, or does not have the expected format."""


_CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+|\*)-?(\d*)/(\d+|\*)")


class _Interrupted(Exception):
    """The transfer stopped before the announced end; what arrived stays in ``.part`` for the next attempt."""


def part_path(dest: Path) -> Path:
    """The temporary file a download of ``dest`` streams into."""
    return dest.with_name(dest.name + ".part")


def _user_agent() -> str:
    try:
        from importlib.metadata import version

        return f"recon3r/{version('recon3r')}"
    except Exception:  # not installed as a distribution (e.g. run from a source tree)
        return "recon3r"


DIGESTS_FILE = ".digests.json"
"""Memo of file digests kept in a folder beside the files it describes (see ``file_digest``)."""


def file_digest(path: str | os.PathLike, memo_dir: str | os.PathLike | None = None) -> str:
    """sha256 of a file's content, memoised by (resolved path, size, mtime) in ``memo_dir/.digests.json``.

    Hashing a multi-GB checkpoint takes seconds; the memo makes a rerun free while still noticing a replaced or
    rewritten file (its size or mtime changes). ``memo_dir=None`` always hashes.
    """
    path = Path(path).resolve()
    st = path.stat()
    key, stamp = str(path), [st.st_size, st.st_mtime_ns]
    memo_path = Path(memo_dir) / DIGESTS_FILE if memo_dir is not None else None
    memo: dict = {}
    if memo_path is not None and memo_path.is_file():
        try:
            memo = json.loads(memo_path.read_text())
        except (OSError, ValueError):
            memo = {}  # a damaged memo is only a cache: rebuild it
        entry = memo.get(key) if isinstance(memo, dict) else None
        if isinstance(entry, dict) and entry.get("stamp") == stamp and isinstance(entry.get("sha256"), str):
            return entry["sha256"]
    digest = sha256_file(path)
    if memo_path is not None:
        memo = memo if isinstance(memo, dict) else {}
        memo[key] = {"stamp": stamp, "sha256": digest}
        try:
            write_json_atomic(memo_path, memo)  # readers see the old memo or the new one
        except OSError as err:  # a read-only cache folder costs a rehash next time, nothing else
            logger.debug("cannot write %s: %s", memo_path, err)
    return digest


@contextlib.contextmanager
def _exclusive(dest: Path) -> Iterator[None]:
    """Hold an advisory lock so two processes never write the same ``.part`` (POSIX only).

    The lock files live in ``<folder>/.locks/`` and are never deleted: unlinking a lock file another process waits
    on would let a third process lock a fresh file and write the same ``.part`` concurrently.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no flock; concurrent downloads of one file are then the user's business
        yield
        return
    lock = dest.parent / ".locks" / (dest.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _progress_bar(total: int | None, initial: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(
        total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, disable=not enabled
    )


def _open_part(part: Path, mode: str):
    try:
        return open(part, mode)
    except OSError as err:  # a read-only or full cache folder is not a network problem: say so
        raise WeightsError(f"cannot write {part} ({err}); set {HOME_ENV} to a writable folder") from None


def _copy_stream(read, out, bar, expected: int | None) -> int:
    """Copy ``read(n)`` chunks into ``out``; raise ``_Interrupted`` if fewer than ``expected`` bytes came."""
    received = 0
    while True:
        try:
            chunk = read(_CHUNK)
        except (OSError, http.client.HTTPException) as err:  # reset / timeout mid-transfer: resumable
            raise _Interrupted(f"{type(err).__name__}: {err}") from None
        if not chunk:
            break
        try:
            out.write(chunk)
        except OSError as err:
            raise WeightsError(f"cannot write {out.name} ({err})") from None
        received += len(chunk)
        bar.update(len(chunk))
    if expected is not None and received < expected:
        raise _Interrupted(f"connection closed after {received} of {expected} bytes")
    return received


def _fetch_file_url(url: str, part: Path, desc: str, progress: bool) -> None:
    parsed = urllib.parse.urlparse(url)
    source = Path(urllib.request.url2pathname(parsed.path))
    if not source.is_file():
        raise FileNotFoundError(f"no such file {source}")
    total = source.stat().st_size
    offset = part.stat().st_size if part.is_file() else 0
    if offset > total:
        offset = 0
    with open(source, "rb") as src, _open_part(part, "ab" if offset else "wb") as out:
        src.seek(offset)
        with _progress_bar(total, offset, desc, progress) as bar:
            _copy_stream(src.read, out, bar, total - offset)


def _open_http(url: str, offset: int, timeout: float):
    headers = {"User-Agent": _user_agent()}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _fetch_http(url: str, part: Path, desc: str, progress: bool, timeout: float, size: int | None) -> None:
    offset = part.stat().st_size if part.is_file() else 0
    try:
        response = _open_http(url, offset, timeout)
    except urllib.error.HTTPError as err:
        if err.code != 416 or not offset:
            raise
        # Range not satisfiable: the .part is already whole (the last attempt died before the rename) or longer
        # than the remote file (a different version); tell them apart by the total the server reports.
        match = _CONTENT_RANGE.match(err.headers.get("Content-Range", "") or "")
        if match and match.group(3) != "*" and int(match.group(3)) == offset:
            return
        logger.info("discarding %s: the server cannot resume it", part)
        part.unlink()
        offset = 0
        response = _open_http(url, 0, timeout)
    with response:
        mode = "wb"
        if response.status == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", "") or "")
            if not (offset and match and match.group(1) == str(offset)):
                # A part we did not ask for: writing it would corrupt the file, so start over.
                part.unlink(missing_ok=True)
                raise _Interrupted(f"unexpected Content-Range {response.headers.get('Content-Range')!r}")
            mode = "ab"
        elif offset:
            logger.info("the server ignored the Range request for %s; restarting from byte 0", url)
            offset = 0
        length = response.headers.get("Content-Length")
        remaining = int(length) if length and length.isdigit() else None
        total = offset + remaining if remaining is not None else size
        with _open_part(part, mode) as out, _progress_bar(total, offset, desc, progress) as bar:
            _copy_stream(response.read, out, bar, remaining)


def download_url(
    url: str,
    dest: str | os.PathLike,
    *,
    size: int | None = None,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = 30.0,
    attempts: int = 3,
    desc: str | None = None,
    keep_existing: bool = False,
) -> Path:
    """Download ``url`` to ``dest`` atomically, resuming ``<dest>.part`` and checking size / sha256 when given.

    Args:
        url: ``http(s)://`` or ``file://`` URL.
        dest: final path; it appears only once the file is complete and verified.
        size: expected size in bytes, or None.
        sha256: expected hex digest, or None.
        progress: show a tqdm progress bar on stderr.
        timeout: socket timeout in seconds for connecting and for each read.
        attempts: how many times a transfer that breaks off mid-way is resumed before giving up.
        desc: label of the progress bar (default: the file name).
        keep_existing: return at once if ``dest`` exists once the lock is held (another process just finished it).

    Returns:
        ``dest`` as a Path.

    Raises:
        WeightsUnavailableError: the URL cannot be reached or answers with an error; a partial ``.part`` is kept
            so that the next call resumes it.
        WeightsIntegrityError: the finished file has the wrong size or hash; nothing is left behind.
    """
    dest = Path(dest)
    part = part_path(dest)
    desc = desc or dest.name
    scheme = urllib.parse.urlparse(url).scheme.lower()
    if scheme not in ("http", "https", "file"):
        raise WeightsUnavailableError(f"unsupported URL scheme {scheme!r} in {url} (use http, https or file)", url)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WeightsError(f"cannot create {dest.parent} ({err}); set {HOME_ENV} to a writable folder") from None
    with _exclusive(dest):
        if keep_existing and dest.is_file():
            return dest
        for attempt in range(1, attempts + 1):
            if size is not None and part.is_file() and part.stat().st_size > size:
                part.unlink()  # longer than the release: not a prefix of it
            if size is not None and part.is_file() and part.stat().st_size == size:
                break
            try:
                if scheme == "file":
                    _fetch_file_url(url, part, desc, progress)
                else:
                    _fetch_http(url, part, desc, progress, timeout, size)
                break
            except _Interrupted as err:
                got = part.stat().st_size if part.is_file() else 0
                if attempt == attempts:
                    raise WeightsUnavailableError(
                        f"download of {url} broke off after {attempts} attempts ({err}); {got} bytes are kept in "
                        f"{part}; run the command again to resume",
                        url,
                        dest,
                    ) from None
                logger.warning("download of %s interrupted (%s); resuming from byte %d", url, err, got)
            except urllib.error.HTTPError as err:
                raise WeightsUnavailableError(f"{url} answered HTTP {err.code} {err.reason}", url, dest) from None
            except (urllib.error.URLError, OSError) as err:
                reason = getattr(err, "reason", None) or err
                raise WeightsUnavailableError(f"cannot reach {url} ({reason})", url, dest) from None
        check_file(part, size, sha256, what=url, remove=True)
        move_into_place(part, dest)
    logger.info("downloaded %s -> %s", url, dest)
    return dest


def check_file(path: Path, size: int | None, sha256: str | None, what: str, remove: bool = False) -> str | None:
    """Check size then hash (when known); on mismatch remove the file if asked and raise.

    Returns:
        The hex sha256 when it was computed (``sha256`` given), else None.

    Raises:
        WeightsIntegrityError: wrong size or hash; the message starts with ``what``.
    """
    problem = None
    actual_size = path.stat().st_size
    digest = None
    if size is not None and actual_size != size:
        problem = f"has {actual_size} bytes, expected {size}"
    elif sha256 is not None:
        digest = sha256_file(path)
        if digest.lower() != sha256.lower():
            problem = f"has sha256 {digest}, expected {sha256}"
    if problem is None:
        return digest
    if remove:
        path.unlink(missing_ok=True)
        problem += "; the file was removed"
    raise WeightsIntegrityError(f"{what} {problem} (a different or corrupt release; do not use it)")
