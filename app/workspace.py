"""Per-session workspaces: one private temporary folder per browser session, deleted when the session ends.

Everything a user brings or gets (uploads, the cached reconstruction, exported files) lives in the session's
``Workspace``; nothing is shared between sessions. A ``WorkspaceManager`` creates them under one root made with
``tempfile`` (private, ``0o700``), tracks them by Gradio session id and deletes one when its session ends (tab
closed) or has been INACTIVE for the time-to-live (its own sweeper, measured from the last event, never while a
run or an export is working in it: a session closed mid-run is cancelled and deleted when the run stops). The
whole root goes when the server stops (``close_all``, also at interpreter exit), and a later start removes the
roots that a killed server left (recognised by their marker file and a dead pid, nothing else).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)


@dataclass
class Workspace:
    """One session's private folder and what it caches.

    Attributes:
        root: the folder (random, unguessable name; deleted by ``close``).
        session: the Gradio session id it belongs to ("" outside Gradio).
        inputs: ingested input files (generated names) in the order given.
        input_names: the display names of ``inputs`` (sanitised uploaded names).
        input_bytes: total size of what was uploaded.
        result: the last reconstruction (``app.handlers.RunResult``), or None.
        export_serial: counter that gives every export a new file name, so browsers never show a stale cache.
        created / touched: ``time.time()`` of creation and of the last use.
        busy: runs and exports working in the folder now (the sweeper leaves a busy workspace alone).
        cancel: set to stop the running reconstruction (Stop button, tab closed, server stopping).
        doomed: the session ended while busy: the folder goes as soon as the work stops.
    """

    root: Path
    session: str = ""
    inputs: list[Path] = field(default_factory=list)
    input_names: list[str] = field(default_factory=list)
    input_bytes: int = 0
    result: object | None = None
    export_serial: int = 0
    created: float = field(default_factory=time.time)
    touched: float = field(default_factory=time.time)
    busy: int = 0
    cancel: threading.Event = field(default_factory=threading.Event)
    doomed: bool = False

    @property
    def closed(self) -> bool:
        return not self.root.is_dir()

    @property
    def inputs_dir(self) -> Path:
        return self.root / "inputs"

    @property
    def outputs_dir(self) -> Path:
        return self.root / "outputs"

    def clear_inputs(self) -> None:
        """Forget the inputs and the result (a new upload replaces the previous one)."""
        shutil.rmtree(self.inputs_dir, ignore_errors=True)
        shutil.rmtree(self.outputs_dir, ignore_errors=True)
        self.inputs_dir.mkdir()
        self.outputs_dir.mkdir()
        self.inputs, self.input_names, self.input_bytes, self.result = [], [], 0, None

    def remove_input(self, path: str | Path) -> bool:
        """Forget (and delete) one ingested input, named by its path; anything else is ignored. Drops the result."""
        path = Path(path)
        for k, p in enumerate(self.inputs):
            if p == path:
                p.unlink(missing_ok=True)
                del self.inputs[k], self.input_names[k]
                self.result = None
                return True
        return False

    def new_output_dir(self) -> Path:
        """A fresh sub-folder of ``outputs`` for one export (older ones are removed: only the latest is shown)."""
        self.export_serial += 1
        for old in self.outputs_dir.glob("export_*"):
            shutil.rmtree(old, ignore_errors=True)
        out = self.outputs_dir / f"export_{self.export_serial:04d}"
        out.mkdir(parents=True)
        return out

    def touch(self) -> None:
        self.touched = time.time()

    def close(self) -> None:
        """Delete the folder and drop cached results (idempotent)."""
        self.result = None
        shutil.rmtree(self.root, ignore_errors=True)

    def __deepcopy__(self, memo):
        # Gradio deep-copies initial state values; a workspace is a handle to a folder and must never be cloned.
        return self


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


MARKER = ".recon-app-root"  # written in every root we make; a folder without it is never deleted at start


def _remove_orphans(parent: Path) -> None:
    """Delete the roots that managers of servers no longer running left (killed, crashed, power loss).

    Only folders named ``recon-app-<pid>-*`` holding our marker file, whose pid is not a live process, are removed.
    """
    for root in parent.glob("recon-app-*-*"):
        pid = root.name.split("-")[2]
        if root.is_dir() and not root.is_symlink() and (root / MARKER).is_file() and pid.isdigit():
            if not _pid_alive(int(pid)):
                logger.info("removing the workspaces of a server that is gone (pid %s)", pid)
                shutil.rmtree(root, ignore_errors=True)


class WorkspaceManager:
    """Creates, tracks and deletes the sessions' workspaces under one private temporary root.

    Args:
        parent: where the root folder is made (default: the system temporary folder).
        ttl_s: a workspace without any event for this long is deleted by ``sweep`` (unless busy).
    """

    def __init__(self, parent: str | Path | None = None, ttl_s: float = 3600.0):
        if parent is not None:
            Path(parent).mkdir(parents=True, exist_ok=True)
            _remove_orphans(Path(parent))
        # The pid in the name lets a later start remove what a killed server (SIGKILL, power loss) left.
        self.root = Path(tempfile.mkdtemp(prefix=f"recon-app-{os.getpid()}-", dir=parent))
        (self.root / MARKER).write_text(f"{os.getpid()}\n")
        self.ttl_s = float(ttl_s)
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)  # notified whenever a run or export ends
        self._working = 0  # runs and exports going, in every workspace (released ones included)
        self._by_session: dict[str, Workspace] = {}
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None
        # Remove the root when the manager goes away or at interpreter exit, whichever comes first.
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.root), True)

    def create(self, session: str = "") -> Workspace:
        """A new empty workspace for ``session`` (replacing and deleting that session's previous one)."""
        # mkdtemp makes the folder 0o700 with a random suffix; the token makes the served URLs unguessable.
        root = Path(tempfile.mkdtemp(prefix=f"s-{secrets.token_hex(16)}-", dir=self.root))
        ws = Workspace(root=root, session=session)
        ws.clear_inputs()
        with self._lock:
            old = self._by_session.get(session) if session else None
            if session:
                self._by_session[session] = ws
        if old is not None and old is not ws:
            old.close()
        logger.info("workspace %s created for session %s", root.name, session or "-")
        return ws

    def ensure(self, ws: Workspace | None, session: str = "") -> Workspace:
        """``ws`` if it is still open, else a new workspace for ``session``."""
        if isinstance(ws, Workspace) and not ws.closed:
            ws.touch()
            return ws
        return self.create(session)

    def release(self, ws: Workspace | None) -> None:
        """Delete ``ws`` now, or, while a run or export works in it, cancel that and delete it when it stops."""
        if not isinstance(ws, Workspace):
            return
        with self._lock:
            if self._by_session.get(ws.session) is ws:
                del self._by_session[ws.session]
            if ws.busy:
                ws.doomed = True
                ws.cancel.set()
                logger.info("workspace %s: session ended during a run; cancelled, deleted when it stops", ws.root.name)
                return
        ws.close()
        logger.info("workspace %s deleted", ws.root.name)

    def release_session(self, session: str) -> None:
        """Delete the workspace of ``session`` (the tab was closed), cancelling its run if one is going."""
        with self._lock:
            ws = self._by_session.get(session)
        self.release(ws)

    @contextmanager
    def working(self, ws: Workspace, run: bool = False) -> Iterator[threading.Event]:
        """Mark ``ws`` busy for the block (a run or an export): the sweeper skips it, and a session that ends
        meanwhile has its folder deleted when the block ends.

        With ``run=True`` the block is the session's one reconstruction: a run still going in it is cancelled, and
        the event yielded (``ws.cancel``) is this run's own, set by Stop, the tab closing or the server stopping.
        """
        with self._lock:
            if run:
                ws.cancel.set()
                ws.cancel = threading.Event()
                if ws.doomed:
                    ws.cancel.set()
            ws.busy += 1
            self._working += 1
            cancel = ws.cancel
        try:
            yield cancel
        finally:
            with self._lock:
                ws.busy -= 1
                self._working -= 1
                self._idle.notify_all()
                ws.touched = time.time()
                gone = ws.doomed and ws.busy == 0
            if gone:
                ws.close()
                logger.info("workspace %s deleted after its run stopped", ws.root.name)

    def active(self) -> list[Workspace]:
        with self._lock:
            return [ws for ws in self._by_session.values() if not ws.closed]

    def sweep(self, now: float | None = None) -> int:
        """Delete the workspaces idle (no event, no run) for ``ttl_s``; returns how many were deleted."""
        now = time.time() if now is None else now
        with self._lock:
            idle = [ws for ws in self._by_session.values() if not ws.busy and now - ws.touched > self.ttl_s]
            for ws in idle:
                del self._by_session[ws.session]
        for ws in idle:
            ws.close()
            logger.info("workspace %s deleted after %.0f s without activity", ws.root.name, now - ws.touched)
        return len(idle)

    def start_sweeper(self, every_s: float | None = None, also: Callable[[], object] | None = None) -> None:
        """Run ``sweep`` (then ``also``) every ``every_s`` seconds (default: a quarter of the TTL, 1 to 60 s) in a
        daemon thread, until ``close_all``."""
        if self._sweeper is not None:
            return
        every = every_s if every_s is not None else min(60.0, max(1.0, self.ttl_s / 4))

        def loop():
            while not self._stop.wait(every):
                try:
                    self.sweep()
                    if also is not None:
                        also()
                except Exception:  # a sweep must never kill the sweeper
                    logger.exception("workspace sweep failed")

        self._sweeper = threading.Thread(target=loop, name="recon-app-sweeper", daemon=True)
        self._sweeper.start()

    def close_all(self, wait_s: float = 30.0) -> None:
        """Cancel every run, wait up to ``wait_s`` for the runs to stop, delete every workspace and the root (server
        stopping).

        The wait matters: a run's worker thread still inside torch when the interpreter exits aborts the process
        ("terminate called without an active exception", exit code -6) instead of a clean exit. Runs check their
        cancel event between iterations, so they stop within one step.
        """
        self._stop.set()
        with self._lock:
            sessions = list(self._by_session.values())
            self._by_session.clear()
            for ws in sessions:
                ws.cancel.set()
            deadline = time.monotonic() + wait_s
            while self._working and (left := deadline - time.monotonic()) > 0:
                self._idle.wait(left)
            if self._working:
                logger.warning("%d run(s) did not stop within %.0f s of the server stopping", self._working, wait_s)
        for ws in sessions:
            ws.close()
        self._finalizer()
