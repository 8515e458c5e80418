"""Fixtures for the weights hub: an isolated cache folder and a local HTTP server with Range support.

The server listens on 127.0.0.1 only, on a free port, in a daemon thread that each test stops.
"""

from __future__ import annotations

import re
import socket
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from backbone import hub

_RANGE = re.compile(r"bytes=(\d+)-$")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):  # noqa: N802  (http.server's naming)
        srv: RangeServer = self.server  # type: ignore[assignment]
        requested_range = self.headers.get("Range")
        srv.requests.append((self.path, requested_range))
        data = srv.files.get(self.path.lstrip("/"))
        if data is None:
            self.send_error(404, "not found")
            return
        start, status = 0, 200
        if requested_range and srv.whole_file_as_206:
            # A broken server: answers a Range request with a 206 that starts at byte 0.
            self.send_response(206)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Content-Range", f"bytes 0-{len(data) - 1}/{len(data)}")
            self.end_headers()
            self.wfile.write(data)
            return
        if requested_range and not srv.ignore_range:
            match = _RANGE.match(requested_range)
            assert match, f"client sent an unexpected Range header {requested_range!r}"
            start = int(match.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.end_headers()
        cut = srv.cut_after.pop(0) if srv.cut_after else None
        # Count before writing: the client may finish reading (and the test assert) before this thread resumes.
        if cut is None:
            srv.bytes_sent += len(body)
            self.wfile.write(body)
            return
        # Announce the whole body, send only ``cut`` bytes, then drop the connection (a broken download).
        srv.bytes_sent += cut
        self.wfile.write(body[:cut])
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, *args):  # keep the test output clean
        pass


class RangeServer(ThreadingHTTPServer):
    """Serves ``files`` (name -> bytes); honours ``Range: bytes=N-`` unless ``ignore_range`` (answers 200) or
    ``whole_file_as_206`` (answers a 206 that starts at byte 0).

    Attributes:
        requests: ``(path, Range header or None)`` per request, in order.
        cut_after: per request in order, a byte count after which the connection is dropped (consumed).
        bytes_sent: total body bytes written.
    """

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.cut_after: list[int] = []
        self.ignore_range = False
        self.whole_file_as_206 = False
        self.bytes_sent = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def server():
    srv = RangeServer()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join(timeout=5)


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released), so connecting is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own ``RECON_HOME`` and no mirror, so the user's cache is never touched."""
    home = tmp_path / "recon_home"
    monkeypatch.setenv(hub.HOME_ENV, str(home))
    monkeypatch.delenv(hub.MIRROR_ENV, raising=False)
    return home / "weights"


@pytest.fixture
def payload() -> bytes:
    """3.5 MiB of non-repeating bytes: several 1 MiB read chunks, and any misplaced byte changes the content."""
    import random

    return random.Random(1234).randbytes(3 * (1 << 20) + 512 * 1024)


@pytest.fixture
def tiny_entry(monkeypatch):
    """Register a table entry ``tiny`` whose official URL points nowhere; return a function to change it."""

    def make(url: str = "http://127.0.0.1:9/tiny.bin", **changes) -> hub.WeightsEntry:
        base = hub.WEIGHTS["mum_vitl16"]
        entry = replace(base, name="tiny", url=url, filename=url.rsplit("/", 1)[-1], aliases=(), **changes)
        monkeypatch.setitem(hub.WEIGHTS, "tiny", entry)
        return entry

    return make
