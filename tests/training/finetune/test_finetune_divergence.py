"""A non-finite loss stops a finetuning with one clear line and keeps the last good weights; the release's DPT
widths train at the release's lr and write the official DUNE-MASt3R layout (issue 18, step 1)."""

import json
import math

import pytest
import torch
from finetune_helpers import tiny_config

import recon
from training.common.checkpoint import load_checkpoint
from training.common.config import to_dict
from training.common.run import TrainingDiverged
from training.finetune import cli
from training.finetune import train as train_module
from training.finetune.config import PRESETS, replace
from training.finetune.model import state_of

RELEASE_DPT = {"dpt_feature_dim": 256, "dpt_layer_dims": (96, 192, 384, 768)}


def _inf_from_step(monkeypatch, bad_step: int, steps: list[int]):
    """Make the criterion return inf from the ``bad_step``-th optimizer step on (2 micro-batches per step)."""
    real = train_module.criterion

    def criterion(*args, **kwargs):
        loss, details = real(*args, **kwargs)
        steps.append(1)
        return (loss * math.inf if len(steps) > 2 * bad_step else loss), details

    monkeypatch.setattr(train_module, "criterion", criterion)


def test_a_non_finite_loss_stops_the_run_and_saves_the_last_good_weights(tmp_path, monkeypatch):
    cfg = replace(tiny_config(tmp_path / "run", iterations=4, checkpoint_every=100), data={"val_sources": ()})
    seen = {}
    _inf_from_step(monkeypatch, 2, [])
    with pytest.raises(TrainingDiverged) as info:
        train_module.train(cfg, on_iteration=lambda it, trainer: seen.update(it=it, state=state_of(trainer.model)))
    err = info.value
    assert err.step == 2 and seen["it"] == 2
    message = str(err)
    assert "step 2" in message and "train.lr" in message and "train.clip_grad" in message and "bf16" in message
    assert err.checkpoint == tmp_path / "run" / "checkpoint_00000002.pth" and err.checkpoint.is_file()
    saved = load_checkpoint(err.checkpoint)
    assert saved["iter"] == 2
    # The bad step applied no update: the checkpoint holds the weights after step 2, all finite.
    for key, value in seen["state"].items():
        assert torch.equal(saved["model"][key], value), key
        assert torch.isfinite(saved["model"][key]).all(), key
    assert not (tmp_path / "run" / "final_model.pth").exists()


def test_the_cli_reports_divergence_in_one_line(tmp_path, monkeypatch, capsys):
    cfg = replace(tiny_config(tmp_path / "run", iterations=3), data={"val_sources": ()})
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps(to_dict(cfg)))
    _inf_from_step(monkeypatch, 1, [])
    assert cli.main(["--preset", "smoke", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: the loss is not finite at step 1"), err
    assert "checkpoint_00000001.pth" in err[0]


def test_smoke_release_keeps_the_smoke_run_but_with_release_widths_and_lr():
    smoke, release = PRESETS["smoke"], PRESETS["smoke_release"]
    assert (release.model.dpt_feature_dim, tuple(release.model.dpt_layer_dims)) == (256, (96, 192, 384, 768))
    assert release.train.lr == 1e-4 and release.data == smoke.data and release.loss == smoke.loss


@pytest.mark.slow
def test_release_widths_diverge_at_the_narrow_lr_and_train_at_the_release_lr(tmp_path, monkeypatch):
    """The reported bug, reproduced: release DPT widths at the narrow smoke's lr 2e-3 overflow (a clear
    ``TrainingDiverged``), at the release's 1e-4 the loss falls and the official layout is written."""
    base = dict(iterations=4, warmup_fraction=0.25, checkpoint_every=100)
    bad = replace(tiny_config(tmp_path / "bad", net=RELEASE_DPT, lr=2e-3, **base), data={"val_sources": ()})
    with pytest.raises(TrainingDiverged) as info:
        train_module.train(bad)
    assert info.value.step <= 3 and info.value.checkpoint.is_file()

    losses = []
    real_step = train_module.FinetuneTrainer.step

    def step(self, batches, it):
        metrics = real_step(self, batches, it)
        losses.append(metrics["loss"])
        return metrics

    monkeypatch.setattr(train_module.FinetuneTrainer, "step", step)
    good = replace(tiny_config(tmp_path / "good", net=RELEASE_DPT, lr=1e-4, **base), data={"val_sources": ()})
    result = train_module.train(good)
    assert all(math.isfinite(x) for x in losses) and losses[-1] < losses[0], losses
    assert result.layout == "dune_mast3r"
    model = recon.load_model(result.final_model)
    assert model.config.head.dpt_feature_dim == 256
