"""End-to-end: the loss falls, crash-and-resume is exact, torchrun with 2 gloo ranks agrees, outputs load back."""

import json
from pathlib import Path

import pytest
import torch
from mum_helpers import smooth_sequences, tiny_config

import backbone
from training.common.checkpoint import load_checkpoint
from training.mum.config import replace
from training.mum.decoder import load_official
from training.mum.model import encoder_config, recon_model_on_mum, weights_digest
from training.mum.train import MuMTrainer, train


def test_loss_on_fixed_sequences_falls_by_half(tmp_path):
    cfg = replace(tiny_config(tmp_path), train={"iterations": 1000, "warmup": 0, "lr": 3e-3})
    torch.manual_seed(0)
    trainer = MuMTrainer(cfg)
    images = smooth_sequences(1, 3, 48)  # 3 views of 3 x 3 patches, 2 kept per view
    losses = [trainer.step(images, it, torch.Generator().manual_seed(5))[0]["loss"] for it in range(40)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert min(losses[-5:]) <= 0.5 * losses[0], losses


class CrashAt(Exception):
    pass


def test_crash_and_resume_reproduces_the_uninterrupted_run(tmp_path):
    full = train(tiny_config(tmp_path / "full"))
    assert full.iterations == 6 and full.outputs["autoencoder"].is_file()

    def crash(it, trainer):
        if it == 5:  # after iteration 5, before anything is saved for it: the last checkpoint is at 4
            raise CrashAt

    cfg = tiny_config(tmp_path / "resumed")
    with pytest.raises(CrashAt):
        train(cfg, on_iteration=crash)
    assert sorted(p.name for p in (tmp_path / "resumed").glob("checkpoint_*.pth")) == [
        "checkpoint_00000002.pth", "checkpoint_00000004.pth",
    ]  # fmt: skip
    seen = []
    resumed = train(cfg, on_iteration=lambda it, tr: seen.append(it))
    assert seen == [5, 6]  # restarted at iteration 4
    a = torch.load(full.outputs["autoencoder"], weights_only=True)
    b = torch.load(resumed.outputs["autoencoder"], weights_only=True)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key  # bit-exact
    ta = load_checkpoint(tmp_path / "full" / "checkpoint_00000006.pth")
    tb = load_checkpoint(tmp_path / "resumed" / "checkpoint_00000006.pth")
    for sa, sb in zip(ta["optimizer"]["state"].values(), tb["optimizer"]["state"].values(), strict=True):
        assert torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A 2-iteration MuM run (reconstruction images and TensorBoard on): ``(config, TrainResult)``."""
    out = tmp_path_factory.mktemp("mum_run")
    cfg = tiny_config(out, iterations=2, warmup=0, image_every=1, tensorboard=True)
    return cfg, train(cfg)


def test_outputs_load_as_backbone_and_in_the_official_layout(pretrained):
    cfg, result = pretrained
    out, paths = Path(cfg.train.output_dir), result.outputs
    ae = load_official(paths["autoencoder"])
    assert weights_digest(ae) == json.loads((out / "summary.json").read_text())["rank_digests"][0]
    images = torch.rand(2, 3, 32, 32)
    ref = ae.encoder.eval()(images)
    exact = backbone.load(paths["backbone"])  # recon format: the training numerics
    torch.testing.assert_close(exact(images), ref, rtol=0, atol=0)
    assert exact.config == encoder_config(cfg)  # image_size included (the official layouts cannot say it)
    from_ae = backbone.load(paths["autoencoder"])  # official AE layout -> autoencoder numerics, same as training
    torch.testing.assert_close(from_ae(images), ref, rtol=1e-6, atol=1e-6)
    enc_only = backbone.load(paths["encoder"])  # official encoder-only layout -> mum_vitl16's eps 1e-5, bf16 RoPE
    assert enc_only.config.rope_dtype == "bfloat16" and enc_only.config.norm_eps == 1e-5
    assert set(enc_only.state_dict()) == set(exact.state_dict())
    # training checkpoints hold the official autoencoder layout too
    assert weights_digest(load_official(out / "checkpoint_00000002.pth")) == weights_digest(ae)
    assert weights_digest(backbone.load(out / "checkpoint_00000002.pth")) == weights_digest(from_ae)
    assert sorted(p.name for p in (out / "reconstructions").iterdir()) == ["it_00000000.png", "it_00000001.png"]
    assert any(p.name.endswith(".images") for p in (out / "tb").iterdir())


def _photos(folder: Path, n: int = 3) -> Path:
    from PIL import Image

    from tools.synth import render_scene

    folder.mkdir(parents=True, exist_ok=True)
    for i, view in enumerate(render_scene("orbit", n_views=n, size=(96, 72), seed=2)):
        Image.fromarray(view.rgb).save(folder / f"view_{i}.png")
    return folder


def test_recon_model_on_the_pretrained_encoder_runs_in_recon_run(pretrained, tmp_path):
    from cli import main as recon_main
    from recon.model.decoder import DecoderConfig
    from recon.model.heads import HeadConfig
    from recon.model.loading import load_model, save_model

    encoder = backbone.load(pretrained[1].outputs["backbone"])
    model = recon_model_on_mum(
        encoder,
        decoder=DecoderConfig(embed_dim=32, depth=10, num_heads=2),
        head=HeadConfig(dpt_feature_dim=16, dpt_layer_dims=(8, 16, 32, 64)),
        image_size=64,
    )
    path = save_model(model, tmp_path / "recon_mum.pth")
    loaded = load_model(path)
    img1, img2 = torch.rand(1, 3, 32, 48), torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        p1, p2 = model(img1, img2)
        q1, q2 = loaded(img1, img2)
    for a, b in ((p1, q1), (p2, q2)):
        for key in a:
            torch.testing.assert_close(b[key], a[key], rtol=0, atol=0)
    torch.testing.assert_close(loaded.backbone(img1), encoder(img1), rtol=0, atol=0)  # the MuM encoder, unchanged
    # A random decoder may register no camera, which a .glb export refuses; the .npz keeps whatever was solved.
    args = ["run", str(_photos(tmp_path / "photos")), "--checkpoint", str(path), "--out", str(tmp_path / "s.npz"),
            "--image-size", "64", "--device", "cpu", "--align", "dense"]  # fmt: skip
    assert recon_main(args) == 0
    import numpy as np

    with np.load(tmp_path / "s.npz") as scene:
        assert scene["T_world_cam"].shape == (3, 4, 4)


def test_finetune_recipe_trains_a_decoder_on_the_frozen_mum_encoder(pretrained, tmp_path):
    from training.finetune import train as finetune
    from training.finetune.config import resolve_config

    cfg = resolve_config(
        "smoke",
        {
            "model": {"backbone": "mum_vitl16", "backbone_checkpoint": str(pretrained[1].outputs["backbone"]),
                      "backbone_overrides": {}},
            "data": {"resolutions": [[64, 48], [64, 32]], "val_sources": []},
            "train": {"output_dir": str(tmp_path / "ft"), "iterations": 2, "checkpoint_every": 2, "tensorboard": False,
                      "log_every": 0},
        },
    )  # fmt: skip
    result = finetune.train(cfg)
    from recon.model.loading import load_model

    model = load_model(result.final_model)
    encoder = backbone.load(pretrained[1].outputs["backbone"])
    for key, value in encoder.state_dict().items():  # the backbone stayed frozen
        assert torch.equal(model.backbone.state_dict()[key], value), key


@pytest.mark.slow  # ~10 s quiet: two torchrun processes
def test_torchrun_two_gloo_ranks_agree(tmp_path, torchrun):
    out = tmp_path / "ddp"
    cfg = tiny_config(out, iterations=3, checkpoint_every=3)
    torchrun("mum", cfg)
    summary = json.loads((out / "summary.json").read_text())
    digests = summary["rank_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert digests[0] == weights_digest(load_official(out / "mum_final.pth"))
    ckpt = load_checkpoint(out / "checkpoint_00000003.pth")
    assert len(ckpt["rng"]) == 2  # one RNG state per rank
    # linear lr scaling uses the frame budget of both ranks (the tiny config sets an absolute lr; check the rule)
    assert cfg.peak_lr(2) == cfg.train.lr
    assert replace(cfg, train={"lr": None}).peak_lr(2) == pytest.approx(1.5e-4 * 8 * 2 / 256)


def test_cli_prints_config_and_is_a_recon_train_subcommand(tmp_path, capsys):
    from training.mum.cli import main

    assert main(["--preset", "smoke", "--set", "data.views=[2,8]", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["data"]["views"] == [2, 8] and printed["model"]["mask_ratio"] == 0.75
    assert main(["--preset", "smoke", "--set", "data.views=[1,8]", "--print-config"]) == 2
    assert "2 <= min" in capsys.readouterr().err
    from cli import main as recon_main

    with pytest.raises(SystemExit) as exc:
        recon_main(["train", "mum", "--help"])
    assert exc.value.code == 0
    assert "masked image modelling" in capsys.readouterr().out


def test_a_non_finite_loss_saves_the_last_good_state_and_stops_in_one_line(tmp_path, diverge_at):
    cfg = tiny_config(tmp_path / "run", iterations=4, checkpoint_every=100)
    diverge_at(2, lambda trainer: trainer.model).check(train, cfg)
