"""Model-backed predictors end to end with a tiny random model (numbers are meaningless; the plumbing is not)."""

import json

import numpy as np
import pytest
import torch

from cli import main
from recon.model import DecoderConfig, HeadConfig, build_model, save_model
from tools.eval.runner import load_results

from .layouts import SeqSpec, write_co3d_layout


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("co3d_tiny")
    write_co3d_layout(root, {"apple": [SeqSpec("a1")]})
    torch.manual_seed(0)
    model = build_model(
        "mast3r_vitl16",
        backbone_overrides={"embed_dim": 32, "depth": 1, "num_heads": 2},
        decoder=DecoderConfig(embed_dim=32, depth=10, num_heads=2),  # the DPT head needs depth >= 10
        head=HeadConfig(kind="catmlp+dpt", dpt_feature_dim=16, dpt_layer_dims=(8, 16, 32, 64)),
    )
    ckpt = save_model(model, tmp_path_factory.mktemp("ckpt") / "tiny.pth")
    return root, ckpt


def run(root, ckpt, out, *extra):
    return main(["-q", "eval", "co3d", "--root", str(root), "--categories", "apple", "--checkpoint", str(ckpt),
                 "--image-size", "64", "--device", "cpu", "--out", str(out), *extra])  # fmt: skip


def test_pairwise_mode_with_tiny_model(tiny_setup, tmp_path):
    root, ckpt = tiny_setup
    out = tmp_path / "pw"
    # USAC: plain RANSAC runs all its 1000 iterations on a random model's matches (~1 s per pair).
    assert run(root, ckpt, out, "--recipe", "vggt", "--ransac-method", "usac_accurate") == 0
    (rec,) = load_results(out)
    assert np.array(rec["T_rel_pred"]).shape == (45, 4, 4)
    assert np.array(rec["K_pred"]).shape == (10, 3, 3) and np.all(np.isfinite(rec["K_pred"]))
    assert len(rec["rot_err_deg"]) == 45 and np.all(np.isfinite(rec["rot_err_deg"]))
    assert len(rec["info"]["inliers"]) == 45
    # K is reported in pixels of the 64x48 images on disk: the principal point sits at their centre.
    np.testing.assert_allclose(np.array(rec["K_pred"])[:, :2, 2], [[32, 24]] * 10, atol=1e-6)
    info = json.loads((out / "run.json").read_text())
    assert info["predictor"]["predictor"] == "pairwise" and info["predictor"]["ransac_method"] == "usac_accurate"


def test_unknown_checkpoint_is_a_user_error(tiny_setup, tmp_path, capsys):
    root, _ = tiny_setup
    assert run(root, tmp_path / "missing.pth", tmp_path / "o") == 2
    assert "cannot load model" in capsys.readouterr().err


def test_global_mode_with_tiny_model(tiny_setup, tmp_path):
    root, ckpt = tiny_setup
    out = tmp_path / "gl"
    assert run(root, ckpt, out, "--mode", "global", "--recipe", "vggt") == 0
    (rec,) = load_results(out)
    assert rec["T_rel_pred"] is None and np.array(rec["T_world_cam_pred"]).shape == (10, 4, 4)
    assert "registered" in rec["info"] and len(rec["rot_err_deg"]) == 45
    assert json.loads((out / "run.json").read_text())["predictor"]["predictor"] == "global"
