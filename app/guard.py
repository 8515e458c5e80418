"""Quotas at Gradio's HTTP upload route, and the ledger of what it wrote.

Gradio's ``POST /gradio_api/upload`` writes every file of a multipart body into its upload folder before any
event of ours runs; its own ``max_file_size`` bounds each file, not their number, not their sum, and not what a
client keeps there without ever ingesting it. ``UploadGuard`` (an ASGI middleware in front of the route) adds:

- a body size limit per request (``Content-Length`` is required and checked before a byte is read; the server
  never reads past it);
- a file count limit per request (checked on Gradio's answer: the files are deleted and 413 returned);
- quotas on what is uploaded and not yet ingested, per client address and for the whole server (429 / 503);
- an ``UploadLedger`` of every file the route wrote. A session may delete an uploaded file only by claiming it
  from the ledger (``claim``), so no request can make the app delete a file it did not upload through the
  route; files nobody ingests are deleted after ``AppLimits.upload_claim_s``.

The route carries no session id, so the client address stands for the session there; the per-session limits
are checked again when a session ingests its files (``app.uploads``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from app.config import MB, AppLimits

logger = logging.getLogger(__name__)

# Multipart framing around the files (boundaries, part headers): a few hundred bytes per file.
_FRAMING = 64 * 1024


@dataclass
class _Entry:
    client: str
    size: int
    time: float


class UploadLedger:
    """Files written by the upload route and not yet claimed, with their client, size and time (thread-safe).

    The same path can be written twice (Gradio names files by content hash): each write is one entry, and the file
    is deleted when its last entry is claimed or expires.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._entries: dict[str, list[_Entry]] = {}
        self._reserved: dict[str, int] = {}  # bytes of requests being received, per client

    def add(self, paths: list[str], client: str) -> None:
        now = time.time()
        with self._lock:
            for p in paths:
                try:
                    size = Path(p).stat().st_size
                except OSError:
                    continue
                self._entries.setdefault(str(Path(p)), []).append(_Entry(client, size, now))

    def pending(self, client: str | None = None) -> tuple[int, int]:
        """``(files, bytes)`` uploaded and not yet claimed (by ``client``, or by everyone), plus bytes in transit."""
        with self._lock:
            entries = [e for es in self._entries.values() for e in es if client is None or e.client == client]
            transit = sum(v for c, v in self._reserved.items() if client is None or c == client)
        return len(entries), sum(e.size for e in entries) + transit

    def reserve(self, client: str, nbytes: int) -> None:
        with self._lock:
            self._reserved[client] = self._reserved.get(client, 0) + nbytes

    def unreserve(self, client: str, nbytes: int) -> None:
        with self._lock:
            left = self._reserved.get(client, 0) - nbytes
            if left > 0:
                self._reserved[client] = left
            else:
                self._reserved.pop(client, None)

    def claim(self, paths) -> list[Path]:
        """Take one entry of each of ``paths`` that the route wrote; returns the files no entry refers to any more
        (the caller deletes them once it has its copy). Paths the route did not write are ignored."""
        free = []
        with self._lock:
            for p in paths:
                key = str(Path(p))
                entries = self._entries.get(key)
                if not entries:
                    continue
                entries.pop(0)
                if not entries:
                    del self._entries[key]
                    free.append(Path(key))
        return free

    def sweep(self, max_age_s: float, now: float | None = None) -> int:
        """Delete the uploaded files that nobody claimed within ``max_age_s``; returns how many were deleted."""
        now = time.time() if now is None else now
        gone = []
        with self._lock:
            for key in list(self._entries):
                kept = [e for e in self._entries[key] if now - e.time <= max_age_s]
                if kept:
                    self._entries[key] = kept
                else:
                    del self._entries[key]
                    gone.append(Path(key))
        for path in gone:
            _delete_upload(path)
        if gone:
            logger.info("deleted %d uploaded file(s) never ingested", len(gone))
        return len(gone)

    def clear(self) -> int:
        """Delete every uploaded file not yet claimed (the server is stopping)."""
        return self.sweep(-1.0)


def _delete_upload(path: Path) -> None:
    """Delete an uploaded file and its folder when empty (Gradio makes one folder per content hash)."""
    path.unlink(missing_ok=True)
    try:
        path.parent.rmdir()
    except OSError:  # not empty (another file of the same content), or already gone
        pass


def delete_claimed(paths) -> None:
    """Delete files returned by ``UploadLedger.claim``."""
    for path in paths:
        _delete_upload(Path(path))


class UploadGuard:
    """ASGI middleware enforcing ``AppLimits`` upload quotas on Gradio's upload route (see the module docstring).

    Args:
        app: the ASGI app (Gradio's FastAPI app).
        ledger: where uploaded files are recorded.
        limits: ``max_upload_mb`` (per request and per client pending), ``max_images`` (files per request; twice
            that pending per client), ``max_pending_upload_mb`` (all clients).
    """

    def __init__(self, app, ledger: UploadLedger, limits: AppLimits):
        self.app = app
        self.ledger = ledger
        self.limits = limits

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope.get("method") != "POST":
            return await self.app(scope, receive, send)
        path = scope.get("path", "").rstrip("/")
        if path.endswith("/component_server") and _is_multipart(scope):
            # No component of this app takes files through a server function: refuse instead of buffering them.
            return await _refuse(send, 413, "file uploads are accepted only at the upload route")
        if not path.endswith("/upload"):
            return await self.app(scope, receive, send)
        lim = self.limits
        length = _content_length(scope)
        if length is None:
            return await _refuse(send, 411, "an upload must declare its Content-Length")
        per_request = int(lim.max_upload_mb * MB) + _FRAMING
        if length > per_request:
            return await _refuse(send, 413, f"upload of {length / MB:.0f} MB; the limit is {lim.max_upload_mb:g} MB")
        client = (scope.get("client") or ("?", 0))[0]
        files, pending = self.ledger.pending(client)
        if pending + length > 2 * per_request or files >= 2 * lim.max_images:
            return await _refuse(
                send, 429, "too many uploads waiting to be used from this address: use or clear them first"
            )
        _, everyone = self.ledger.pending()
        if everyone + length > lim.max_pending_upload_mb * MB:
            return await _refuse(send, 503, "the server holds too many uploads right now: try again in a few minutes")
        self.ledger.reserve(client, length)
        try:
            await self._forward(scope, receive, send, client)
        finally:
            self.ledger.unreserve(client, length)

    async def _forward(self, scope, receive, send, client: str):
        """Run the route, hold its (small, JSON) answer, and check the number of files it wrote."""
        held = []

        async def hold(message):
            held.append(message)

        await self.app(scope, receive, hold)
        start = next((m for m in held if m["type"] == "http.response.start"), None)
        body = b"".join(m.get("body", b"") for m in held if m["type"] == "http.response.body")
        paths = []
        if start is not None and start["status"] == 200:
            try:
                paths = [str(p) for p in json.loads(body)]
            except (ValueError, TypeError):
                paths = []
        if len(paths) > self.limits.max_images:
            for p in paths:
                _delete_upload(Path(p))
            return await _refuse(
                send, 413, f"{len(paths)} files in one upload; the limit is {self.limits.max_images} per session"
            )
        self.ledger.add(paths, client)
        for message in held:
            await send(message)


def _is_multipart(scope) -> bool:
    for key, value in scope.get("headers", []):
        if key == b"content-type":
            return value.lower().startswith(b"multipart/")
    return False


def _content_length(scope) -> int | None:
    for key, value in scope.get("headers", []):
        if key == b"content-length":
            try:
                n = int(value)
            except ValueError:
                return None
            return n if n >= 0 else None
    return None


async def _refuse(send, status: int, message: str) -> None:
    body = message.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
