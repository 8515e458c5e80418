"""CroCo / MASt3R encoder: conformance with the official encoder output, key map, negative loads."""

import pytest
import torch
from safetensors.torch import load_file

import backbone
from backbone.checkpoint import CheckpointError, parse_constructor, safe_load
from backbone.croco import croco_overrides_from_mast3r, load_croco, load_mast3r_encoder

# Tolerance: the conformance README measures float64-vs-float32 differences of the official encoder outputs of
# 9.9e-6 (atol at rtol=1e-4: 4.3e-6) and suggests rtol=atol=1e-4 for a float32 CPU reimplementation.
RTOL, ATOL = 1e-4, 1e-4


@pytest.fixture
def ckpt(conformance_file):
    return safe_load(conformance_file("mast3r_tiny.pth"))


def _tiny_encoder(ckpt):
    _, kwargs = parse_constructor(ckpt["args"].model)
    encoder = backbone.create("croco_vitl16", **croco_overrides_from_mast3r(kwargs)).eval()
    used = load_mast3r_encoder(encoder, ckpt["model"])
    return encoder, used


def test_overrides_from_release_string():
    release = (
        "AsymmetricMASt3R(enc_depth=24, dec_depth=12, enc_embed_dim=1024, dec_embed_dim=768, enc_num_heads=16, "
        "dec_num_heads=12, pos_embed='RoPE100',img_size=(512, 512), head_type='catmlp+dpt', "
        "output_mode='pts3d+desc24', depth_mode=('exp', -inf, inf), conf_mode=('exp', 1, inf), "
        "patch_embed_cls='PatchEmbedDust3R', two_confs=True, desc_conf_mode=('exp', 0, inf), landscape_only=False)"
    )
    overrides = croco_overrides_from_mast3r(parse_constructor(release)[1])
    assert overrides == {
        "embed_dim": 1024,
        "depth": 24,
        "num_heads": 16,
        "patch_size": 16,
        "mlp_ratio": 4.0,
        "rope_base": 100.0,
        "image_size": 512,
    }
    # Missing encoder arguments take CroCoNet's defaults (ViT-B), not ViT-L's.
    assert croco_overrides_from_mast3r({"pos_embed": "RoPE100"})["depth"] == 12
    with pytest.raises(CheckpointError, match="cosine"):
        croco_overrides_from_mast3r({"pos_embed": "cosine"})


def test_encoder_matches_official(ckpt, conformance_file):
    encoder, used = _tiny_encoder(ckpt)
    assert used == {k for k in ckpt["model"] if k.startswith(("patch_embed.", "enc_blocks.", "enc_norm."))}
    io = load_file(conformance_file("mast3r_tiny_io.safetensors"))
    for case in ("landscape", "mixed"):
        for view in ("1", "2"):
            img = io[f"{case}.view{view}.img"]  # stored in [-1, 1]; the backbone takes [0, 1]
            with torch.no_grad():
                tokens = encoder(img * 0.5 + 0.5)
            torch.testing.assert_close(tokens, io[f"{case}.enc.feat{view}"], rtol=RTOL, atol=ATOL)


def test_load_croco_from_release_dict(ckpt):
    encoder = load_croco(ckpt)
    assert encoder.spec.embed_dim == 64 and len(encoder.blocks) == 2 and encoder.spec.patch_size == 16
    assert not any(p.is_meta for p in encoder.parameters())


def test_missing_key_is_named(ckpt):
    state = dict(ckpt["model"])
    del state["enc_blocks.1.mlp.fc2.bias"]
    encoder = backbone.create("croco_vitl16", embed_dim=64, depth=2, num_heads=4)
    with pytest.raises(CheckpointError, match=r"missing keys.*enc_blocks\.1\.mlp\.fc2\.bias"):
        load_mast3r_encoder(encoder, state)


def test_extra_block_is_named(ckpt):
    state = dict(ckpt["model"])
    state["enc_blocks.2.norm1.weight"] = torch.ones(64)
    encoder = backbone.create("croco_vitl16", embed_dim=64, depth=2, num_heads=4)
    with pytest.raises(CheckpointError, match=r"unexpected keys.*enc_blocks\.2\.norm1\.weight"):
        load_mast3r_encoder(encoder, state)


def test_mis_shaped_key_is_named(ckpt):
    encoder = backbone.create("croco_vitl16", embed_dim=64, depth=2, num_heads=2)  # heads do not change shapes
    load_mast3r_encoder(encoder, ckpt["model"])
    wide = backbone.create("croco_vitl16", embed_dim=128, depth=2, num_heads=4)
    expected = r"shape mismatches \(28\).*enc_blocks\.0\.attn\.qkv\.weight: checkpoint \(192, 64\) vs model \(384, "
    with pytest.raises(CheckpointError, match=expected):
        load_mast3r_encoder(wide, ckpt["model"])


def test_release_manifest_encoder_maps_onto_croco_vitl16(conformance_file):
    import json

    from backbone.croco import map_mast3r_encoder_keys

    manifest = json.loads(
        conformance_file("manifests/MASt3R_ViTLarge_BaseDecoder_512_catmlpdpt_metric.json").read_text()
    )
    official = {k: torch.empty(shape, device="meta") for k, (shape, _) in manifest.items()}
    ours, used = map_mast3r_encoder_keys(official)
    with torch.device("meta"):
        model = backbone.create("croco_vitl16")
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert len(used) == 4 + 24 * 12  # patch_embed.proj.{weight,bias}, enc_norm.{weight,bias}, 12 keys per block
