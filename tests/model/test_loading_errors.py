"""Loading refuses what it must: code payloads, missing / extra keys (named), bad aliases, unknown layouts."""

from __future__ import annotations

import argparse
import os

import pytest
import torch

import recon
from backbone.checkpoint import CheckpointError, safe_load

from .conftest import fixture_path


class _Payload:
    """Unpickling this would run a shell command (what a malicious checkpoint does)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def official():
    return safe_load(fixture_path("mast3r_tiny.pth"))


def _save(tmp_path, state, args, name="ckpt.pth"):
    path = tmp_path / name
    torch.save({"model": state, "args": args}, path)
    return path


def test_pickle_with_code_payload_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "args": argparse.Namespace(model="AsymmetricMASt3R()"), "x": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="refusing to load"):
        recon.load_model(path)
    assert not marker.exists()


def test_missing_decoder_key_is_named(tmp_path, official):
    state = dict(official["model"])
    del state["dec_blocks2.3.norm1.weight"]
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): dec_blocks2\.3\.norm1\.weight"):
        recon.load_model(_save(tmp_path, state, official["args"]))


def test_missing_encoder_key_is_named(tmp_path, official):
    state = dict(official["model"])
    del state["enc_blocks.1.attn.qkv.weight"]
    with pytest.raises(CheckpointError, match=r"enc_blocks\.1\.attn\.qkv\.weight"):
        recon.load_model(_save(tmp_path, state, official["args"]))


def test_extra_keys_are_named(tmp_path, official):
    state = dict(official["model"])
    state["dec_blocks.10.norm1.weight"] = torch.ones(48)  # a block the constructor string does not have
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): dec_blocks\.10\.norm1\.weight"):
        recon.load_model(_save(tmp_path, state, official["args"]))
    state = dict(official["model"])
    state["extra_module.weight"] = torch.ones(3)  # no rule maps it at all
    with pytest.raises(CheckpointError, match=r"extra_module\.weight"):
        recon.load_model(_save(tmp_path, state, official["args"]))


def test_alias_with_other_values_is_refused(tmp_path, official):
    state = dict(official["model"])
    key = "downstream_head2.dpt.scratch.layer_rn.1.weight"
    state[key] = state[key].clone() + 1
    with pytest.raises(CheckpointError, match=r"layer_rn\.1\.weight should be an alias of .*layer2_rn\.weight"):
        recon.load_model(_save(tmp_path, state, official["args"]))


def test_dense_alias_copy_is_accepted(tmp_path, official):
    state = dict(official["model"])
    key = "downstream_head1.dpt.scratch.layer_rn.0.weight"
    state[key] = state[key].clone()  # equal values in their own storage (a re-saved file)
    model = recon.load_model(_save(tmp_path, state, official["args"]))
    assert model.config.head.kind == "catmlp+dpt"


def test_unsupported_constructor_keyword(tmp_path, official):
    args = argparse.Namespace(model=official["args"].model[:-1] + ", norm_im2_in_dec=False)")
    with pytest.raises(CheckpointError, match="norm_im2_in_dec"):
        recon.load_model(_save(tmp_path, official["model"], args))
    args = argparse.Namespace(model=official["args"].model[:-1] + ", fancy_option=3)")
    with pytest.raises(CheckpointError, match="fancy_option"):
        recon.load_model(_save(tmp_path, official["model"], args))


def test_unknown_layout_and_missing_file(tmp_path):
    path = tmp_path / "weird.pth"
    torch.save({"state": {}}, path)
    with pytest.raises(CheckpointError, match=r"unknown checkpoint layout with top-level keys \['state'\]"):
        recon.load_model(path)
    with pytest.raises(CheckpointError, match="not found"):
        recon.load_model(tmp_path / "absent.pth")


def test_backbone_argument_only_for_dune_decoders():
    with pytest.raises(CheckpointError, match="holds its own encoder"):
        recon.load_model(fixture_path("mast3r_tiny.pth"), backbone="dune_vitb14_448")


def test_dune_decoder_on_wrong_width_backbone():
    import backbone as bb

    wrong = bb.create("dune_vits14", embed_dim=48, depth=1, num_heads=2, pos_embed_grid=4)
    with pytest.raises(CheckpointError, match="expects a 32-d encoder"):
        recon.load_model(fixture_path("dune_mast3r_tiny.pth"), backbone=wrong)


def test_image_size_not_a_multiple_of_the_patch():
    model = recon.load_model(fixture_path("mast3r_tiny.pth"))
    good = torch.rand(1, 3, 48, 64)
    with pytest.raises(ValueError, match=r"img2: image size 50x64 \(HxW\) is not a multiple of the patch size 16"):
        model(good, torch.rand(1, 3, 50, 64))
    with pytest.raises(ValueError, match="not a multiple of the patch size 16"):
        model.encode(torch.rand(2, 3, 64, 70))
    feat = torch.zeros(1, 12, 64)
    with pytest.raises(ValueError, match=r"feat2 has shape \(1, 12, 64\), expected \[1, 16, 64\]"):
        model.decode(feat, feat, (48, 64), (64, 64))


def test_dune_decoder_carrying_encoder_weights_is_refused(tmp_path):
    ckpt = safe_load(fixture_path("dune_mast3r_tiny.pth"))
    ckpt["model"] = {**ckpt["model"], "dune_backbone.cls_token": torch.zeros(1, 1, 32)}
    path = tmp_path / "dm.pth"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"carries 1 encoder weight\(s\) \(dune_backbone\.cls_token"):
        recon.load_model(path, backbone=fixture_path("dune_tiny.pth"))
