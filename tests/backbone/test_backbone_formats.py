"""backbone.load: format detection, recon round trip, refusals."""

import argparse

import pytest
import torch

import backbone
from backbone.checkpoint import CheckpointError, safe_load
from backbone.dune import DuneBackbone


@pytest.mark.parametrize(
    ("file", "fmt", "dim"),
    [
        ("mast3r_tiny.pth", "mast3r", 64),
        ("dune_tiny.pth", "dune", 32),
        ("mum_tiny_vitl16.pth", "mum", 64),
        ("mum_tiny_vitl16_decoderb.pth", "mum", 64),
    ],
)
def test_detects_and_loads_official_files(conformance_file, file, fmt, dim):
    path = conformance_file(file)
    assert backbone.detect_format(safe_load(path)) == fmt
    model = backbone.load(path)
    assert model.spec.embed_dim == dim and not model.training


def test_dune_mast3r_decoder_file_is_refused(conformance_file):
    with pytest.raises(CheckpointError, match="holds no encoder weights.*dune_tiny_14_56_encoder"):
        backbone.load(conformance_file("dune_mast3r_tiny.pth"))


def test_unknown_layout_is_refused():
    with pytest.raises(CheckpointError, match="unknown checkpoint layout.*foo"):
        backbone.load({"foo": torch.zeros(1)})


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "args": argparse.ArgumentParser}, path)  # a class that is not allow-listed
    with pytest.raises(CheckpointError, match="refusing to load"):
        backbone.load(path)


@pytest.mark.parametrize("name", ["croco_vitl16", "mum_vitl16", "dinov2_vits14_reg"])
def test_recon_format_round_trip(tmp_path, name):
    model = backbone.create(name, embed_dim=32, depth=1, num_heads=2).eval()
    path = backbone.save(model, tmp_path / "sub" / "model.pth")
    loaded = backbone.load(path)
    assert loaded.config == model.config
    images = torch.rand(1, 3, 2 * model.spec.patch_size, 3 * model.spec.patch_size)
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images), rtol=0, atol=0)
    assert list(tmp_path.glob("sub/*.tmp")) == []


def test_recon_round_trip_keeps_dune_projectors(tmp_path, conformance_file):
    model = backbone.load(conformance_file("dune_tiny.pth"))
    loaded = backbone.load(backbone.save(model, tmp_path / "dune.pth"))
    assert isinstance(loaded, DuneBackbone) and sorted(loaded.projectors) == sorted(model.projectors)
    images = torch.rand(1, 3, 28, 42)
    with torch.no_grad():
        a, b = model.forward_projectors(images), loaded.forward_projectors(images)
    for t in a:
        torch.testing.assert_close(a[t], b[t], rtol=0, atol=0)


def test_missing_file_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found: .*nothere.pth"):
        backbone.load(tmp_path / "nothere.pth")


def test_name_resolves_through_hub(monkeypatch, conformance_file):
    import backbone.hub as hub

    asked = []
    monkeypatch.setattr(hub, "get_weights", lambda name, **kw: asked.append(name) or conformance_file("dune_tiny.pth"))
    model = backbone.load("dune_vitb14_448")
    assert asked == ["dune_vitb14_448"] and isinstance(model, DuneBackbone)
