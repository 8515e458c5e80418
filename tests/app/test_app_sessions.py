"""Session isolation and cleanup: disjoint private workspaces, deletion on expiry, tab close and shutdown."""

from __future__ import annotations

import gc
import os
import stat
import time
from dataclasses import replace
from pathlib import Path

import pytest
from fixture_files import require_extra

from app.config import AppConfig, AppLimits
from app.handlers import page_defaults, run_reconstruction
from app.uploads import ingest
from app.workspace import Workspace, WorkspaceManager


def test_two_sessions_have_disjoint_private_workspaces(manager, demo_images, model):
    a, b = manager.create("session-a"), manager.create("session-b")
    assert a.root != b.root and a.root.parent == b.root.parent == manager.root
    assert stat.S_IMODE(a.root.stat().st_mode) == 0o700
    ingest(a, demo_images[:2], AppLimits())
    ingest(b, demo_images[2:5], AppLimits())
    assert all(a.root in p.parents for p in a.inputs) and all(b.root in p.parents for p in b.inputs)
    assert [p.name for p in a.inputs] == ["0000_view_000.jpg", "0001_view_001.jpg"]
    assert [p.name for p in b.inputs] == ["0000_view_002.jpg", "0001_view_003.jpg", "0002_view_004.jpg"]

    result = run_reconstruction(
        a, model, replace(page_defaults(), image_size=160, subsample=16), AppLimits(), device="cpu"
    )
    assert b.result is None  # b's state is untouched by a's run
    assert all(a.root in p.parents for p in result.exports.downloads)
    assert not any(b.root in p.parents for p in result.exports.downloads)

    manager.release(a)  # a's session expired
    assert not a.root.exists() and a.result is None
    assert b.root.is_dir() and all(p.is_file() for p in b.inputs)
    assert manager.active() == [b]


def test_release_session_on_tab_close(manager):
    ws = manager.create("tab")
    (ws.inputs_dir / "x.jpg").write_bytes(b"data")
    manager.release_session("tab")
    assert not ws.root.exists()
    manager.release_session("tab")  # a second close is harmless
    manager.release_session("never-seen")


def test_new_workspace_for_same_session_replaces_the_old(manager):
    old = manager.create("s")
    new = manager.create("s")
    assert not old.root.exists() and new.root.is_dir()


def test_removing_one_input_keeps_the_rest(manager, demo_images):
    ws = manager.create("a")
    ingest(ws, demo_images[:3], AppLimits())
    gone = ws.inputs[1]
    assert not ws.remove_input(demo_images[0])  # not an input of this workspace: ignored, never deleted
    assert demo_images[0].is_file()
    assert ws.remove_input(str(gone)) and not gone.exists()
    assert [p.name for p in ws.inputs] == ["0000_view_000.jpg", "0002_view_002.jpg"] and len(ws.input_names) == 2


def test_ensure_reopens_a_closed_workspace(manager):
    ws = manager.create("s")
    assert manager.ensure(ws, "s") is ws
    ws.close()
    again = manager.ensure(ws, "s")
    assert again is not ws and again.root.is_dir()
    assert manager.ensure(None, "t").root.is_dir()


def test_close_all_and_garbage_collection_remove_the_root(tmp_path):
    mgr = WorkspaceManager(tmp_path)
    ws = mgr.create("a")
    root = mgr.root
    mgr.close_all()
    assert not ws.root.exists() and not root.exists()

    mgr = WorkspaceManager(tmp_path)
    root = mgr.root
    mgr.create("b")
    del mgr
    gc.collect()
    assert not root.exists()


def test_workspace_is_never_deep_copied(manager):
    import copy

    ws = manager.create("a")
    assert copy.deepcopy(ws) is ws


class TestGradioWiring:
    """The Blocks hand expired state and closed tabs to the manager (no server needed)."""

    @pytest.fixture
    def demo(self, model):
        require_extra("gradio")
        from app.ui import build_app

        demo = build_app(model, config=AppConfig(device="cpu", session_ttl_s=123.0))
        yield demo
        demo.recon_workspaces.close_all()

    def test_no_expiry_counted_from_creation(self, demo):
        import math

        import gradio as gr

        # the session's workspace state (the one with a delete callback; the inspect tab has a plain one)
        states = [b for b in demo.blocks.values() if isinstance(b, gr.State)]
        assert all(math.isinf(b.time_to_live) for b in states)
        (state,) = [b for b in states if b.delete_callback.__name__ != "default_delete_callback"]
        # Gradio's state TTL and cache sweep count from creation / upload and would delete a session mid-run:
        # both are off, and the manager's own sweeper counts inactivity.
        assert math.isinf(state.time_to_live) and demo.delete_cache is None
        assert demo.recon_workspaces.ttl_s == 123.0 and demo.recon_workspaces._sweeper.is_alive()
        ws = demo.recon_workspaces.create("expiring")
        state.delete_callback(ws)  # what Gradio calls when the state expires
        assert not ws.root.exists()
        state.delete_callback(None)  # a session that never uploaded anything

    def test_unload_deletes_the_sessions_workspace(self, demo):
        (unload,) = [fn for fn in demo.fns.values() if any(t[1] == "unload" for t in fn.targets)]
        ws = demo.recon_workspaces.create("closing-tab")

        class Request:
            session_hash = "closing-tab"

        unload.fn(Request())
        assert not ws.root.exists()

    def test_queue_and_concurrency(self, model):
        require_extra("gradio")
        from app.ui import build_app

        demo = build_app(model, config=AppConfig(device="cpu", concurrency_limit=3, max_queue=7))
        try:
            assert demo._queue.max_size == 7
            (run,) = [fn for fn in demo.fns.values() if fn.concurrency_id == "reconstruct"]
            assert run.concurrency_limit == 3
        finally:
            demo.recon_workspaces.close_all()

    def test_workspaces_live_in_gradios_upload_folder(self, demo):
        from pathlib import Path

        from gradio.utils import get_upload_folder

        assert Path(get_upload_folder()).resolve() in demo.recon_workspaces.root.resolve().parents


def test_workspace_defaults():
    ws = Workspace(root=Path("/nonexistent/recon-test"))
    assert ws.closed and ws.inputs == [] and ws.result is None


def test_roots_left_by_dead_servers_are_removed_at_start(tmp_path):
    import subprocess
    import sys

    from app.workspace import MARKER

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / f"recon-app-{int(dead.stdout)}-abcd1234"
    (orphan / "s-x" / "inputs").mkdir(parents=True)
    (orphan / MARKER).write_text("1")
    foreign = tmp_path / f"recon-app-{int(dead.stdout)}-notours1"  # same name pattern, no marker: not ours, kept
    foreign.mkdir()
    alive = tmp_path / f"recon-app-{os.getpid()}-efgh5678"  # this process: still running, kept
    alive.mkdir()
    (alive / MARKER).write_text("1")
    mgr = WorkspaceManager(tmp_path)
    try:
        assert not orphan.exists() and alive.is_dir() and foreign.is_dir()
        assert (mgr.root / MARKER).is_file()
    finally:
        mgr.close_all()


class TestInactivity:
    """Sessions are deleted after TTL seconds WITHOUT ACTIVITY, never while a run or export works in them."""

    def test_idle_sessions_go_active_and_busy_ones_stay(self, tmp_path):
        mgr = WorkspaceManager(tmp_path / "w", ttl_s=100.0)
        try:
            idle, recent, busy = mgr.create("idle"), mgr.create("recent"), mgr.create("busy")
            now = time.time()
            idle.touched = now - 101
            recent.touched = now - 99
            busy.touched = now - 10_000
            with mgr.working(busy, run=True) as cancel:
                assert mgr.sweep(now) == 1
                assert not idle.root.exists() and recent.root.is_dir() and busy.root.is_dir()
                assert not cancel.is_set()
            # the run's end counts as activity: still there right after it
            assert mgr.sweep() == 0 and busy.root.is_dir()
            assert mgr.sweep(time.time() + 101) == 2
        finally:
            mgr.close_all()

    @pytest.mark.parametrize("released_first", [False, True])
    def test_server_stop_waits_for_cancelled_runs(self, tmp_path, released_first):
        """close_all cancels every run and returns only once each has stopped (a worker thread still inside torch at
        interpreter exit aborts the process), also for a run whose tab was closed before the server stopped."""
        import threading

        mgr = WorkspaceManager(tmp_path / "w", ttl_s=100.0)
        ws = mgr.create("tab")
        started, finished = threading.Event(), []

        def run():
            with mgr.working(ws, run=True) as cancel:
                started.set()
                assert cancel.wait(10)
                time.sleep(0.3)  # the last step of a run, after it saw the cancel event
                finished.append(ws.root.is_dir())

        worker = threading.Thread(target=run)
        worker.start()
        assert started.wait(10)
        if released_first:
            mgr.release_session("tab")
        mgr.close_all(wait_s=10)
        assert finished == [True] and not ws.root.exists()
        worker.join(1)
        assert not worker.is_alive()

    def test_server_stop_gives_up_after_its_wait(self, tmp_path, caplog):
        mgr = WorkspaceManager(tmp_path / "w", ttl_s=100.0)
        ws = mgr.create("tab")
        with mgr.working(ws, run=True) as cancel:  # a run that never reaches its next cancellation check
            mgr.close_all(wait_s=0.2)
            assert cancel.is_set() and not ws.root.exists()
        assert "did not stop within" in caplog.text

    def test_session_closed_mid_run_is_cancelled_then_deleted(self, manager):
        ws = manager.create("tab")
        with manager.working(ws, run=True) as cancel:
            manager.release_session("tab")
            assert cancel.is_set() and ws.root.is_dir()  # the run is told to stop; its files stay until it does
        assert not ws.root.exists() and manager.active() == []

    def test_a_new_run_cancels_the_previous_one(self, manager):
        ws = manager.create("twice")
        with manager.working(ws, run=True) as first:
            with manager.working(ws, run=True) as second:
                assert first.is_set() and not second.is_set()
            with manager.working(ws):  # an export does not stop the run
                assert not second.is_set()
