"""``backbone.formats.verify`` (``recon weights verify``): the read a load does, plus size, hash and format."""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

import pytest
import torch
from fixture_files import fixture_path
from safetensors.torch import save_file

import backbone
from backbone import hub
from backbone.checkpoint import safe_load
from backbone.errors import CheckpointError
from backbone.formats import verify

EVIL_STR = "__import__('os').system('true')"  # parsed, never run: it is not a plain ``Name(...)`` call
DUST3R_STR = "AsymmetricCroCo3DStereo(enc_depth=2, dec_depth=10, enc_embed_dim=64, head_type='dpt')"


def golden(name: str):
    return safe_load(fixture_path(name))


def _mast3r(model_str: str | None = None) -> dict:
    ckpt = golden("mast3r_tiny.pth")
    return ckpt if model_str is None else {**ckpt, "args": argparse.Namespace(model=model_str)}


def _dune(image_size: int) -> dict:
    ckpt = golden("dune_tiny.pth")
    return {**ckpt, "args": argparse.Namespace(**{**vars(ckpt["args"]), "image_size": image_size})}


def _dinov2() -> dict:
    return backbone.create("dinov2_vits14_reg", embed_dim=32, depth=1, num_heads=2).state_dict()


# One tiny file per format of the table, and the entry it is checked against.
LAYOUTS = {
    "mast3r": ("mast3r_vitl16_512", lambda: _mast3r()),
    "dust3r": ("dust3r_vitl16_512_dpt", lambda: _mast3r(DUST3R_STR)),
    "dune": ("dune_vitb14_448", lambda: _dune(448)),
    "dune_mast3r": ("dune_mast3r_vitb14_448", lambda: golden("dune_mast3r_tiny.pth")),
    "mum": ("mum_vitl16", lambda: golden("mum_tiny_vitl16.pth")),
    "dinov2": ("dinov2_vitl14_reg", _dinov2),
}


def _place(name: str, obj) -> Path:
    path = hub.target_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("fmt", list(LAYOUTS))
def test_verify_cached_tiny_checkpoint_by_name(fmt):
    name, make = LAYOUTS[fmt]
    path = _place(name, make())
    result = verify(name)
    assert result.path == path and result.name == name and result.format == fmt
    assert result.size == path.stat().st_size
    assert result.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("fmt", list(LAYOUTS))
def test_format_of_a_file_outside_the_table_is_detected(fmt, tmp_path):
    path = tmp_path / "mine.pth"
    torch.save(LAYOUTS[fmt][1](), path)
    result = verify(path)
    assert result.name is None and result.format == fmt


def test_official_file_name_outside_the_cache_uses_its_entry(tmp_path):
    # A --checkpoint file under an official name is checked against that release's format.
    path = tmp_path / hub.WEIGHTS["mast3r_vitl16_512"].filename
    torch.save(_mast3r(DUST3R_STR), path)
    with pytest.raises(hub.WeightsIntegrityError, match="is a dust3r checkpoint .* mast3r_vitl16_512 is a mast3r"):
        verify(path)


@pytest.mark.parametrize(
    ("name", "make", "message"),
    [
        ("mast3r_vitl16_512", lambda: _mast3r(EVIL_STR), "must be a call"),
        ("mast3r_vitl16_512", lambda: {"args": _mast3r()["args"]}, r"lacks the top-level keys \['model'\]"),
        ("dune_mast3r_vits14_448", lambda: {"model": {}, "mast3r_model_str": "x"}, r"\['dune_backbone_name'\]"),
        ("mum_vitl16", _dinov2, "is a dinov2 checkpoint"),
        ("dinov2_vitl14_reg", lambda: {"norm.weight": torch.ones(2)}, "unknown checkpoint layout"),
        (
            "dust3r_vitl16_224_linear",
            lambda: _mast3r(DUST3R_STR.replace("(", "(img_size=(512, 512), ", 1)),
            "declaring image size 512, but dust3r_vitl16_224_linear is a dust3r checkpoint of 224 px",
        ),
        ("dune_vitb14_336", lambda: _dune(448), "declaring image size 448, but dune_vitb14_336"),
    ],
)
def test_wrong_layout_is_named(name, make, message):
    _place(name, make())
    with pytest.raises(hub.WeightsIntegrityError, match=message):
        verify(name)


def test_unknown_layout_outside_the_table(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"weights": _dinov2()}, path)
    with pytest.raises(hub.WeightsIntegrityError, match=r"unknown checkpoint layout with top-level keys \['weights'\]"):
        verify(path)


def test_safetensors_state_dict(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file(dict(golden("mum_tiny_vitl16.pth")), str(path))
    assert verify(path).format == "mum"


class _Payload:
    """Pickles to a call of ``os.mkdir(marker)``: what an attacker's checkpoint would do on a plain torch.load."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pickle_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload_ran"
    path = _place("mast3r_vitl16_512", {"model": {}, "args": _Payload(str(marker))})
    with pytest.raises(hub.WeightsIntegrityError, match="refusing to load") as info:
        verify("mast3r_vitl16_512")
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_known_hash_mismatch(tiny_entry):
    tiny_entry(sha256="ab" * 32)
    path = _place("tiny", golden("mum_tiny_vitl16.pth"))
    with pytest.raises(hub.WeightsIntegrityError, match="does not have the sha256 of tiny") as info:
        verify("tiny")
    assert str(path) in str(info.value)


def test_known_hash_and_size_match(tiny_entry):
    path = hub.target_path("mum_vitl16").with_name("tiny.bin")
    path.parent.mkdir(parents=True)
    torch.save(golden("mum_tiny_vitl16.pth"), path)
    data = path.read_bytes()
    tiny_entry(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    result = verify("tiny")
    assert result.format == "mum" and result.sha256 == hashlib.sha256(data).hexdigest()


def test_not_cached_is_never_downloaded(monkeypatch):
    monkeypatch.setattr(hub, "download_url", lambda *a, **k: pytest.fail("verify must not download"))
    with pytest.raises(hub.WeightsUnavailableError, match="recon weights download mum_vitl16"):
        verify("mum_vitl16")


def test_missing_path_and_unknown_name(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        verify(tmp_path / "nothing.pth")
    with pytest.raises(hub.UnknownWeightsError):
        verify("nothing")
