"""The upload ledger: only files written by the upload route are ever deleted, once nobody needs them."""

from __future__ import annotations

import time

from app.guard import UploadLedger, delete_claimed


def _file(folder, name: str, data: bytes = b"abc"):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(data)
    return path


def test_claiming_an_unrecorded_path_deletes_nothing(tmp_path):
    ledger = UploadLedger()
    other = _file(tmp_path / "h1", "someone_elses.jpg")  # named by a request, never uploaded by the route
    delete_claimed(ledger.claim([str(other)]))
    assert other.is_file()


def test_a_file_uploaded_twice_goes_with_its_last_claim(tmp_path):
    ledger = UploadLedger()
    shared = _file(tmp_path / "hash", "same_content.jpg")  # Gradio names uploads by content hash
    ledger.add([str(shared)], "10.0.0.1")
    ledger.add([str(shared)], "10.0.0.2")
    assert ledger.pending() == (2, 6) and ledger.pending("10.0.0.1") == (1, 3)
    delete_claimed(ledger.claim([shared]))
    assert shared.is_file()  # the other session has not ingested it yet
    delete_claimed(ledger.claim([shared]))
    assert not shared.exists() and not shared.parent.exists() and ledger.pending() == (0, 0)
    delete_claimed(ledger.claim([shared]))  # a third claim is a no-op


def test_unclaimed_uploads_expire_and_reservations_count(tmp_path):
    ledger = UploadLedger()
    old, new = _file(tmp_path / "a", "old.jpg"), _file(tmp_path / "b", "new.jpg")
    ledger.add([str(old)], "c")
    ledger.add([str(new)], "c")
    ledger._entries[str(old)][0].time -= 100
    assert ledger.sweep(50) == 1 and not old.exists() and new.is_file()
    ledger.reserve("c", 1000)
    assert ledger.pending("c") == (1, 3 + 1000)
    ledger.unreserve("c", 1000)
    assert ledger.pending("c") == (1, 3)
    assert ledger.clear() == 1 and not new.exists()
    assert ledger.sweep(0, now=time.time()) == 0
