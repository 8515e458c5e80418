"""``recon weights list|download|verify`` through ``cli.main``."""

from __future__ import annotations

import argparse
import os

import torch

import backbone
from backbone import hub
from cli import main
from cli import weights as weights_cmd


def test_kind_choices_match_the_hub():
    assert weights_cmd._KINDS == hub.KINDS


def test_list_shows_every_release_of_every_family(capsys):
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    for entry in hub.WEIGHTS.values():
        assert entry.name in out and (entry.url or "ships with recon") in out
    for family in ("mast3r", "dust3r", "dune", "dune_mast3r", "mum", "dinov2"):
        assert f" {family} " in out
    assert str(hub.weights_dir()) in out
    rows = [line for line in out.splitlines() if line.startswith(tuple(hub.WEIGHTS))]
    assert len(rows) == len(hub.WEIGHTS)
    # Nothing is cached in the isolated cache; only recon-tiny, which ships inside the package, is present.
    assert all((" yes " if row.startswith("recon-tiny ") else " no ") in row for row in rows)


def test_list_marks_cached_files_and_filters(capsys, isolated_cache):
    isolated_cache.mkdir(parents=True)
    (isolated_cache / hub.WEIGHTS["dune_vits14_336"].filename).write_bytes(b"x" * 2048)
    assert main(["weights", "list", "--family", "dune"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("dune_vits14_336"))
    assert " yes " in row and "2.0 KiB" in row
    assert "mast3r_vitl16_512" not in out and "dune_vitb14_448 " in out
    assert main(["weights", "list", "--kind", "decoder"]) == 0
    out = capsys.readouterr().out
    assert "dune_mast3r_vitb14_448" in out and "dune_vitb14_448 " not in out


def test_list_unknown_family(capsys):
    assert main(["weights", "list", "--family", "nope"]) == 2
    assert "unknown family 'nope'" in capsys.readouterr().err


def test_download_through_mirror(server, payload, monkeypatch, capsys, isolated_cache):
    filename = hub.WEIGHTS["mum_vitl16"].filename
    server.files[filename] = payload
    monkeypatch.setenv(hub.MIRROR_ENV, server.base_url)
    assert main(["weights", "download", "mum_vitl16", "--no-progress"]) == 0
    assert f"mum_vitl16: {isolated_cache / filename}" in capsys.readouterr().out
    assert (isolated_cache / filename).read_bytes() == payload


def test_download_offline_fails_with_one_actionable_line(monkeypatch, capsys, closed_port, isolated_cache):
    monkeypatch.setenv(hub.MIRROR_ENV, f"http://127.0.0.1:{closed_port}")
    assert main(["weights", "download", "dune_vitb14_448", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert hub.WEIGHTS["dune_vitb14_448"].url in err
    assert str(isolated_cache / "dune_vitbase14_448.pth") in err and "--checkpoint PATH" in err


def test_download_unknown_name_fails_before_downloading(server, monkeypatch, capsys):
    monkeypatch.setenv(hub.MIRROR_ENV, server.base_url)
    assert main(["weights", "download", "mum_vitl16", "dune_vitb14"]) == 2
    assert "unknown weights 'dune_vitb14'" in capsys.readouterr().err
    assert server.requests == []


def test_verify_nothing_cached_checks_the_embedded_model_only(capsys):
    assert main(["weights", "verify"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok   recon-tiny:") and "format recon-model" in out and len(out.splitlines()) == 1


def test_verify_cached_and_bad_files(capsys, tmp_path):
    good = hub.target_path("dinov2_vitl14_reg")
    good.parent.mkdir(parents=True)
    torch.save(backbone.create("dinov2_vits14_reg", embed_dim=32, depth=1, num_heads=2).state_dict(), good)
    assert main(["weights", "verify"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok   dinov2_vitl14_reg:") and "format dinov2" in out and "sha256 " in out

    marker = tmp_path / "ran"
    evil = tmp_path / "evil.pth"
    torch.save({"model": {}, "args": _Payload(str(marker))}, evil)
    assert main(["weights", "verify", "dinov2_vitl14_reg", str(evil)]) == 1
    captured = capsys.readouterr()
    assert "ok   dinov2_vitl14_reg" in captured.out
    assert f"FAIL {evil}: " in captured.err and "refusing to load" in captured.err
    assert not marker.exists()


def test_verify_unknown_name_and_not_cached(capsys):
    assert main(["weights", "verify", "nope_vitl"]) == 2
    assert "unknown weights" in capsys.readouterr().err
    assert main(["weights", "verify", "mum_vitl16"]) == 1
    assert "recon weights download mum_vitl16" in capsys.readouterr().err


class _Payload:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_register_adds_the_weights_parser():
    parser = argparse.ArgumentParser()
    weights_cmd.register(parser.add_subparsers())
    args = parser.parse_args(["weights", "verify"])
    assert args.names == [] and callable(args.func)


def test_list_shows_where_an_embedded_entry_ships(capsys, monkeypatch, tmp_path):
    from dataclasses import replace

    monkeypatch.setattr(hub, "PACKAGES_ROOT", tmp_path)
    entry = replace(hub.WEIGHTS["mum_vitl16"], name="tiny-embedded", url=None, filename="t.safetensors", aliases=(),
                    embedded="recon/assets/t.safetensors")  # fmt: skip
    monkeypatch.setitem(hub.WEIGHTS, entry.name, entry)
    assert main(["weights", "list", "--family", "mum"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("tiny-embedded"))
    assert f"(ships with recon: {tmp_path / 'recon' / 'assets' / 't.safetensors'})" in row and " no " in row
