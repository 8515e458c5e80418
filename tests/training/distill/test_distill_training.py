"""End-to-end: the loss falls, a crash-and-resume run equals the uninterrupted one, torchrun with 2 ranks agrees."""

import json

import pytest
import torch
from distill_helpers import synthetic_batch, tiny_config

import backbone
from backbone.dune import DuneBackbone
from training.common.checkpoint import load_checkpoint
from training.distill.config import replace
from training.distill.student import weights_digest
from training.distill.train import DistillTrainer, train


def test_loss_on_a_fixed_batch_falls_by_half(tmp_path):
    cfg = replace(tiny_config(tmp_path), train={"iterations": 30, "warmup_fraction": 0.0, "tdrop": "none"})
    trainer = DistillTrainer(cfg)
    images = synthetic_batch(8, 28)
    losses = [trainer.step(images, None, it)["loss_all"] for it in range(30)]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] <= 0.5 * losses[0], losses


class CrashAt(Exception):
    pass


def test_crash_and_resume_reproduces_the_uninterrupted_run(tmp_path):
    full = train(tiny_config(tmp_path / "full"))
    assert full.iterations == 6 and full.final_checkpoint.is_file()

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
    a = load_checkpoint(full.final_checkpoint)["model"]
    b = load_checkpoint(resumed.final_checkpoint)["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key  # bit-exact, teacher statistics included
    ta = load_checkpoint(tmp_path / "full" / "checkpoint_00000006.pth")
    tb = load_checkpoint(tmp_path / "resumed" / "checkpoint_00000006.pth")
    assert torch.equal(ta["rng"][0]["generators"]["tdrop"], tb["rng"][0]["generators"]["tdrop"])
    assert ta["sampler"] == tb["sampler"]


def test_outputs_load_with_backbone_load(tmp_path):
    result = train(tiny_config(tmp_path, iterations=2))
    model = backbone.load(result.final_checkpoint)
    assert isinstance(model, DuneBackbone)
    assert sorted(model.projectors) == ["dino2reg_vitlarge_14", "mast3r_vitlarge_16"]
    assert dict(model.teacher_norms["dino2reg_vitlarge_14"].normalizers).keys() == {"cls", "patch"}
    assert dict(model.teacher_norms["mast3r_vitlarge_16"].normalizers).keys() == {"patch"}
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["rank_digests"] == [weights_digest(model)]
    assert json.loads((tmp_path / "config.json").read_text())["student"]["embed_dim"] == 32
    out = model(synthetic_batch(1, 28))
    assert out.shape == (1, 4, 32)
    # the training checkpoints themselves are loadable too (official layout + training state)
    assert isinstance(backbone.load(tmp_path / "checkpoint_00000002.pth"), DuneBackbone)


@pytest.mark.slow  # ~10 s quiet: two torchrun processes
def test_torchrun_two_ranks_agree(tmp_path, torchrun):
    out = tmp_path / "ddp"
    torchrun("distill", tiny_config(out, iterations=3, checkpoint_every=3))
    summary = json.loads((out / "summary.json").read_text())
    digests = summary["rank_digests"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert digests[0] == weights_digest(backbone.load(out / "dune_final.pth"))
    ckpt = load_checkpoint(out / "checkpoint_00000003.pth")
    assert len(ckpt["rng"]) == 2  # one RNG state per rank
    assert ckpt["sampler"]["world_size"] == 2


def test_a_non_finite_loss_saves_the_last_good_state_and_stops_in_one_line(tmp_path, diverge_at):
    cfg = tiny_config(tmp_path / "run", iterations=4, checkpoint_every=100)
    diverge_at(2, lambda trainer: trainer.module).check(train, cfg)
