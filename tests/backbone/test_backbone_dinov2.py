"""DINOv2 hub layout: tiny checkpoints written in that layout load strictly; negative tests name the keys."""

import pytest
import torch

import backbone
from backbone.checkpoint import CheckpointError
from backbone.dinov2 import load_dinov2

TINY = {"embed_dim": 64, "depth": 2, "num_heads": 4}


def _hub_keys(depth: int, registers: bool, swiglu: bool) -> set[str]:
    """The hub state-dict key list, written out by hand from dinov2's module names."""
    keys = {"cls_token", "pos_embed", "mask_token", "patch_embed.proj.weight", "patch_embed.proj.bias"}
    keys |= {"norm.weight", "norm.bias"} | ({"register_tokens"} if registers else set())
    mlp = ("mlp.w12", "mlp.w3") if swiglu else ("mlp.fc1", "mlp.fc2")
    for i in range(depth):
        for name in ("norm1", "attn.qkv", "attn.proj", "norm2", *mlp):
            keys |= {f"blocks.{i}.{name}.weight", f"blocks.{i}.{name}.bias"}
        keys |= {f"blocks.{i}.ls1.gamma", f"blocks.{i}.ls2.gamma"}
    return keys


@pytest.mark.parametrize("name", ["dinov2_vits14", "dinov2_vitl14_reg", "dinov2_vitg14"])
def test_state_dict_is_the_hub_layout(name):
    model = backbone.create(name, **TINY)
    assert set(model.state_dict()) == _hub_keys(2, name.endswith("_reg"), "vitg" in name)
    assert model.state_dict()["mask_token"].shape == (1, 64)
    assert model.state_dict()["pos_embed"].shape == (1, 1 + 37 * 37, 64)


@pytest.mark.parametrize("name", ["dinov2_vitb14", "dinov2_vitb14_reg", "dinov2_vitg14"])
def test_tiny_hub_checkpoint_round_trip(tmp_path, name):
    # Head count is not visible in the shapes: the loader assumes head dim 64, so build the tiny model that way.
    model = backbone.create(name, embed_dim=128, depth=2, num_heads=2).eval()
    path = tmp_path / "dinov2_tiny.pth"
    torch.save(model.state_dict(), path)  # the hub files are plain state dicts
    loaded = backbone.load(path)
    assert loaded.config.num_register_tokens == model.config.num_register_tokens
    assert loaded.config.ffn_layer == model.config.ffn_layer
    assert loaded.config.interpolate_antialias == model.config.interpolate_antialias
    images = torch.rand(2, 3, 42, 56)  # resamples the 37x37 position embedding to 3x4
    with torch.no_grad():
        torch.testing.assert_close(loaded(images), model(images), rtol=0, atol=0)


def test_reg_variants_resample_like_the_hub():
    plain = backbone.create("dinov2_vits14", **TINY).config
    reg = backbone.create("dinov2_vits14_reg", **TINY).config
    assert (plain.interpolate_offset, plain.interpolate_antialias) == (0.1, False)
    assert (reg.interpolate_offset, reg.interpolate_antialias, reg.num_register_tokens) == (0.0, True, 4)


def test_missing_and_extra_keys_are_named():
    model = backbone.create("dinov2_vits14", embed_dim=128, depth=2, num_heads=2)
    state = dict(model.state_dict())
    del state["blocks.1.ls2.gamma"]
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): blocks\.1\.ls2\.gamma"):
        load_dinov2(state)
    state = {**model.state_dict(), "head.weight": torch.zeros(2)}
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): head\.weight"):
        load_dinov2(state)
