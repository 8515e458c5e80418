"""Session isolation and cleanup: disjoint private workspaces, deletion on expiry, tab close and shutdown."""

from __future__ import annotations

import gc
import os
import stat
from pathlib import Path

import pytest

from app.config import AppConfig, AppLimits
from app.handlers import RunSettings, run_reconstruction
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

    result = run_reconstruction(a, model, RunSettings(image_size=160, subsample=16), AppLimits(), device="cpu")
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
        pytest.importorskip("gradio")
        from app.ui import build_app

        demo = build_app(model, config=AppConfig(device="cpu", session_ttl_s=123.0))
        yield demo
        demo.recon_workspaces.close_all()

    def test_state_expiry_deletes_the_workspace(self, demo):
        import gradio as gr

        (state,) = [b for b in demo.blocks.values() if isinstance(b, gr.State)]
        assert state.time_to_live == 123.0
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
        pytest.importorskip("gradio")
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

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    orphan = tmp_path / f"recon-app-{int(dead.stdout)}-abcd1234"
    (orphan / "s-x" / "inputs").mkdir(parents=True)
    alive = tmp_path / f"recon-app-{os.getpid()}-efgh5678"  # this process: still running, kept
    alive.mkdir()
    mgr = WorkspaceManager(tmp_path)
    try:
        assert not orphan.exists() and alive.is_dir()
    finally:
        mgr.close_all()
