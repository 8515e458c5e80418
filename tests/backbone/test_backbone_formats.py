"""The checkpoint pipeline of ``backbone.formats``: ``detect_format`` / ``read`` over every layout, then ``load``."""

import argparse
import json
import os
from pathlib import Path

import pytest
import torch
from fixture_files import fixture_path
from safetensors.torch import save_file

import backbone
from backbone.checkpoint import CheckpointError, safe_load
from backbone.dune import DuneBackbone
from backbone.formats import FORMATS, detect_format, read

DUST3R_STR = "AsymmetricCroCo3DStereo(enc_depth=2, dec_depth=10, enc_embed_dim=64, head_type='dpt')"


def _tiny_state(name: str) -> dict[str, torch.Tensor]:
    return backbone.create(name, embed_dim=32, depth=1, num_heads=2).state_dict()


class _Payload:
    """Unpickling this would create a folder: what a malicious checkpoint's code would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


class TestDetectFormat:
    """Every layout of ``FORMATS`` from a file (golden fixtures or tiny files written here), and the refusals."""

    @pytest.mark.parametrize(
        ("file", "fmt"),
        [
            ("mast3r_tiny.pth", "mast3r"),
            ("dune_tiny.pth", "dune"),
            ("dune_mast3r_tiny.pth", "dune_mast3r"),
            ("mum_tiny_vitl16.pth", "mum"),
            ("mum_tiny_vitl16_decoderb.pth", "mum"),
        ],
    )
    def test_golden_official_files(self, file, fmt):
        obj, got = read(fixture_path(file))
        assert got == fmt and detect_format(obj) == fmt

    def test_dust3r_release_by_its_constructor_class(self):
        ckpt = safe_load(fixture_path("mast3r_tiny.pth"))
        assert detect_format({**ckpt, "args": argparse.Namespace(model=DUST3R_STR)}) == "dust3r"
        assert detect_format({**ckpt, "args": {"model": DUST3R_STR}}) == "dust3r"  # args as a plain dict

    def test_croco_encoder_without_constructor_string(self):
        state = safe_load(fixture_path("mast3r_tiny.pth"))["model"]
        assert detect_format(state) == "croco"
        assert detect_format({"model": {f"module.{k}": v for k, v in state.items()}}) == "croco"

    def test_raw_dune_state_and_dinov2_hub_state(self):
        assert detect_format(safe_load(fixture_path("dune_tiny.pth"))["model"]) == "dune"
        assert detect_format(_tiny_state("dinov2_vits14_reg")) == "dinov2"

    def test_training_wrapper_around_a_raw_state_dict(self):
        assert detect_format({"model": safe_load(fixture_path("mum_tiny_vitl16.pth")), "step": 3}) == "mum"

    def test_recon_backbone_checkpoint(self, tmp_path):
        path = backbone.save(backbone.create("mum_vitl16", embed_dim=32, depth=1, num_heads=2), tmp_path / "b.pth")
        assert read(path)[1] == "recon-backbone"

    def test_recon_model_pth_and_safetensors(self, tmp_path):
        state = {"decoder.w": torch.ones(2)}
        torch.save({"arch": "ReconModel", "config": {}, "format": "recon.model/1", "model": state}, tmp_path / "m.pth")
        assert read(tmp_path / "m.pth")[1] == "recon-model"
        meta = {"format": "recon.model/1", "arch": "ReconModel", "config": json.dumps({"image_size": 512})}
        save_file(state, str(tmp_path / "m.safetensors"), metadata=meta)
        obj, fmt = read(tmp_path / "m.safetensors")
        assert fmt == "recon-model" and obj["config"] == {"image_size": 512} and set(obj["model"]) == {"decoder.w"}

    def test_hugging_face_folder_and_file(self, tmp_path):
        state = safe_load(fixture_path("mast3r_tiny.pth"))["model"]
        save_file(
            {k: v.contiguous() for k, v in state.items() if "layer_rn" not in k}, str(tmp_path / "model.safetensors")
        )
        (tmp_path / "config.json").write_text(json.dumps({"enc_depth": 2, "head_type": "catmlp+dpt"}))
        for path in (tmp_path, tmp_path / "model.safetensors"):
            obj, fmt = read(path)
            assert fmt == "hf" and obj["config"]["enc_depth"] == 2 and "enc_blocks.0.norm1.weight" in obj["model"]

    def test_plain_safetensors_is_detected_by_content(self, tmp_path):
        save_file(dict(safe_load(fixture_path("mum_tiny_vitl16.pth"))), str(tmp_path / "mum.safetensors"))
        assert read(tmp_path / "mum.safetensors")[1] == "mum"

    def test_every_format_is_covered_above(self):
        # The layouts this class reads; a format added to FORMATS without a case here fails.
        covered = {"mast3r", "dust3r", "croco", "dune", "dune_mast3r", "mum", "dinov2", "recon-backbone"}
        assert covered | {"recon-model", "hf"} == set(FORMATS)

    @pytest.mark.parametrize(
        ("obj", "message"),
        [
            ([1, 2], "a checkpoint is a dict, got list"),
            ({"foo": torch.zeros(1)}, r"unknown checkpoint layout with top-level keys \['foo'\]"),
            (
                {"mast3r_model_str": "AsymmetricMASt3R()", "model": {}},
                r"lacks the top-level keys \['dune_backbone_name'\]",
            ),
            ({"model": [1], "args": argparse.Namespace(model="AsymmetricMASt3R()")}, "'model' must be a state dict"),
            ({"model": {}, "args": argparse.Namespace(model="EvilNet(depth=2)")}, "unsupported model class 'EvilNet'"),
            ({"model": {}, "args": argparse.Namespace(model="__import__('os').getpid()")}, "must be a call"),
            ({"arch": "x", "format": "recon-backbone", "model": {}}, r"lacks the top-level keys \['config'\]"),
        ],
        ids=["not-a-dict", "unknown", "decoder-without-backbone-name", "model-not-a-dict", "class", "code", "recon"],
    )
    def test_refusals_name_the_problem(self, obj, message):
        with pytest.raises(CheckpointError, match=message):
            detect_format(obj)

    def test_pickled_code_is_refused_before_detection(self, tmp_path):
        marker = tmp_path / "ran"
        torch.save({"model": {}, "args": _Payload(marker)}, tmp_path / "evil.pth")
        with pytest.raises(CheckpointError, match="refusing to load"):
            read(tmp_path / "evil.pth")
        assert not marker.exists()

    def test_folder_without_hugging_face_files(self, tmp_path):
        with pytest.raises(CheckpointError, match="folder without model.safetensors"):
            read(tmp_path)


@pytest.mark.parametrize(
    ("file", "dim"),
    [("mast3r_tiny.pth", 64), ("dune_tiny.pth", 32), ("mum_tiny_vitl16.pth", 64), ("mum_tiny_vitl16_decoderb.pth", 64)],
)
def test_loads_official_files(file, dim):
    model = backbone.load(fixture_path(file))
    assert model.spec.embed_dim == dim and not model.training


def test_dinov2_hub_state_dict_loads_every_tensor(tmp_path):
    state = _tiny_state("dinov2_vits14_reg")
    torch.save(state, tmp_path / "dinov2.pth")
    loaded = backbone.load(tmp_path / "dinov2.pth").state_dict()
    assert loaded.keys() == state.keys()
    for key, value in state.items():  # copied, not recomputed: equal bit for bit
        assert torch.equal(loaded[key], value), key


def test_dune_mast3r_decoder_file_is_refused():
    with pytest.raises(CheckpointError, match="holds no encoder weights.*dune_tiny_14_56_encoder"):
        backbone.load(fixture_path("dune_mast3r_tiny.pth"))


def test_model_checkpoint_is_not_a_backbone():
    with pytest.raises(CheckpointError, match="recon model checkpoint.*not a backbone: load it with recon.load_model"):
        backbone.load({"arch": "ReconModel", "config": {}, "format": "recon.model/1", "model": {}})


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


def test_recon_round_trip_keeps_dune_projectors(tmp_path):
    model = backbone.load(fixture_path("dune_tiny.pth"))
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


def test_name_resolves_through_hub(monkeypatch):
    import backbone.hub as hub

    asked = []
    monkeypatch.setattr(hub, "get_weights", lambda name, **kw: asked.append(name) or fixture_path("dune_tiny.pth"))
    model = backbone.load("dune_vitb14_448")
    assert asked == ["dune_vitb14_448"] and isinstance(model, DuneBackbone)
