"""``hub.resolve``: the one rule that tells a path from a weights name, and embedded entries (no URL, no download)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

import pytest

from backbone import hub
from backbone.errors import CheckpointError


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("mast3r_vitl16_512", False),
        ("dune_vitbase_14_448_paper_encoder", False),
        ("weights.v2", False),  # a dot alone does not make a path
        ("ckpt.pth", True),
        ("model.safetensors", True),
        ("run/last.pt", True),
        ("~/w.bin", True),
        (f"folder{os.sep}model", True),
    ],
)
def test_is_path(text, path):
    assert hub.is_path(text) is path


def test_path_like_is_always_a_path(tmp_path):
    assert hub.is_path(tmp_path / "mast3r_vitl16_512")


def test_existing_file_or_folder_is_returned_as_is(tmp_path, monkeypatch):
    (tmp_path / "mast3r_vitl16_512").write_bytes(b"x")  # a file named like a release, in the working folder
    monkeypatch.chdir(tmp_path)
    assert hub.resolve("mast3r_vitl16_512") == Path("mast3r_vitl16_512")
    assert hub.resolve(tmp_path) == tmp_path


@pytest.mark.parametrize("text", ["absent.pth", "some/where/model", "~/absent_recon_weights.safetensors"])
def test_missing_path_is_named_and_never_looked_up(text, monkeypatch):
    monkeypatch.setattr(hub, "get_weights", lambda *a, **k: pytest.fail("a path must not be looked up as a name"))
    with pytest.raises(CheckpointError, match="checkpoint not found: "):
        hub.resolve(text)


def test_name_goes_to_the_table(tiny_entry, isolated_cache):
    tiny_entry()
    isolated_cache.mkdir(parents=True)
    (isolated_cache / "tiny.bin").write_bytes(b"cached")
    assert hub.resolve("tiny") == isolated_cache / "tiny.bin"
    with pytest.raises(hub.UnknownWeightsError, match="did you mean"):
        hub.resolve("tinny")


def test_name_not_cached_without_download(tiny_entry, isolated_cache):
    tiny_entry()
    with pytest.raises(hub.WeightsUnavailableError, match="recon weights download tiny") as info:
        hub.resolve("tiny", download=False)
    assert info.value.path == isolated_cache / "tiny.bin"


class TestEmbeddedEntry:
    """An entry shipped inside the packages: a path relative to ``PACKAGES_ROOT``, never downloaded."""

    @pytest.fixture
    def embedded(self, tmp_path, monkeypatch):
        monkeypatch.setattr(hub, "PACKAGES_ROOT", tmp_path / "site")
        data = b"tiny model bytes"
        entry = replace(
            hub.WEIGHTS["mum_vitl16"], name="tiny-embedded", url=None, filename="tiny.safetensors", aliases=(),
            embedded="recon/assets/tiny.safetensors", size=len(data), sha256=hashlib.sha256(data).hexdigest(),
        )  # fmt: skip
        monkeypatch.setitem(hub.WEIGHTS, entry.name, entry)
        return tmp_path / "site" / "recon" / "assets" / "tiny.safetensors", data

    def test_resolves_inside_the_package_without_network(self, embedded, monkeypatch):
        path, data = embedded
        path.parent.mkdir(parents=True)
        path.write_bytes(data)
        monkeypatch.setattr(hub, "download_url", lambda *a, **k: pytest.fail("an embedded entry is never downloaded"))
        assert hub.resolve("tiny-embedded") == path
        assert hub.target_path("tiny-embedded") == path and hub.cached_path("tiny-embedded") == path

    def test_missing_embedded_file_says_reinstall(self, embedded):
        path, _ = embedded
        with pytest.raises(hub.WeightsUnavailableError, match="ships with recon .* missing: reinstall") as info:
            hub.resolve("tiny-embedded")
        assert info.value.path == path and hub.cached_path("tiny-embedded") is None

    def test_altered_embedded_file_is_refused(self, embedded):
        path, data = embedded
        path.parent.mkdir(parents=True)
        path.write_bytes(data.upper())  # same size, other bytes
        with pytest.raises(hub.WeightsIntegrityError, match="does not have the sha256 of tiny-embedded"):
            hub.resolve("tiny-embedded")

    def test_table_entry_with_embedded_path_loads(self, tmp_path):
        import json

        raw = json.loads(hub.TABLE_FILE.read_text())
        item = {k: v for k, v in raw["weights"][0].items() if k not in ("url", "aliases")}
        raw["weights"] = [{**item, "name": "recon-mini", "embedded": "recon/assets/mini.safetensors"}]
        (tmp_path / "w.json").write_text(json.dumps(raw))
        entry = hub.load_table(tmp_path / "w.json")["recon-mini"]
        assert entry.url is None and entry.filename == "mini.safetensors"
