"""The recon-tiny presets of the three recipes (issue 18): each trains on batches of its own data pipeline (rendered
``tools.synth`` scenes) and its loss falls over a few steps at the preset's size; their data seeds are disjoint.

Each test prints the model's parameter count and the CPU seconds per step (figures, not asserts)."""

import time

import torch
from torch.utils.data import default_collate

from training.distill.config import PRESETS as DISTILL
from training.distill.datasets import build_train_dataset as distill_dataset
from training.distill.train import DistillTrainer
from training.finetune.batch import PairBatch
from training.finetune.config import PRESETS as FINETUNE
from training.finetune.config import replace as finetune_replace
from training.finetune.train import FinetuneTrainer, build_train_dataset
from training.mum.config import PRESETS as MUM
from training.mum.config import replace as mum_replace
from training.mum.train import MuMTrainer, build_batches

HELD_OUT_SEED = 900_000  # the chain's held-out scenes start here


def _report(name: str, model: torch.nn.Module, cpu: float, steps: int) -> None:
    n = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    print(f"{name}: {n / 1e6:.2f} M parameters ({trainable / 1e6:.2f} M trained), {cpu / steps:.2f} CPU s/step")


def _steps(step, n: int) -> tuple[list[float], float]:
    t0 = time.process_time()
    losses = [step(it) for it in range(n)]
    return losses, time.process_time() - t0


def test_mum_tiny_loss_falls_on_its_rendered_sequences(tmp_path):
    base = MUM["tiny"]
    ds = base.data.datasets[0]
    cfg = mum_replace(base, data={"datasets": (type(ds)(**{**ds.__dict__, "synthetic_scenes": 2}),)},
                      train={"output_dir": str(tmp_path), "warmup": 0})  # fmt: skip
    torch.manual_seed(0)
    trainer = MuMTrainer(cfg)
    images = build_batches(cfg, 0)[0]["images"]
    assert images.shape[-1] == 128 and images.shape[1] >= 2
    losses, cpu = _steps(lambda it: trainer.step(images, it, torch.Generator().manual_seed(5))[0]["loss"], 6)
    _report("mum tiny", trainer.model, cpu, 6)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.9 * losses[0], losses


def test_distill_tiny_loss_falls_on_a_batch_of_its_pipeline(tmp_path):
    from training.distill.config import replace as distill_replace

    cfg = distill_replace(DISTILL["tiny"], train={"output_dir": str(tmp_path), "warmup_fraction": 0.0})
    cfg = distill_replace(cfg, data={"synthetic_images": 16})
    trainer = DistillTrainer(cfg)
    ds = distill_dataset(cfg.data, cfg.student.image_size)
    images = torch.stack([ds[i][0]["image"] for i in range(8)])
    assert images.shape[-2:] == (112, 112)
    losses, cpu = _steps(lambda it: trainer.step(images, None, it)["loss_all"], 12)
    _report("distill tiny (student)", trainer.model, cpu, 12)
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < 0.9 * losses[0], losses


def test_finetune_tiny_loss_falls_on_pairs_at_its_resolutions(tmp_path):
    base = FINETUNE["tiny"]
    sources = tuple(type(s)(**{**s.__dict__, "scenes": 1}) for s in base.data.sources)
    cfg = finetune_replace(base, data={"sources": sources, "val_sources": ()},
                           train={"output_dir": str(tmp_path), "warmup_fraction": 0.0})  # fmt: skip
    torch.manual_seed(0)
    trainer = FinetuneTrainer(cfg)
    dataset = build_train_dataset(cfg.data)
    batches = [PairBatch.from_collated(default_collate([dataset[(i, 7 * i, res)] for i in range(2)]))
               for res in cfg.data.resolutions]  # fmt: skip
    losses, cpu = _steps(lambda it: trainer.step([batches[it % 3]], it)["loss"], 9)
    _report("finetune tiny (decoder + heads on the frozen student)", trainer.model, cpu, 9)
    assert all(torch.isfinite(torch.tensor(losses)))
    # One loss per resolution: compare each aspect ratio's last visit with its first.
    for k in range(3):
        assert losses[6 + k] < losses[k], (k, losses)


def test_tiny_seeds_are_disjoint_from_each_other_and_from_the_held_out_scenes():
    mum = MUM["tiny"]
    mum_seeds = {mum.train.seed * 1000 + i for i in range(mum.data.datasets[0].synthetic_scenes)}
    fine = FINETUNE["tiny"].data
    fine_seeds = {s.seed + i for s in fine.sources for i in range(s.scenes)}
    val_seeds = {s.seed + i for s in fine.val_sources for i in range(s.scenes)}
    assert not mum_seeds & fine_seeds and not val_seeds & (mum_seeds | fine_seeds)
    assert max(mum_seeds | fine_seeds | val_seeds) < HELD_OUT_SEED
    assert min(mum_seeds | fine_seeds | val_seeds) > 0  # demo_data is `recon synth ... --seed 0`: never trained on


def test_a_mum_tiny_encoder_file_is_a_distillation_teacher(tmp_path):
    import backbone
    from training.distill.config import TeacherConfig
    from training.distill.teachers import build_teacher
    from training.mum.model import build_autoencoder

    torch.manual_seed(0)
    encoder = build_autoencoder(MUM["tiny"]).encoder
    path = backbone.save(encoder, tmp_path / "mum_backbone.pth")
    teacher = build_teacher(TeacherConfig("mum_tiny", "mum", checkpoint=str(path)))
    images = torch.rand(2, 3, 112, 112)
    feats = teacher(images, student_patch=14)
    assert set(feats) == {"patch"} and feats["patch"].shape == (2, 64, 128)  # 8 x 8 tokens, as the student's
    # The teacher sees the images resized by 16/14 (128 px), like the official MASt3R teacher.
    resized = torch.nn.functional.interpolate(images, size=(128, 128), mode="bicubic", align_corners=True)
    with torch.no_grad():
        expected = encoder.eval().forward_features(resized)["x_norm_patchtokens"]
    torch.testing.assert_close(feats["patch"], expected)
