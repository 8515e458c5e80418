"""ReconModel contract on tiny random models: shapes and keys per head, patch 14/16, split API, dtypes, saving."""

from __future__ import annotations

import pytest
import torch

import recon
from recon.model import DecoderConfig, HeadConfig, build_model, save_model

from .conftest import fixture_path

TINY_DEC = DecoderConfig(embed_dim=32, depth=10, num_heads=2)
TINY = {
    "mast3r_vitl16": {"embed_dim": 40, "depth": 1, "num_heads": 2},
    "dune_vits14": {"embed_dim": 24, "depth": 1, "num_heads": 2, "pos_embed_grid": 4},
}


def _tiny(name="mast3r_vitl16", kind="catmlp+dpt"):
    torch.manual_seed(0)
    # Narrow DPT (the release widths 256 / 96..768 make every tiny model 45 M parameters and slow to init).
    head = HeadConfig(kind=kind, dpt_feature_dim=16, dpt_layer_dims=(8, 16, 24, 32))
    return build_model(name, backbone_overrides=TINY[name], decoder=TINY_DEC, head=head)


@pytest.mark.parametrize("kind", ["catmlp+dpt", "dpt", "linear"])
@pytest.mark.parametrize("name", ["mast3r_vitl16", "dune_vits14"])
def test_output_shapes_and_keys(name, kind):
    model = _tiny(name, kind)
    p = model.patch_size
    img1, img2 = torch.rand(2, 3, 2 * p, 3 * p), torch.rand(2, 3, 3 * p, 2 * p)  # landscape + portrait
    with torch.no_grad():
        pred1, pred2 = model(img1, img2)
    keys = {"pts3d", "conf", "desc", "desc_conf"} if kind == "catmlp+dpt" else {"pts3d", "conf"}
    assert set(pred1) == set(pred2) == keys
    for pred, (H, W) in ((pred1, (2 * p, 3 * p)), (pred2, (3 * p, 2 * p))):
        assert pred["pts3d"].shape == (2, H, W, 3)
        assert pred["conf"].shape == (2, H, W)
        assert pred["conf"].min() > 1  # conf = 1 + exp(.)
        if kind == "catmlp+dpt":
            assert pred["desc"].shape == (2, H, W, 24)
            torch.testing.assert_close(pred["desc"].norm(dim=-1), torch.ones(2, H, W))
            assert pred["desc_conf"].min() > 0
        assert all(torch.isfinite(v).all() for v in pred.values())


def test_dpt_upsampling_follows_the_patch_size():
    assert _tiny("mast3r_vitl16").head1.dpt.upsample_factor == 2.0
    assert _tiny("dune_vits14").head2.dpt.upsample_factor == 1.75


def test_split_api_equals_forward_and_batch_independence():
    model = _tiny("dune_vits14")
    img1, img2 = torch.rand(3, 3, 28, 42), torch.rand(3, 3, 28, 42)
    with torch.no_grad():
        pred1, pred2 = model(img1, img2)
        f1, f2 = model.encode(img1), model.encode(img2)
        assert f1.shape == (3, 2 * 3, 24)
        split1, split2 = model.decode(f1, f2, (28, 42), (28, 42))
        single1, _ = model(img1[1:2], img2[1:2])
    for key in pred1:
        torch.testing.assert_close(split1[key], pred1[key], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(split2[key], pred2[key], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(single1[key], pred1[key][1:2], rtol=1e-4, atol=1e-4)


def test_views_are_not_interchangeable():
    # The two decoders and heads differ: swapping the inputs must change view 1's prediction.
    model = _tiny("mast3r_vitl16")
    a, b = torch.rand(1, 3, 32, 48), torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        ab, _ = model(a, b)
        ba, _ = model(b, a)
    assert not torch.allclose(ab["pts3d"], ba["pts3d"])


def test_bfloat16_backbone_and_decoder_keep_float32_heads():
    model = recon.model.loading.cast_model(_tiny("mast3r_vitl16"), torch.bfloat16)
    assert next(model.decoder.parameters()).dtype == torch.bfloat16
    assert next(model.head1.parameters()).dtype == torch.float32
    with torch.no_grad():
        pred1, _ = model(torch.rand(1, 3, 32, 32), torch.rand(1, 3, 32, 32))
    assert pred1["pts3d"].dtype == torch.float32 and torch.isfinite(pred1["pts3d"]).all()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_save_load_round_trip(tmp_path, suffix):
    model = _tiny("dune_vits14")  # DUNE backbone, pre-norm tokens, LayerNorm adapter
    path = save_model(model, tmp_path / f"sub/model{suffix}")
    assert sorted(p.name for p in path.parent.iterdir()) == [f"model{suffix}"]  # no temp file left behind
    again = recon.load_model(path)
    assert again.config == model.config
    img = torch.rand(1, 3, 28, 42)
    with torch.no_grad():
        ref, _ = model(img, img)
        out, _ = again(img, img)
    for key in ref:
        torch.testing.assert_close(out[key], ref[key], rtol=0, atol=0)


def test_save_load_round_trip_croco(tmp_path):
    model = _tiny("mast3r_vitl16", "linear")
    again = recon.load_model(save_model(model, tmp_path / "m.pth"))
    assert again.config.head.kind == "linear" and again.config.backbone["factory"] == "croco_vitl16"
    state, state2 = model.state_dict(), again.state_dict()
    assert state.keys() == state2.keys() and all(torch.equal(state[k], state2[k]) for k in state)


def test_hf_folder_matches_pth(tmp_path, mast3r_io):
    """A Hugging Face export (safetensors drops the layer_rn aliases; config.json holds the kwargs) loads the same."""
    import json

    from safetensors.torch import save_file

    from backbone.checkpoint import parse_constructor, safe_load

    ckpt = safe_load(fixture_path("mast3r_tiny.pth"))
    state = {k: v.contiguous() for k, v in ckpt["model"].items() if ".scratch.layer_rn." not in k}
    save_file(state, str(tmp_path / "model.safetensors"))
    _, kwargs = parse_constructor(ckpt["args"].model)
    (tmp_path / "config.json").write_text(json.dumps({**kwargs, "landscape_only": False, "desc_mode": "norm"}))
    model = recon.load_model(tmp_path)
    img1 = mast3r_io["square.view1.img"] * 0.5 + 0.5
    img2 = mast3r_io["square.view2.img"] * 0.5 + 0.5
    with torch.no_grad():
        pred1, pred2 = model(img1, img2)
    torch.testing.assert_close(pred1["pts3d"], mast3r_io["square.pred1.pts3d"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(pred2["desc"], mast3r_io["square.pred2.desc"], rtol=1e-4, atol=1e-4)


def test_custom_size_mum_backbone_saves_and_reloads(tmp_path):
    """An official-layout MuM encoder of non-standard size (named ``mum_vit``) round-trips in a recon model."""
    import backbone as bb
    from recon.model.recon_model import ModelConfig, ReconModel

    encoder = bb.load(fixture_path("mum_tiny_vitl16.pth"))
    assert encoder.config.name not in bb.list_backbones()
    torch.manual_seed(0)
    cfg = ModelConfig(
        decoder=DecoderConfig(embed_dim=48, depth=10, num_heads=4),
        head=HeadConfig(dpt_feature_dim=32, dpt_layer_dims=(16, 32, 64, 128)),
        image_size=224,
    )
    model = ReconModel(encoder, cfg).eval()
    path = save_model(model, tmp_path / "mum_model.pth")
    again = recon.load_model(path)
    img1, img2 = torch.rand(1, 3, 48, 64), torch.rand(1, 3, 48, 64)
    with torch.no_grad():
        a, b = model(img1, img2), again(img1, img2)
    for pa, pb in zip(a, b, strict=True):
        for key in pa:
            torch.testing.assert_close(pa[key], pb[key], rtol=0, atol=0)
