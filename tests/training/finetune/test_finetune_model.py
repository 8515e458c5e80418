"""The finetuned network: frozen backbone, init from the official tiny MASt3R with a report, output layouts."""

import re
from pathlib import Path

import pytest
import torch
from finetune_helpers import TINY_NET

import recon
from backbone.checkpoint import parse_constructor, safe_load
from recon.model.formats import configs_from_constructor
from training.common.checkpoint import atomic_torch_save
from training.distill.student import official_checkpoint
from training.finetune.config import DataConfig, NetConfig
from training.finetune.export import (
    ExportError,
    dune_mast3r_checkpoint,
    mast3r_model_string,
    resolve_layout,
    save_final,
)
from training.finetune.model import FinetuneNet, _resample_pixel_layer, build_model, init_from_checkpoint
from training.finetune.train import resolve_resolutions

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
MAST3R_TINY = FIXTURES / "mast3r_tiny.pth"  # official AsymmetricMASt3R: enc 64-d/16, decoder 48-d x 10, 4 heads
DUNE_MAST3R_TINY = FIXTURES / "dune_mast3r_tiny.pth"
# Release-width DPT (the official layout hard-codes it): ~40 M parameters, still fast at 56x42.
FULL_DPT = dict(dpt_feature_dim=256, dpt_layer_dims=(96, 192, 384, 768))


def net(**kw) -> NetConfig:
    return NetConfig(**{**TINY_NET, **kw})


def test_backbone_is_frozen_and_stays_in_eval_mode():
    torch.manual_seed(0)
    model = build_model(net())
    assert model.config.tokens == "prenorm" and model.config.adapter_norm_eps == 1e-5  # DUNE: as DUNE-MASt3R
    wrapper = FinetuneNet(model).train()
    assert not model.backbone.training and model.decoder.training
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for name, p in model.named_parameters() if not name.startswith("backbone."))
    img = torch.rand(2, 3, 42, 56)
    p1, p2 = wrapper(img, img.flip(0), symmetrize=True)
    assert p1["pts3d"].shape == (4, 42, 56, 3) and p2["desc"].shape == (4, 42, 56, 24)
    with torch.no_grad():
        q1, q2 = model(img, img.flip(0))  # the wrapper's forward is ReconModel's
    torch.testing.assert_close(p1["pts3d"][:2].detach(), q1["pts3d"])
    torch.testing.assert_close(p2["pts3d"][2:].detach(), model(img.flip(0), img)[1]["pts3d"].detach())


def test_other_backbones_read_final_tokens_without_adapter():
    model = build_model(net(backbone="croco_vitl16", backbone_overrides={"embed_dim": 32, "depth": 1, "num_heads": 2}))
    assert model.config.tokens == "final" and model.config.adapter_norm_eps is None
    assert model.patch_size == 16
    assert resolve_resolutions(DataConfig(), model.backbone.spec)[0] == (512, 384)
    dune = build_model(net())
    assert resolve_resolutions(DataConfig(), dune.backbone.spec)[0] == (518, 518)
    dune336 = build_model(net(backbone_overrides={**TINY_NET["backbone_overrides"], "image_size": 336}))
    assert resolve_resolutions(DataConfig(), dune336.backbone.spec)[-1] == (448, 140)


def test_init_from_mast3r_reports_copied_and_reinitialised():
    torch.manual_seed(0)
    model = build_model(net(decoder_embed_dim=48, decoder_num_heads=4, **FULL_DPT))  # DUNE 32-d, patch 14
    report = init_from_checkpoint(model, str(MAST3R_TINY), resample_pixel_layers=True)
    assert report.source_format == "mast3r"
    reinit = {k for k, _, _ in report.reinitialised}
    assert reinit == {
        "decoder.decoder_embed.weight",  # 64-d CroCo -> 32-d DUNE
        *(f"head{h}.dpt.act_postprocess.0.0.weight" for h in (1, 2)),  # reads the encoder tokens
        *(f"head{h}.head_local_features.fc1.{p}" for h in (1, 2) for p in ("weight", "bias")),  # wider input
        *(f"head{h}.head_local_features.fc2.weight" for h in (1, 2)),  # hidden width and 16 -> 14 pixels
    }
    # The output bias depends on the patch only: its 16x16 sub-pixel pattern is resampled to 14x14.
    assert {k for k, _, _ in report.resampled} == {f"head{h}.head_local_features.fc2.bias" for h in (1, 2)}
    assert set(report.new) == {"adapter.weight", "adapter.bias"} and report.skipped == []
    state = safe_load(MAST3R_TINY)["model"]
    torch.testing.assert_close(model.decoder.dec_blocks[3].mlp.fc1.weight, state["dec_blocks.3.mlp.fc1.weight"])
    torch.testing.assert_close(model.head2.dpt.head[0].weight, state["downstream_head2.dpt.head.0.weight"])
    assert "re-initialised decoder.decoder_embed.weight: [48, 64] -> [48, 32]" in report.summary()


def test_init_resamples_the_pixel_layer_for_patch_14():
    torch.manual_seed(0)
    overrides = {"embed_dim": 64, "depth": 1, "num_heads": 4}  # the MASt3R tiny encoder's width, patch 14
    model = build_model(net(backbone="dinov2_vits14", backbone_overrides=overrides, decoder_embed_dim=48,
                            decoder_num_heads=4, **FULL_DPT))  # fmt: skip
    report = init_from_checkpoint(model, str(MAST3R_TINY), resample_pixel_layers=True)
    assert {k for k, _, _ in report.resampled} == {f"head{h}.head_local_features.fc2.{p}" for h in (1, 2)
                                                   for p in ("weight", "bias")}  # fmt: skip
    assert report.reinitialised == [] and "decoder.decoder_embed.weight" in report.copied
    assert dict((k, (s, t)) for k, s, t in report.resampled)["head1.head_local_features.fc2.bias"] == ([6400], [4900])
    off = init_from_checkpoint(model, str(MAST3R_TINY))  # the default: re-initialised, as the DUNE supplement B
    assert len(off.reinitialised) == 4 and not off.resampled
    assert {k for k, _, _ in off.reinitialised} == {f"head{h}.head_local_features.fc2.{p}" for h in (1, 2)
                                                    for p in ("weight", "bias")}  # fmt: skip


def test_pixel_layer_resampling_keeps_smooth_patterns():
    C, hid = 3, 5
    i = torch.arange(16).view(1, 16, 1, 1).float()
    src = (torch.arange(C).view(C, 1, 1, 1) * 10 + 0 * i + torch.ones(C, 16, 16, hid)).reshape(C * 256, hid)
    out = _resample_pixel_layer(src, torch.Size([C * 196, hid]), 14)
    torch.testing.assert_close(out.view(C, 14, 14, hid), src.view(C, 16, 16, hid)[:, :14, :14])  # constant per c
    assert _resample_pixel_layer(src, torch.Size([C * 256, hid]), 16) is None  # same patch: nothing to do
    assert _resample_pixel_layer(src, torch.Size([C * 196, hid + 1]), 14) is None


def test_init_from_a_dune_mast3r_file():
    model = build_model(net(decoder_depth=12, decoder_num_heads=4, **FULL_DPT))
    report = init_from_checkpoint(model, str(DUNE_MAST3R_TINY))
    assert report.source_format == "dune_mast3r" and not report.reinitialised and not report.new
    assert "adapter.weight" in report.copied


@pytest.fixture(scope="module")
def dune_full(tmp_path_factory):
    """A tiny DUNE (written in the official DUNE layout) under a release-width decoder head."""
    torch.manual_seed(3)
    model = build_model(net(**FULL_DPT)).eval()
    with torch.no_grad():  # a non-trivial adapter, so that a lost or swapped LayerNorm would show
        model.adapter.weight.uniform_(0.5, 1.5)
        model.adapter.bias.normal_(0, 0.1)
    folder = tmp_path_factory.mktemp("dune")
    backbone_path = atomic_torch_save(official_checkpoint(model.backbone, 0), folder / "dune_tiny.pth")
    return model, backbone_path, folder


def test_dune_mast3r_layout_round_trips_through_recon_load_model(dune_full):
    model, backbone_path, folder = dune_full
    assert resolve_layout(model, "auto") == "dune_mast3r"
    path = save_final(model, folder / "decoder.pth", "dune_mast3r", str(backbone_path))
    ckpt = safe_load(path)
    assert set(ckpt) == {"dune_backbone_name", "mast3r_model_str", "model"}
    loaded = recon.load_model(path, backbone=backbone_path)
    assert loaded.config.tokens == "prenorm" and loaded.config.adapter_norm_eps == 1e-5
    img1, img2 = torch.rand(1, 3, 42, 56), torch.rand(1, 3, 42, 56)
    with torch.no_grad():
        a, b = model(img1, img2), loaded(img1, img2)
    for pa, pb in zip(a, b, strict=True):
        for key in pa:
            torch.testing.assert_close(pb[key], pa[key], rtol=0, atol=0)
    loaded_by_name = recon.load_model(path)  # dune_backbone_name resolves to the written DUNE file
    assert loaded_by_name.backbone.spec.embed_dim == 32


def test_dune_mast3r_keys_follow_the_official_fixture(dune_full):
    model, _, _ = dune_full
    ours = set(dune_mast3r_checkpoint(model, "x")["model"])
    official = set(safe_load(DUNE_MAST3R_TINY)["model"])

    def pattern(keys):  # block indices and the inner encoder's blocks (enc_depth=0 in ours) set aside
        return {re.sub(r"\.(dec_blocks2?)\.\d+\.", r".\1.N.", k) for k in keys if ".enc_blocks." not in k}

    assert pattern(ours) == pattern(official)
    state = dune_mast3r_checkpoint(model, "x")["model"]
    base = "mast3r.downstream_head1.dpt.scratch"
    assert state[f"{base}.layer_rn.2.weight"] is state[f"{base}.layer3_rn.weight"]  # stored as aliases


def test_model_string_parses_back_to_the_configs(dune_full):
    model, _, _ = dune_full
    text = mast3r_model_string(model)
    assert "landscape_only" not in text and "patch_size" not in text  # the official wrapper appends both
    decoder, head, _, enc = configs_from_constructor(*parse_constructor(text))
    assert decoder == model.config.decoder
    assert head.kind == "catmlp+dpt" and head.desc_dim == 24 and head.two_confs
    assert head.depth_mode == model.config.head.depth_mode and head.conf_mode == model.config.head.conf_mode
    assert enc["enc_embed_dim"] == 32


def test_layout_choice_and_errors(tmp_path):
    narrow = build_model(net())
    assert resolve_layout(narrow, "auto") == "recon"
    with pytest.raises(ExportError, match="DPT widths"):
        resolve_layout(narrow, "dune_mast3r")
    croco = build_model(net(backbone="croco_vitl16", backbone_overrides={"embed_dim": 32, "depth": 1, "num_heads": 2},
                            **FULL_DPT))  # fmt: skip
    assert resolve_layout(croco, "auto") == "recon"
    with pytest.raises(ExportError, match="not DUNE"):
        dune_mast3r_checkpoint(croco, "x")
    path = save_final(croco, tmp_path / "croco.pth", "recon")
    assert recon.load_model(path).backbone.spec.name == "croco_vitl16"
