"""Per-session workspaces: one private temporary folder per browser session, deleted when the session ends.

Everything a user brings or gets (uploads, the cached reconstruction, exported files) lives in the session's
``Workspace``; nothing is shared between sessions. A ``WorkspaceManager`` creates them under one root made with
``tempfile`` (private, ``0o700``), tracks them by Gradio session id, deletes one when its session ends (tab
closed) or expires (``gr.State`` time-to-live), and removes the whole root when the app object is garbage
collected or the interpreter exits.
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


def _remove_orphans(parent: Path) -> None:
    """Delete the roots of managers whose server process no longer exists."""
    for root in parent.glob("recon-app-*-*"):
        pid = root.name.split("-")[2]
        if root.is_dir() and pid.isdigit() and not _pid_alive(int(pid)):
            logger.info("removing %s left by a server that is gone (pid %s)", root, pid)
            shutil.rmtree(root, ignore_errors=True)


class WorkspaceManager:
    """Creates, tracks and deletes the sessions' workspaces under one private temporary root.

    Args:
        parent: where the root folder is made (default: the system temporary folder).
    """

    def __init__(self, parent: str | Path | None = None):
        if parent is not None:
            Path(parent).mkdir(parents=True, exist_ok=True)
            _remove_orphans(Path(parent))
        # The pid in the name lets a later start remove what a killed server (SIGKILL, power loss) left.
        self.root = Path(tempfile.mkdtemp(prefix=f"recon-app-{os.getpid()}-", dir=parent))
        self._lock = threading.Lock()
        self._by_session: dict[str, Workspace] = {}
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
        """Delete ``ws`` (``gr.State``'s delete callback: the session expired)."""
        if not isinstance(ws, Workspace):
            return
        with self._lock:
            if self._by_session.get(ws.session) is ws:
                del self._by_session[ws.session]
        ws.close()
        logger.info("workspace %s deleted", ws.root.name)

    def release_session(self, session: str) -> None:
        """Delete the workspace of ``session`` (the tab was closed)."""
        with self._lock:
            ws = self._by_session.pop(session, None)
        if ws is not None:
            ws.close()
            logger.info("workspace %s of closed session deleted", ws.root.name)

    def active(self) -> list[Workspace]:
        with self._lock:
            return [ws for ws in self._by_session.values() if not ws.closed]

    def close_all(self) -> None:
        """Delete every workspace and the root."""
        with self._lock:
            sessions = list(self._by_session.values())
            self._by_session.clear()
        for ws in sessions:
            ws.close()
        self._finalizer()
