"""MuM autoencoder: official masked forward reproduced, official key layouts, masking, patch ordering."""

import json

import pytest
import torch
from fixture_files import fixture_path
from safetensors.torch import load_file

from backbone.checkpoint import CheckpointError, safe_load
from training.mum.config import MuMConfig
from training.mum.decoder import (
    MuMAutoEncoder,
    encoder_official_state_dict,
    load_official,
    normalized_targets,
    official_state_dict,
    patchify,
    random_masking,
    unpatchify,
)
from training.mum.model import build_autoencoder

# Float32 CPU reimplementation vs the official float32 outputs: the conformance README's suggested tolerance
# (its float64 study: pred differs by at most 3.1e-6, loss by 5.4e-8).
RTOL, ATOL = 1e-4, 1e-4
CASES = ["b1s3_h64w64", "b1s2_h48w80"]


@pytest.fixture(scope="module")
def io():
    return load_file(fixture_path("mum_tiny_io.safetensors"))


@pytest.mark.parametrize("case", CASES)
def test_masked_forward_reproduces_the_official_fixture(case, io, fixture_file):
    model = load_official(fixture_file("mum_tiny_vitl16_decoderb.pth")).eval()
    with torch.no_grad():
        out = model.forward_normalized(io[f"fwd.{case}.imgs"], 0.75, noise=io[f"fwd.{case}.noise"])
    torch.testing.assert_close(out["pred"], io[f"fwd.{case}.pred"], rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(out["loss"].reshape(1), io[f"fwd.{case}.loss"], rtol=RTOL, atol=ATOL)
    assert torch.equal(out["mask"], io[f"fwd.{case}.mask"])
    assert torch.equal(out["ids_restore"], io[f"fwd.{case}.ids_restore"])


@pytest.mark.parametrize("case", CASES)
def test_masking_from_recorded_noise(case, io):
    noise = io[f"fwd.{case}.noise"]
    ids_keep, ids_restore, mask = random_masking(*noise.shape, 0.75, noise=noise)
    assert torch.equal(ids_keep, io[f"fwd.{case}.ids_keep"])
    assert torch.equal(ids_restore, io[f"fwd.{case}.ids_restore"])
    assert torch.equal(mask, io[f"fwd.{case}.mask"])


def test_masking_is_independent_per_view_with_equal_counts():
    ids_keep, _, mask = random_masking(64, 49, 0.75, generator=torch.Generator().manual_seed(0))
    assert ids_keep.shape == (64, 12)  # int(49 * 0.25)
    assert (mask.sum(1) == 37).all()
    assert len({tuple(r.tolist()) for r in mask}) > 60  # positions differ between views
    with pytest.raises(ValueError, match="keeps no patch"):
        random_masking(2, 3, 0.75)


def test_official_global_block_zeroes_the_cls_query_and_key(io, fixture_file):
    """Changing the cls token only affects predictions through the frame blocks, never through global q/k."""
    model = load_official(fixture_file("mum_tiny_vitl16_decoderb.pth")).eval()
    case = "b1s3_h64w64"
    imgs, noise = io[f"fwd.{case}.imgs"], io[f"fwd.{case}.noise"]
    # Permuting the views permutes the predictions: no view embedding, and the zeroed cls keeps it that way.
    perm = torch.tensor([2, 0, 1])
    with torch.no_grad():
        a = model.forward_normalized(imgs, 0.75, noise=noise)["pred"]
        b = model.forward_normalized(imgs[:, perm], 0.75, noise=noise[perm])["pred"]
    torch.testing.assert_close(b, a[perm], rtol=1e-5, atol=1e-5)


def test_tiny_file_round_trips_in_the_official_layout(fixture_file):
    path = fixture_file("mum_tiny_vitl16_decoderb.pth")
    state = safe_load(path)
    model = load_official(path)
    ours = official_state_dict(model)
    assert list(ours) == list(state)  # same keys, same order
    for key in state:
        assert torch.equal(ours[key], state[key]), key


def test_encoder_only_layout_matches_the_tiny_encoder_file(fixture_file):
    model = load_official(fixture_file("mum_tiny_vitl16_decoderb.pth"))
    enc_file = safe_load(fixture_file("mum_tiny_vitl16.pth"))
    ours = encoder_official_state_dict(model)
    assert ours.keys() == enc_file.keys()
    for key in enc_file:  # the two official files share the encoder weights; periods are bf16 in both
        assert ours[key].dtype == enc_file[key].dtype, key
        assert torch.equal(ours[key], enc_file[key]), key


@pytest.mark.parametrize(
    ("manifest", "encoder_only"), [("MuM_ViTLarge_BaseDecoder.json", False), ("MuM_ViTLarge.json", True)]
)
def test_full_size_layout_equals_the_release_manifest(manifest, encoder_only, fixture_file):
    expected = json.loads(fixture_file(f"manifests/{manifest}").read_text())
    model = build_autoencoder(MuMConfig(), device="meta")  # the default config is the released ViT-L + decoder
    state = encoder_official_state_dict(model) if encoder_only else official_state_dict(model)
    assert list(state) == list(expected)
    for key, (shape, dtype) in expected.items():
        assert list(state[key].shape) == shape, key
        assert str(state[key].dtype).removeprefix("torch.") == dtype, key


def test_load_official_names_missing_and_unexpected_keys(fixture_file):
    state = dict(safe_load(fixture_file("mum_tiny_vitl16_decoderb.pth")))
    state.pop("decoder_global_blocks.1.mlp.fc2.bias")
    state["decoder_extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"decoder_global_blocks\.1\.mlp\.fc2\.bias.*decoder_extra\.weight"):
        load_official(state)
    with pytest.raises(CheckpointError, match="encoder-only"):
        load_official(safe_load(fixture_file("mum_tiny_vitl16.pth")))


def test_patchify_order_and_non_square_round_trip():
    imgs = torch.arange(2 * 3 * 32 * 48, dtype=torch.float32).reshape(2, 3, 32, 48)
    patches = patchify(imgs, 16)
    assert patches.shape == (2, 6, 768)
    # patch (row 0, col 1), pixel (0, 1), channels fastest: values of imgs[0, :, 0, 17]
    assert torch.equal(patches[0, 1, 3:6], imgs[0, :, 0, 17])
    assert torch.equal(unpatchify(patches, 16, (2, 3)), imgs)
    t = normalized_targets(imgs, 16)
    torch.testing.assert_close(t.mean(-1), torch.zeros(2, 6), atol=1e-5, rtol=0)
    torch.testing.assert_close(t.std(-1), torch.ones(2, 6), atol=1e-4, rtol=0)


def test_autoencoder_refuses_a_non_mum_encoder():
    import backbone

    with torch.device("meta"):
        croco = backbone.create("croco_vitl16", embed_dim=32, depth=1, num_heads=2)
    with pytest.raises(ValueError, match="MuM encoder config"):
        MuMAutoEncoder(croco.config)
