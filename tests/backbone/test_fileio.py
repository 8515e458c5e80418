"""``backbone.fileio``: the one atomic write (temporary beside the target, fsync, replace; nothing left behind on
failure or SIGTERM) and the one file hash."""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading

import pytest

from backbone import fileio

# A child process loads the module alone (standard library only): importing the ``backbone`` package would load
# torch first and take seconds.
_IMPORT = (
    f"import importlib.util as u; spec = u.spec_from_file_location('fileio', {fileio.__file__!r}); "
    "fileio = u.module_from_spec(spec); spec.loader.exec_module(fileio)"
)


def _names(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid  # exited and reaped: no process has this id (barring an immediate reuse)


def test_the_temporary_is_beside_the_target_and_named_with_the_pid(tmp_path):
    target = tmp_path / "scene.glb"
    with fileio.atomic_file(target) as tmp:
        assert tmp.parent == tmp_path  # same folder: the rename cannot cross file systems
        assert re.fullmatch(rf"\.scene\.glb\.{os.getpid()}\.[a-z0-9_]{{8}}\.tmp", tmp.name), tmp.name
        tmp.write_bytes(b"new")
        assert not target.exists()  # the destination appears only at the end
    assert target.read_bytes() == b"new"
    assert _names(tmp_path) == ["scene.glb"]


def test_an_existing_target_is_replaced_whole_with_the_mode_of_a_plain_open(tmp_path):
    target = tmp_path / "model.pth"
    target.write_bytes(b"old")
    plain = tmp_path / "plain"
    plain.write_bytes(b"")
    with fileio.atomic_file(target) as tmp:
        tmp.write_bytes(b"new content")
        assert target.read_bytes() == b"old"  # readers still see the old file during the write
    assert target.read_bytes() == b"new content"
    assert target.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777  # not tempfile's 0600
    assert _names(tmp_path) == ["model.pth", "plain"]


@pytest.mark.parametrize("error", [ValueError, KeyboardInterrupt])
def test_a_failure_leaves_the_target_untouched_and_no_temporary(tmp_path, error):
    target = tmp_path / "cameras.json"
    target.write_bytes(b"old")
    with pytest.raises(error):
        with fileio.atomic_file(target) as tmp:
            tmp.write_bytes(b"half")
            raise error
    assert target.read_bytes() == b"old"
    assert _names(tmp_path) == ["cameras.json"]


def test_the_temporary_is_flushed_to_disk_before_the_replace(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    with fileio.atomic_file(tmp_path / "a.bin") as tmp:
        tmp.write_bytes(b"x")
    assert synced == [str(tmp)]  # the temporary, while it still had its own name
    with fileio.atomic_file(tmp_path / "cache.bin", fsync=False) as tmp:
        tmp.write_bytes(b"x")
    assert len(synced) == 1  # a cache write is not flushed


def test_sigterm_during_the_write_removes_the_temporary(tmp_path):
    """A real SIGTERM while the bytes are being written: the temporary goes, the old target stays."""
    target = tmp_path / "checkpoint.pth"
    target.write_bytes(b"previous checkpoint")
    script = textwrap.dedent(
        f"""
        import time
        {_IMPORT}
        with fileio.atomic_file({str(target)!r}) as tmp:
            tmp.write_bytes(b"partial")
            print("writing", flush=True)
            time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert _names(tmp_path) == ["checkpoint.pth"]
    assert target.read_bytes() == b"previous checkpoint"


def test_a_programs_own_sigterm_handler_is_left_in_place(tmp_path):
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # pytest's main thread, default action
    with fileio.atomic_file(tmp_path / "a") as tmp:
        converting = signal.getsignal(signal.SIGTERM)
        tmp.write_bytes(b"x")
    assert converting not in (signal.SIG_DFL, signal.SIG_IGN)  # a kill now unwinds through ``finally``
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored

    def own(signum, frame):  # e.g. the app server's graceful stop
        pass

    previous = signal.signal(signal.SIGTERM, own)
    try:
        with fileio.atomic_file(tmp_path / "b") as tmp:
            assert signal.getsignal(signal.SIGTERM) is own
            tmp.write_bytes(b"y")
        assert signal.getsignal(signal.SIGTERM) is own
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_leftovers_of_dead_writers_are_removed_and_the_folder_is_listed_once(tmp_path, monkeypatch):
    dead = _dead_pid()
    leftovers = [tmp_path / f".a.bin.{dead}.k3j5_x9q.tmp", tmp_path / f".other.json.{dead}.abcdefgh.tmp"]
    kept = [
        tmp_path / f".a.bin.{os.getppid()}.zzzzzzzz.tmp",  # a live writer's (pytest's parent): kept
        tmp_path / ".a.bin.backup.tmp",  # not this shape: kept
        tmp_path / f"a.bin.{dead}.abcdefgh.tmp",  # not hidden: not ours
    ]
    for p in leftovers + kept:
        p.write_bytes(b"x")
    listings = []
    real_scandir = os.scandir
    monkeypatch.setattr(os, "scandir", lambda path: listings.append(path) or real_scandir(path))
    for i in range(3):
        fileio.write_bytes_atomic(tmp_path / "a.bin", bytes([i]))
    assert not any(p.exists() for p in leftovers)
    assert all(p.exists() for p in kept)
    assert listings == [tmp_path]  # once per folder, not once per write (a cache folder holds thousands)


def test_concurrent_writers_of_one_target_never_tear_it(tmp_path):
    """Threads here, processes below: every temporary has its own name, so the last replace wins whole."""
    target = tmp_path / "pair.safetensors"
    payloads = [bytes([k]) * 200_000 for k in range(6)]

    def write(data):
        for _ in range(10):
            fileio.write_bytes_atomic(target, data)

    threads = [threading.Thread(target=write, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert target.read_bytes() in payloads
    assert _names(tmp_path) == ["pair.safetensors"]


def test_two_processes_writing_one_target_never_tear_it(tmp_path):
    target = tmp_path / "pair_00000_00001.safetensors"
    script = textwrap.dedent(
        f"""
        import sys
        {_IMPORT}
        data = bytes([int(sys.argv[1])]) * 1_000_000
        for _ in range(30):
            fileio.write_bytes_atomic({str(target)!r}, data)
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(k)]) for k in (1, 2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    data = target.read_bytes()
    assert data in (b"\x01" * 1_000_000, b"\x02" * 1_000_000)
    assert _names(tmp_path) == [target.name]


def test_write_helpers_create_parents_unless_told_not_to(tmp_path):
    path = fileio.write_json_atomic(tmp_path / "a" / "b" / "c.json", {"x": [1, 2]}, indent=None)
    assert path.read_text() == '{"x": [1, 2]}\n'
    assert fileio.write_text_atomic(tmp_path / "t" / "x.md", "é").read_bytes() == "é".encode()
    with pytest.raises(FileNotFoundError):
        fileio.write_bytes_atomic(tmp_path / "missing" / "x.bin", b"", make_parents=False)
    assert not (tmp_path / "missing").exists()


def test_move_into_place_replaces_files_and_moves_folders_and_links(tmp_path):
    src, dst = tmp_path / "w.part", tmp_path / "w.bin"
    src.write_bytes(b"finished")
    dst.write_bytes(b"older")
    assert fileio.move_into_place(src, dst) == dst
    assert dst.read_bytes() == b"finished" and not src.exists()
    (tmp_path / "stage").mkdir()
    (tmp_path / "stage" / "x.png").write_bytes(b"png")
    fileio.move_into_place(tmp_path / "stage", tmp_path / "images", fsync=False)
    assert (tmp_path / "images" / "x.png").read_bytes() == b"png"
    (tmp_path / "link").symlink_to(dst)
    fileio.move_into_place(tmp_path / "link", tmp_path / "moved")
    assert (tmp_path / "moved").is_symlink() and os.readlink(tmp_path / "moved") == str(dst)


@pytest.mark.parametrize("size", [0, 1, (1 << 20) - 1, (1 << 20) + 7, 3 << 20])
def test_sha256_file_matches_hashlib_across_chunk_boundaries(tmp_path, size):
    data = os.urandom(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    assert fileio.sha256_file(path) == hashlib.sha256(data).hexdigest()
