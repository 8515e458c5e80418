"""``backbone.download``: plain, resumed, restarted and file:// downloads, integrity failures, offline errors; and
``hub.get_weights`` on top of it (mirrors, the cache folder)."""

from __future__ import annotations

import hashlib
import logging

import pytest

from backbone import download, hub


def _names(folder):
    """Visible entries of a folder (the ``.locks`` folder of the downloader is hidden on purpose)."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) if folder.exists() else []


class TestDownloadUrl:
    def test_plain_download_with_progress_bar(self, server, payload, tmp_path, capsys):
        server.files["w.pth"] = payload
        dest = tmp_path / "out" / "w.pth"
        assert download.download_url(f"{server.base_url}/w.pth", dest, progress=True) == dest
        assert dest.read_bytes() == payload
        assert server.requests == [("/w.pth", None)]
        err = capsys.readouterr().err
        assert "w.pth" in err and "100%" in err  # the tqdm bar went to stderr and finished
        assert _names(dest.parent) == ["w.pth"]  # no .part left behind

    def test_no_progress_bar_when_disabled(self, server, payload, tmp_path, capsys):
        server.files["w.pth"] = payload
        download.download_url(f"{server.base_url}/w.pth", tmp_path / "w.pth", progress=False)
        assert "100%" not in capsys.readouterr().err

    def test_interrupted_transfer_resumes_with_range(self, server, payload, tmp_path, caplog):
        server.files["w.pth"] = payload
        server.cut_after = [1_500_000]  # the first response breaks off after 1.5 MB
        dest = tmp_path / "w.pth"
        with caplog.at_level(logging.WARNING, logger="backbone.download"):
            download.download_url(f"{server.base_url}/w.pth", dest, progress=False)
        assert dest.read_bytes() == payload
        assert server.requests == [("/w.pth", None), ("/w.pth", "bytes=1500000-")]
        assert server.bytes_sent == len(payload)  # nothing was sent twice
        assert "resuming from byte 1500000" in caplog.text

    def test_existing_part_file_is_resumed(self, server, payload, tmp_path):
        server.files["w.pth"] = payload
        dest = tmp_path / "w.pth"
        download.part_path(dest).write_bytes(payload[:1234])
        download.download_url(f"{server.base_url}/w.pth", dest, progress=False)
        assert dest.read_bytes() == payload
        assert server.requests == [("/w.pth", "bytes=1234-")]
        assert server.bytes_sent == len(payload) - 1234
        assert not download.part_path(dest).exists()

    def test_server_ignoring_range_restarts_from_zero(self, server, payload, tmp_path):
        server.files["w.pth"] = payload
        server.ignore_range = True
        dest = tmp_path / "w.pth"
        # A .part whose bytes are NOT a prefix of the file: appending the 200 body to it would corrupt the result.
        download.part_path(dest).write_bytes(b"\xff" * 1000)
        download.download_url(f"{server.base_url}/w.pth", dest, progress=False)
        assert dest.read_bytes() == payload
        assert server.requests == [("/w.pth", "bytes=1000-")]

    def test_mismatched_content_range_restarts(self, server, payload, tmp_path):
        server.files["w.pth"] = payload
        server.whole_file_as_206 = True
        dest = tmp_path / "w.pth"
        download.part_path(dest).write_bytes(payload[:5000])
        download.download_url(f"{server.base_url}/w.pth", dest, progress=False)
        assert dest.read_bytes() == payload
        assert server.requests == [("/w.pth", "bytes=5000-"), ("/w.pth", None)]

    def test_unwritable_cache_is_not_called_a_network_problem(self, server, payload, tmp_path):
        server.files["w.pth"] = payload
        (tmp_path / "blocker").write_bytes(b"a file where the cache folder should be")
        with pytest.raises(download.WeightsError, match="cannot create .*RECON_HOME") as info:
            download.download_url(f"{server.base_url}/w.pth", tmp_path / "blocker" / "w.pth", progress=False)
        assert not isinstance(info.value, download.WeightsUnavailableError)
        assert server.requests == []

    def test_part_longer_than_remote_file_restarts(self, server, payload, tmp_path):
        server.files["w.pth"] = payload
        dest = tmp_path / "w.pth"
        download.part_path(dest).write_bytes(b"\x00" * (len(payload) + 10))
        download.download_url(f"{server.base_url}/w.pth", dest, progress=False)
        assert dest.read_bytes() == payload
        assert server.requests == [("/w.pth", f"bytes={len(payload) + 10}-"), ("/w.pth", None)]

    def test_complete_part_is_finished_without_body(self, server, payload, tmp_path):
        # The previous run received everything but died before the rename: the server answers 416 with the
        # total, which equals what we have.
        server.files["w.pth"] = payload
        dest = tmp_path / "w.pth"
        download.part_path(dest).write_bytes(payload)
        download.download_url(f"{server.base_url}/w.pth", dest, progress=False)
        assert dest.read_bytes() == payload
        assert server.bytes_sent == 0

    def test_known_size_and_complete_part_needs_no_request(self, server, payload, tmp_path):
        dest = tmp_path / "w.pth"
        download.part_path(dest).write_bytes(payload)
        download.download_url(f"{server.base_url}/w.pth", dest, size=len(payload), progress=False)
        assert dest.read_bytes() == payload
        assert server.requests == []

    def test_too_many_interruptions_keep_the_part_for_later(self, server, payload, tmp_path):
        server.files["w.pth"] = payload
        server.cut_after = [100_000, 100_000]
        dest = tmp_path / "w.pth"
        with pytest.raises(download.WeightsUnavailableError, match="run the command again to resume") as info:
            download.download_url(f"{server.base_url}/w.pth", dest, progress=False, attempts=2)
        assert not dest.exists()
        assert download.part_path(dest).read_bytes() == payload[:200_000]
        assert str(download.part_path(dest)) in str(info.value)
        download.download_url(f"{server.base_url}/w.pth", dest, progress=False)  # the next run resumes
        assert dest.read_bytes() == payload
        assert server.requests[-1] == ("/w.pth", "bytes=200000-")

    def test_file_url(self, payload, tmp_path):
        source = tmp_path / "src" / "w.pth"
        source.parent.mkdir()
        source.write_bytes(payload)
        dest = tmp_path / "cache" / "w.pth"
        download.download_url(source.as_uri(), dest, size=len(payload), progress=False)
        assert dest.read_bytes() == payload

    def test_file_url_resumes_part(self, payload, tmp_path):
        source = tmp_path / "w_src.pth"
        source.write_bytes(payload)
        dest = tmp_path / "w.pth"
        download.part_path(dest).write_bytes(payload[:777])
        download.download_url(source.as_uri(), dest, progress=False)
        assert dest.read_bytes() == payload

    def test_sha256_match_is_accepted(self, server, payload, tmp_path):
        server.files["w.pth"] = payload
        dest = tmp_path / "w.pth"
        digest = hashlib.sha256(payload).hexdigest()
        download.download_url(f"{server.base_url}/w.pth", dest, size=len(payload), sha256=digest, progress=False)
        assert dest.read_bytes() == payload

    def test_sha256_mismatch_leaves_no_file(self, server, payload, tmp_path):
        server.files["w.pth"] = payload
        dest = tmp_path / "w.pth"
        with pytest.raises(download.WeightsIntegrityError, match="expected 0000") as info:
            download.download_url(f"{server.base_url}/w.pth", dest, sha256="0" * 64, progress=False)
        assert hashlib.sha256(payload).hexdigest() in str(info.value)
        assert not dest.exists() and not download.part_path(dest).exists()

    def test_size_mismatch_leaves_no_file(self, server, payload, tmp_path):
        server.files["w.pth"] = payload
        dest = tmp_path / "w.pth"
        with pytest.raises(
            download.WeightsIntegrityError, match=f"has {len(payload)} bytes, expected {len(payload) + 1}"
        ):
            download.download_url(f"{server.base_url}/w.pth", dest, size=len(payload) + 1, progress=False)
        assert _names(tmp_path) == []

    def test_http_error_is_unavailable(self, server, tmp_path):
        with pytest.raises(download.WeightsUnavailableError, match="HTTP 404"):
            download.download_url(f"{server.base_url}/missing.pth", tmp_path / "m.pth", progress=False)
        assert not (tmp_path / "m.pth").exists()

    def test_unsupported_scheme(self, tmp_path):
        with pytest.raises(download.WeightsUnavailableError, match="unsupported URL scheme 'ftp'"):
            download.download_url("ftp://example.org/w.pth", tmp_path / "w.pth")


class TestGetWeights:
    def test_download_through_mirror_then_cached_without_network(
        self, server, payload, tiny_entry, monkeypatch, isolated_cache, closed_port
    ):
        tiny_entry()
        server.files["tiny.bin"] = payload
        monkeypatch.setenv(hub.MIRROR_ENV, server.base_url + "/")
        path = hub.get_weights("tiny", progress=False)
        assert path == isolated_cache / "tiny.bin"
        assert path.read_bytes() == payload
        assert hub.cached_path("tiny") == path
        # A second call must not touch the network: point the mirror at a dead port and ask again.
        monkeypatch.setenv(hub.MIRROR_ENV, f"http://127.0.0.1:{closed_port}")
        assert hub.get_weights("tiny") == path
        assert len(server.requests) == 1

    def test_mirror_may_be_a_plain_folder(self, payload, tiny_entry, monkeypatch, tmp_path):
        tiny_entry()
        (tmp_path / "mirror").mkdir()
        (tmp_path / "mirror" / "tiny.bin").write_bytes(payload)
        monkeypatch.setenv(hub.MIRROR_ENV, str(tmp_path / "mirror"))
        assert hub.get_weights("tiny", progress=False).read_bytes() == payload

    def test_official_url_used_without_mirror(self, server, payload, tiny_entry):
        tiny_entry(url=f"{server.base_url}/files/tiny.bin")
        server.files["files/tiny.bin"] = payload
        assert hub.get_weights("tiny", progress=False).read_bytes() == payload

    def test_offline_error_names_url_and_path(self, tiny_entry, closed_port, isolated_cache):
        entry = tiny_entry(url=f"http://127.0.0.1:{closed_port}/releases/tiny.bin")
        with pytest.raises(hub.WeightsUnavailableError) as info:
            hub.get_weights("tiny", progress=False)
        message = str(info.value)
        assert entry.url in message
        assert str(isolated_cache / "tiny.bin") in message
        assert "--checkpoint PATH" in message and hub.MIRROR_ENV in message
        assert "\n" not in message
        assert info.value.url == entry.url and info.value.path == isolated_cache / "tiny.bin"
        assert not (isolated_cache / "tiny.bin").exists()

    def test_offline_mirror_error_names_both_urls(self, tiny_entry, closed_port, monkeypatch):
        entry = tiny_entry()
        monkeypatch.setenv(hub.MIRROR_ENV, f"http://127.0.0.1:{closed_port}/m")
        with pytest.raises(hub.WeightsUnavailableError) as info:
            hub.get_weights("tiny", progress=False)
        assert f"http://127.0.0.1:{closed_port}/m/tiny.bin" in str(info.value)
        assert entry.url in str(info.value)

    def test_download_disabled(self, tiny_entry, isolated_cache):
        tiny_entry()
        with pytest.raises(hub.WeightsUnavailableError, match="not cached") as info:
            hub.get_weights("tiny", download=False)
        assert str(isolated_cache / "tiny.bin") in str(info.value)

    def test_file_placed_by_hand_is_used(self, tiny_entry, isolated_cache):
        tiny_entry()
        isolated_cache.mkdir(parents=True)
        (isolated_cache / "tiny.bin").write_bytes(b"by hand")
        assert hub.get_weights("tiny", download=False).read_bytes() == b"by hand"

    def test_cached_file_of_wrong_size_is_reported(self, tiny_entry, isolated_cache):
        tiny_entry(size=100)
        isolated_cache.mkdir(parents=True)
        (isolated_cache / "tiny.bin").write_bytes(b"x" * 50)
        assert hub.cached_path("tiny") is None
        with pytest.raises(hub.WeightsIntegrityError, match="--force"):
            hub.get_weights("tiny", download=False)

    def test_force_replaces_cached_file(self, server, payload, tiny_entry, isolated_cache, monkeypatch):
        tiny_entry()
        isolated_cache.mkdir(parents=True)
        (isolated_cache / "tiny.bin").write_bytes(b"old")
        server.files["tiny.bin"] = payload
        monkeypatch.setenv(hub.MIRROR_ENV, server.base_url)
        assert hub.get_weights("tiny", force=True, progress=False).read_bytes() == payload

    def test_unknown_name_lists_close_matches(self):
        with pytest.raises(hub.UnknownWeightsError, match="did you mean mast3r_vitl16_512"):
            hub.get_weights("mast3r_vitl16")
        with pytest.raises(hub.UnknownWeightsError, match="recon weights list"):
            hub.get_weights("zzzz")


class TestCacheFolder:
    def test_recon_home_wins(self, monkeypatch, tmp_path):
        monkeypatch.setenv("RECON_HOME", str(tmp_path / "r"))
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
        assert hub.weights_dir() == tmp_path / "r" / "weights"

    def test_xdg_cache_home(self, monkeypatch, tmp_path):
        monkeypatch.delenv("RECON_HOME")
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
        assert hub.weights_dir() == tmp_path / "x" / "recon" / "weights"

    def test_default_home_cache(self, monkeypatch, tmp_path):
        monkeypatch.delenv("RECON_HOME")
        monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
        monkeypatch.setenv("HOME", str(tmp_path))
        assert hub.weights_dir() == tmp_path / ".cache" / "recon" / "weights"
        assert hub.target_path("mast3r_vitl16_512") == hub.weights_dir() / hub.WEIGHTS["mast3r_vitl16_512"].filename
