"""The app as a service: a real server (``python -m app`` in a subprocess on 127.0.0.1) driven by ``gradio_client``.

Started with no model on an empty weights cache (so the seeded random model), a private ``GRADIO_TEMP_DIR`` and
small limits. Every wait is a bounded loop; every server is stopped by the test that started it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m app`` with ``args`` in a subprocess; its log in ``log``."""

    def __init__(self, tmp: Path, *args: str):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.gradio_tmp = tmp / "gradio"
        self.log = tmp / "server.log"
        env = {
            **os.environ,
            "RECON_HOME": str(tmp / "empty-cache"),  # no cached weights: the app must pick the random model
            "GRADIO_TEMP_DIR": str(self.gradio_tmp),
            "PYTHONPATH": str(REPO),
            "OMP_NUM_THREADS": "1",
        }
        cmd = [sys.executable, "-m", "app", "--port", str(self.port), *args]
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
        import httpx

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited ({self.proc.returncode}):\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(self.url, timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError("the server did not answer within 120 s:\n" + self.log.read_text()[-3000:])

    @property
    def roots(self) -> list[Path]:
        """The workspace roots of app servers under this server's upload folder."""
        return sorted((self.gradio_tmp / "recon-app").glob("recon-app-*"))

    def client(self):
        from gradio_client import Client

        return Client(self.url, verbose=False, download_files=False)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return self.proc.returncode


def _photos(folder: str, n: int) -> list[Path]:
    return sorted((REPO / "demo_data" / folder).glob("*.jpg"))[:n]


def _upload(client, files):
    from gradio_client import handle_file

    return client.predict([handle_file(str(f)) for f in files], api_name="/on_upload")


def _session_dir(upload_result) -> Path:
    """The session's workspace folder, from the files the upload box shows (they live in its inputs/)."""
    first = upload_result[2][0]
    return Path(first["path"]).parents[1]


def _long_run(client):
    """Submit a run of the uploaded photos with 1000 dense alignment iterations at 512 px (10-30 s here).

    The dense aligner got faster: at 224 px the same run took ~2 s on a quiet machine, shorter than the 5 s TTL
    that the sweep test must outlast, so the resolution (and with it the per-iteration cost) is the app's largest.
    """
    knobs = ("random:micro", "swin-2", "dense", "512", 1000, 8, 0.0, False, 0, True, False)
    view = (1.5, True, False, True, 0.0)
    return client.submit(*knobs, *view, api_name="/on_run")


def _wait(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(
        tmp_path_factory.mktemp("server"),
        "--model", "random:micro",  # the fast random model (offline, the app would start with recon-tiny)
        "--concurrency", "2", "--session-ttl", "5", "--max-images", "8", "--max-upload-mb", "2",
    )  # fmt: skip
    yield srv
    srv.stop()


def test_starts_with_the_random_model_when_asked_and_says_so(server):
    import httpx

    from app.models import RANDOM_NOTE

    config = httpx.get(server.url + "config", timeout=10).text
    assert RANDOM_NOTE in config  # the banner
    log = server.log.read_text()
    assert "model random:micro given with --model" in log and "share=True" not in log
    info = httpx.get(server.url + "gradio_api/info", timeout=10).text
    # no server path in the API description (weights cache, upload folder, repository)
    for path in (str(server.gradio_tmp), str(REPO), "empty-cache"):
        assert path not in info and path not in config


def test_concurrent_sessions_are_isolated_and_finish(server):
    results, errors = {}, []

    def session(name, files):
        try:
            client = server.client()
            up = _upload(client, files)
            assert up[0].startswith(f"**{len(files)}** images ready"), up[0]
            assert len(up[2]) == len(files)  # the upload box lists exactly the images in use
            job = client.submit(api_name="/on_run")
            final = job.result(timeout=300)
            folder = _session_dir(up)
            results[name] = (final, folder, sorted(p.read_bytes() for p in (folder / "inputs").iterdir()))
            client.close()
        except Exception as err:  # reported below, with the thread's name
            errors.append((name, repr(err)))

    threads = [
        threading.Thread(target=session, args=("orbit", _photos("orbit", 4))),
        threading.Thread(target=session, args=("room", _photos("room", 4))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(360)
    assert not errors, errors
    (fa, folder_a, bytes_a), (fb, folder_b, bytes_b) = results["orbit"], results["room"]
    for progress_html, stages in (fa, fb):
        assert "100 %" in progress_html and "finished in" in progress_html
        assert "**Finished with random weights**" in stages and "Done" not in stages
        assert "⚠ **alignment**: 4/4 views placed from random weights: meaningless" in stages
        assert "✓ **pairs**: scene graph swin-2: 6 pairs (12 decoder passes)" in stages
    assert folder_a != folder_b and folder_a.parent == folder_b.parent
    assert bytes_a == sorted(p.read_bytes() for p in _photos("orbit", 4))
    assert bytes_b == sorted(p.read_bytes() for p in _photos("room", 4))


def test_a_sweep_during_a_run_spares_it_and_inactivity_then_deletes(server):
    """TTL 5 s: a run longer than that is never swept; 5 s after its last event, the session is deleted."""
    client = server.client()
    up = _upload(client, _photos("orbit", 4))
    folder = _session_dir(up)
    t0 = time.monotonic()
    job = _long_run(client)
    vanished = []
    while not job.done():
        if not folder.is_dir():
            vanished.append(time.monotonic() - t0)
        time.sleep(0.2)
    elapsed = time.monotonic() - t0
    final = job.result(timeout=10)
    assert elapsed > 5 + 2, f"the run took {elapsed:.1f} s: too short to overlap a sweep (TTL 5 s, every 1.25 s)"
    assert vanished == [] and "Finished with random weights" in final[1]
    # the client stays connected (heartbeats are not activity): the idle session goes after its TTL
    _wait(lambda: not folder.exists(), 30, "the idle session's deletion")
    client.close()


def test_a_failed_stage_reads_failed(server):
    """A run that finds no match at all (minimum match confidence above every descriptor confidence of the random
    model, 0.4-2.4) fails at matching: the page says which stage failed and why, never done. (Alignment itself
    places every connected view, so it is the matching stage that fails here.)"""
    client = server.client()
    _upload(client, _photos("orbit", 3))
    knobs = ("random:micro", "swin-2", "sparse", "224", 10, 16, 10.0, False, 0, True, False)
    progress_html, stages = client.submit(*knobs, 1.5, True, False, True, 0.0, api_name="/on_run").result(timeout=300)
    assert "failed after" in progress_html
    assert "✗ **matching**: failed" in stages and "**Failed.**" in stages
    assert "no match was found between any pair" in stages
    # the stages that did their work say what they did, in the one wording of pairs
    assert "✓ **pairs**: scene graph swin-2: 3 pairs (6 decoder passes)" in stages
    assert "✓ **inference**: decoder pass 6/6 (3 pairs)" in stages
    assert "Done" not in stages and "cameras registered" not in stages and "○ export" in stages
    assert client.predict(api_name="/on_show")[0] is None  # nothing to view or download
    client.close()


def test_upload_quotas_are_enforced_at_the_http_route(server):
    import httpx

    photos = _photos("orbit", 9)
    files = [("files", (p.name, p.read_bytes(), "image/jpeg")) for p in photos]
    before = {p for p in server.gradio_tmp.rglob("*.jpg")}
    r = httpx.post(server.url + "gradio_api/upload", files=files, timeout=60)
    assert r.status_code == 413 and "9 files in one upload; the limit is 8" in r.text
    assert {p for p in server.gradio_tmp.rglob("*.jpg")} == before  # what the route wrote was deleted
    big = [("files", ("big.jpg", b"\xff" * (3 * 2**20), "image/jpeg"))]
    r = httpx.post(server.url + "gradio_api/upload", files=big, timeout=60)
    assert r.status_code == 413 and "the limit is 2 MB" in r.text
    # within the limits the route answers as Gradio does
    r = httpx.post(server.url + "gradio_api/upload", files=files[:2], timeout=60)
    assert r.status_code == 200 and len(json.loads(r.text)) == 2


def test_stop_cancels_the_run(server):
    client = server.client()
    _upload(client, _photos("orbit", 4))
    job = _long_run(client)
    _wait(lambda: any("alignment" in o[1] for o in job.outputs()), 120, "the alignment to start")
    client.predict(api_name="/on_stop")
    _wait(lambda: "stopped on request" in server.log.read_text(), 30, "the run to stop")
    client.close()


def test_closing_the_session_cancels_its_run(server):
    client = server.client()
    # 8 photos: an alignment long enough (~15 s here) that the closed connection is noticed while it runs
    folder = _session_dir(_upload(client, _photos("room", 8)))
    job = _long_run(client)
    _wait(lambda: any("alignment" in o[1] for o in job.outputs()), 120, "the alignment to start")
    stopped = server.log.read_text().count("stopped on request")
    client.close()  # as closing the tab: the session ends, its run is cancelled, then its folder deleted
    _wait(lambda: server.log.read_text().count("stopped on request") > stopped, 60, "the run to stop")
    _wait(lambda: not folder.exists(), 30, "the session's deletion")


def test_sigterm_removes_every_session(tmp_path):
    import httpx

    srv = Server(tmp_path, "--model", "random:micro", "--session-ttl", "600")
    try:
        # an upload that no session ingested: Gradio's folder holds it until the server stops
        stray = json.loads(httpx.post(srv.url + "gradio_api/upload", files=[("files", ("x.jpg", b"x"))]).text)
        assert [Path(p).is_file() for p in stray] == [True]
        client = srv.client()
        folder = _session_dir(_upload(client, _photos("orbit", 4)))
        job = _long_run(client)
        _wait(lambda: any("alignment" in o[1] for o in job.outputs()), 120, "a run in progress")
        assert folder.is_dir() and len(srv.roots) == 1
    finally:
        rc = srv.stop(signal.SIGTERM)
    assert rc == 0, srv.log.read_text()[-2000:]
    assert not folder.exists() and srv.roots == []  # photos, results and the root itself are gone
    assert not any(Path(p).exists() for p in stray)
