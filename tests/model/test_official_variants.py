"""Variants of the official release format: constructor-string spellings and the DUSt3R heads."""

from __future__ import annotations

import argparse

import torch

import recon
from backbone.checkpoint import safe_load
from backbone.croco import MAST3R_ENCODER_KEY_MAP
from recon.model.formats import MAST3R_PTH, official_name
from recon.model.heads import HeadConfig
from recon.model.presets import build_model

from .conftest import fixture_path


def _official_state(model) -> dict:
    """Our state dict -> the official DUSt3R key layout (inverse key maps), plus the unused mask token."""
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith("backbone."):
            rest = key[len("backbone.") :]
            theirs = next(t for t, mine in MAST3R_ENCODER_KEY_MAP.items() if rest.startswith(mine))
            out[theirs + rest[len(MAST3R_ENCODER_KEY_MAP[theirs]) :]] = value
        else:
            out[official_name(key, MAST3R_PTH)] = value
    out["mask_token"] = torch.zeros(1, 1, model.config.decoder.embed_dim)
    return out


def test_dust3r_224_linear_string_without_patch_embed_cls(tmp_path):
    torch.manual_seed(0)
    ours = build_model(
        "dust3r_vitl16_linear",
        backbone_overrides={"embed_dim": 32, "depth": 1, "num_heads": 2},
        decoder=recon.model.DecoderConfig(embed_dim=32, depth=2, num_heads=2),
        head=HeadConfig(kind="linear"),
    )
    # Keyword order of third-party dumps; no patch_embed_cls, so PatchEmbedDust3R; CroCo defaults elsewhere.
    text = (
        "AsymmetricCroCo3DStereo(enc_depth=1, dec_depth=2, enc_embed_dim=32, dec_embed_dim=32, enc_num_heads=2, "
        "dec_num_heads=2, pos_embed='RoPE100', img_size=(224, 224), head_type='linear', output_mode='pts3d', "
        "depth_mode=('exp', -inf, inf), conf_mode=('exp', 1, inf))"
    )
    path = tmp_path / "dust3r.pth"
    torch.save({"model": _official_state(ours), "args": argparse.Namespace(model=text), "epoch": 3}, path)
    loaded = recon.load_model(path)
    assert loaded.config.head.kind == "linear" and loaded.image_size == 224 and not loaded.has_desc
    img1, img2 = torch.rand(1, 3, 32, 48), torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        ref, ref2 = ours(img1, img2)
        out, out2 = loaded(img1, img2)
    assert set(out) == {"pts3d", "conf"}
    torch.testing.assert_close(out["pts3d"], ref["pts3d"], rtol=0, atol=0)
    torch.testing.assert_close(out2["conf"], ref2["conf"], rtol=0, atol=0)


def test_training_string_spelling_is_equivalent(tmp_path, mast3r_io):
    """README training string: ManyAR_PatchEmbed, other keyword order, landscape_only=True (ignored)."""
    ckpt = safe_load(fixture_path("mast3r_tiny.pth"))
    text = (
        "AsymmetricMASt3R(pos_embed='RoPE100', patch_embed_cls='ManyAR_PatchEmbed', img_size=(512, 512), "
        "head_type='catmlp+dpt', output_mode='pts3d+desc24', depth_mode=('exp', -inf, inf), "
        "conf_mode=('exp', 1, inf), enc_embed_dim=64, enc_depth=2, enc_num_heads=4, dec_embed_dim=48, "
        "dec_depth=10, dec_num_heads=4, two_confs=True, desc_conf_mode=('exp', 0, inf), landscape_only=True)"
    )
    path = tmp_path / "train.pth"
    torch.save({"model": ckpt["model"], "args": argparse.Namespace(model=text), "optimizer": {}, "epoch": 1}, path)
    model = recon.load_model(path)
    img1 = mast3r_io["portrait.view1.img"] * 0.5 + 0.5
    img2 = mast3r_io["portrait.view2.img"] * 0.5 + 0.5
    with torch.no_grad():
        pred1, _ = model(img1, img2)  # portrait stays portrait, as the official load_model forces
    torch.testing.assert_close(pred1["pts3d"], mast3r_io["portrait.pred1.pts3d"], rtol=1e-4, atol=1e-4)


def test_names_resolve_through_the_weights_table(monkeypatch):
    """Weights names go through backbone.hub.get_weights; a DUNE-MASt3R file's own dune_backbone_name too."""
    from backbone import hub

    asked = []
    files = {"some_mast3r": fixture_path("mast3r_tiny.pth"), "dune_tiny_14_56_encoder": fixture_path("dune_tiny.pth")}

    def fake_get_weights(name, **kw):
        asked.append(name)
        return files[name]

    monkeypatch.setattr(hub, "get_weights", fake_get_weights)
    assert recon.load_model("some_mast3r").patch_size == 16
    model = recon.load_model(fixture_path("dune_mast3r_tiny.pth"))  # no backbone=: the file names its encoder
    assert asked == ["some_mast3r", "dune_tiny_14_56_encoder"]
    assert model.backbone.spec.embed_dim == 32 and model.config.tokens == "prenorm"
