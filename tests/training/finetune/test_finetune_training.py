"""End-to-end finetuning: loss falls, an overfit aligns the point maps, the backbone stays bit-identical, exact
resume, torchrun with 2 gloo ranks, and the result runs through ``recon run``."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from finetune_helpers import tiny_config
from torch.utils.data import default_collate

import recon
from training.common.checkpoint import load_checkpoint
from training.finetune.batch import PairBatch
from training.finetune.config import replace
from training.finetune.losses import pointmap_error
from training.finetune.model import trainable_digest
from training.finetune.train import FinetuneTrainer, build_train_dataset, train

REPO = Path(__file__).resolve().parents[3]


def fixed_batch(cfg, n=2, res=(56, 42)):
    dataset = build_train_dataset(cfg.data)
    return PairBatch.from_collated(default_collate([dataset[(i, 100 + i, res)] for i in range(n)]))


@torch.no_grad()
def error_on(trainer, batch):
    trainer.net.eval()
    pred1, pred2 = trainer.net(batch.view1.img, batch.view2.img, False)
    return pointmap_error(pred1, pred2, batch.in_frame_of_view1()).mean().item()


def test_overfit_a_fixed_batch_loss_falls_and_pointmaps_align(tmp_path):
    steps = 50
    train = {"iterations": steps, "warmup_fraction": 0.0, "accum_iter": 1, "lr": 5e-3, "min_lr": 5e-3}
    cfg = replace(tiny_config(tmp_path), train=train)
    # Centred crops: the 0.5x threshold was set on them (MASt3R's random crops zoom in, a harder fixed batch).
    cfg = replace(cfg, data={"color_jitter": False, "aug_crop": "centred"})
    trainer = FinetuneTrainer(cfg)
    batch = fixed_batch(cfg)
    backbone_before = trainable_digest(trainer.model.backbone)
    before = error_on(trainer, batch)
    losses = [trainer.step([batch], it)["loss"] for it in range(steps)]
    after = error_on(trainer, batch)
    print(f"normalised 3D error {before:.4f} -> {after:.4f}; loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    assert all(torch.isfinite(torch.tensor(losses)))
    assert min(losses[-5:]) < losses[0] - 1.0, losses  # the confidence term makes the loss go negative
    assert after < 0.5 * before, (before, after)
    assert trainable_digest(trainer.model.backbone) == backbone_before  # frozen: bit-identical
    assert not any(p.requires_grad for p in trainer.model.backbone.parameters())


class CrashAt(Exception):
    pass


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """The uninterrupted tiny run (4 steps of 2 x 2 pairs, validation every 2)."""
    root = tmp_path_factory.mktemp("finetune")
    return root, train(tiny_config(root / "full"))


def test_crash_and_resume_reproduces_the_uninterrupted_run(full_run, tmp_path):
    root, full = full_run
    assert full.iterations == 4 and full.final_model.is_file() and full.layout == "recon"
    assert set(full.validation) == {"val_held_out/pts3d_err", "val_held_out/match_acc", "val_held_out/loss"}

    def crash(it, trainer):
        if it == 3:  # after step 3, before anything is saved for it: the last checkpoint is at 2
            raise CrashAt

    cfg = tiny_config(tmp_path / "resumed")
    with pytest.raises(CrashAt):
        train(cfg, on_iteration=crash)
    seen = []
    resumed = train(cfg, on_iteration=lambda it, tr: seen.append(it))
    assert seen == [3, 4]
    a, b = load_checkpoint(full.final_model)["model"], load_checkpoint(resumed.final_model)["model"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ta = load_checkpoint(root / "full" / "checkpoint_00000004.pth")
    tb = load_checkpoint(tmp_path / "resumed" / "checkpoint_00000004.pth")
    assert ta["sampler"] == tb["sampler"]
    assert not any(k.startswith("backbone.") for k in ta["model"])  # training checkpoints skip the frozen part
    assert full.validation == resumed.validation


@pytest.mark.slow  # ~10 s quiet: two torchrun processes
def test_torchrun_two_gloo_ranks(tmp_path, torchrun):
    out = tmp_path / "ddp"
    torchrun("finetune", tiny_config(out, iterations=2, checkpoint_every=2, val_every=2))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations"] == 2
    assert len(summary["rank_digests"]) == 2 and len(set(summary["rank_digests"])) == 1  # ranks agree
    ckpt = load_checkpoint(out / "checkpoint_00000002.pth")
    assert len(ckpt["rng"]) == 2 and ckpt["sampler"]["world_size"] == 2
    model = recon.load_model(out / "final_model.pth")
    assert model.backbone.spec.name == "dune_vits14"


def test_the_finetuned_checkpoint_runs_through_recon_run(full_run, tmp_path):
    _, result = full_run
    photos = tmp_path / "photos"  # four of demo_data/orbit's ten views keep the CPU run short
    photos.mkdir()
    for src in sorted((REPO / "demo_data" / "orbit").glob("*.jpg"))[:4]:
        shutil.copy(src, photos / src.name)
    glb = tmp_path / "x.glb"
    from cli import main

    # Dense alignment: a 4-step random-ish model gives no reliable matches for the sparse one.
    code = main(["-q", "run", str(photos), "--checkpoint", str(result.final_model), "--out", str(glb),
                 "--image-size", "224", "--graph", "swin-2", "--align", "dense", "--device", "cpu",
                 "--conf-thr", "0"])  # fmt: skip
    assert code == 0
    import trimesh

    scene = trimesh.load(glb)
    assert len(scene.geometry) > 0
