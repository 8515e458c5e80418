"""Loss, teacher statistics, teacher dropping, teachers, augmentations, datasets, CLI."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from distill_helpers import TINY_TEACHER, synthetic_batch
from PIL import Image

import backbone
from backbone.checkpoint import CheckpointError
from backbone.dune import TeacherNorm
from training.distill.augment import DuneTrainTransform, rrc_box
from training.distill.config import DataConfig, DatasetRoot, TeacherConfig
from training.distill.datasets import (
    PAPER_DATASETS,
    BalancedCollate,
    DataConfigError,
    build_train_dataset,
    items_per_batch,
)
from training.distill.losses import normalize_targets, per_teacher_loss, teacher_coefficients, token_loss
from training.distill.teachers import build_teacher, load_teacher_model


class TestLoss:
    def test_token_loss_by_hand(self):
        s = torch.tensor([[1.0, 0.0], [0.0, 3.0]])
        t = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
        loss, cos, sl1 = token_loss(s, t)
        # token 0: identical -> 0; token 1: orthogonal (cos term 1), smooth-L1 per channel 1.5 and 2.5 -> mean 2
        torch.testing.assert_close(cos, torch.tensor([0.0, 1.0]))
        torch.testing.assert_close(sl1, torch.tensor([0.0, 2.0]))
        torch.testing.assert_close(loss, torch.tensor([0.0, 1.5]))

    def test_per_teacher_averages_token_types(self):
        B, N, D = 2, 3, 4
        pred = {"a": torch.randn(B, 1 + N, D), "b": torch.randn(B, 1 + N, D)}
        tgt = {"a": {"cls": torch.randn(B, D), "patch": torch.randn(B, N, D)}, "b": {"patch": torch.randn(B, N, D)}}
        L, names, metrics = per_teacher_loss(pred, tgt)
        assert names == ["a", "b"] and L.shape == (2, B)
        cls = token_loss(pred["a"][:, 0], tgt["a"]["cls"])[0]
        patch_a = token_loss(pred["a"][:, 1:], tgt["a"]["patch"])[0].mean(1)
        patch_b = token_loss(pred["b"][:, 1:], tgt["b"]["patch"])[0].mean(1)
        torch.testing.assert_close(L[0], (cls + patch_a) / 2)
        torch.testing.assert_close(L[1], patch_b)
        assert metrics["loss/dist_b"] == pytest.approx(patch_b.mean().item())

    def test_shape_mismatch_is_named(self):
        with pytest.raises(ValueError, match="teacher a patch"):
            per_teacher_loss({"a": torch.zeros(1, 3, 4)}, {"a": {"patch": torch.zeros(1, 4, 4)}})


class TestTeacherDropping:
    def test_none_is_a_plain_mean(self):
        c = teacher_coefficients(torch.rand(3, 4), "none")
        torch.testing.assert_close(c, torch.full((3, 4), 1 / 12))

    def test_lowest_loss_keeps_the_highest_loss_teacher(self):
        L = torch.tensor([[0.1, 0.9, 0.5], [0.8, 0.2, 0.4], [0.3, 0.1, 0.7]])
        g = torch.Generator().manual_seed(0)
        c = teacher_coefficients(L, "lowest_loss", p=1.0, generator=g)
        torch.testing.assert_close(c, torch.tensor([[0, 1, 0], [1, 0, 0], [0, 0, 1]]) / 3.0)
        c0 = teacher_coefficients(L, "lowest_loss", p=0.0, generator=g)
        torch.testing.assert_close(c0, torch.full((3, 3), 1 / 9))
        # p=0.5: the kept fraction of the other teachers is about one half
        c5 = teacher_coefficients(torch.rand(3, 4000), "lowest_loss", p=0.5, generator=g)
        assert (c5 > 0).float().sum(0).mean().item() == pytest.approx(2.0, abs=0.05)

    def test_own_data(self):
        c = teacher_coefficients(torch.rand(2, 3), "own_data", image_domains=["dinov2", "mast3r", "mast3r"],
                                 teacher_domains=["dinov2", "mast3r"])  # fmt: skip
        torch.testing.assert_close(c, torch.tensor([[1.0, 0, 0], [0, 1, 1]]) / 3)
        with pytest.raises(ValueError, match="supervised by no teacher"):
            teacher_coefficients(torch.rand(1, 1), "own_data", image_domains=["multihmr"], teacher_domains=["dinov2"])
        with pytest.raises(ValueError, match="unknown teacher-dropping"):
            teacher_coefficients(torch.rand(1, 1), "random")


class TestTeacherStatistics:
    def test_momentum_one_sets_batch_statistics(self):
        norm = TeacherNorm(("cls", "patch"), 4)
        x = torch.randn(3, 5, 4) * 3 + 2
        out = normalize_targets(norm, x, "patch", momentum=1.0, update=True)
        n = norm.normalizers["patch"]
        torch.testing.assert_close(n.mean, x.mean(dim=(0, 1)))
        torch.testing.assert_close(n.std, x.std(dim=(0, 1)))  # unbiased
        torch.testing.assert_close(out.mean(dim=(0, 1)), torch.zeros(4), atol=1e-5, rtol=0)

    def test_ema_and_eval(self):
        norm = TeacherNorm(("cls",), 2)
        x = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
        normalize_targets(norm, x, "cls", momentum=0.25, update=True)
        n = norm.normalizers["cls"]
        torch.testing.assert_close(n.mean, 0.25 * torch.tensor([2.0, 4.0]))
        torch.testing.assert_close(n.std, 0.75 + 0.25 * x.std(dim=0))
        before = n.mean.clone()
        out = normalize_targets(norm, x, "cls", momentum=0.5, update=False)
        assert torch.equal(n.mean, before)
        torch.testing.assert_close(out, (x - n.mean) / n.std)


class TestTeachers:
    def test_token_grids_match_the_student(self):
        images = synthetic_batch(2, 28)
        dino = build_teacher(TeacherConfig("d", "dinov2", random_overrides=TINY_TEACHER))
        mast3r = build_teacher(TeacherConfig("m", "mast3r", random_overrides=TINY_TEACHER))
        d, m = dino(images), mast3r(images)
        assert d["patch"].shape == (2, 4, 16) and d["cls"].shape == (2, 16) and m.keys() == {"patch"}
        assert m["patch"].shape == (2, 4, 16)  # 28 px upsampled to 32 for patch 16 -> 2x2 like the student
        assert not d["patch"].requires_grad and not d["patch"].is_inference()
        up = F.interpolate(images, size=(32, 32), mode="bicubic", align_corners=True)
        torch.testing.assert_close(m["patch"], mast3r.model(up))
        assert dino.model.config.interpolate_offset == 0.1 and not dino.model.config.interpolate_antialias
        assert not mast3r.training and all(not p.requires_grad for p in mast3r.parameters())

    def test_multihmr_checkpoint_key_map(self, tmp_path):
        enc = backbone.create("dinov2_vitl14", **TINY_TEACHER)
        state = {f"backbone.encoder.{k}": v for k, v in enc.state_dict().items()}
        state["mlp_classif.0.weight"] = torch.zeros(2, 2)  # Multi-HMR head keys are ignored
        torch.save({"model_state_dict": state}, tmp_path / "multiHMR.pt")
        loaded = load_teacher_model("multihmr", tmp_path / "multiHMR.pt")
        assert loaded.state_dict().keys() == enc.state_dict().keys()
        for k, v in enc.state_dict().items():
            assert torch.equal(loaded.state_dict()[k], v)
        torch.save({"model_state_dict": {"head.weight": torch.zeros(1)}}, tmp_path / "bad.pt")
        with pytest.raises(CheckpointError, match="no backbone.encoder"):
            load_teacher_model("multihmr", tmp_path / "bad.pt")

    def test_dinov2_hub_state_dict(self, tmp_path):
        enc = backbone.create("dinov2_vitl14_reg", **TINY_TEACHER)
        torch.save(enc.state_dict(), tmp_path / "dinov2_reg.pth")
        t = build_teacher(TeacherConfig("dino2reg_vitlarge_14", "dinov2", checkpoint=str(tmp_path / "dinov2_reg.pth")))
        assert t.model.register_tokens.shape == (1, 4, 16)
        assert t.model.config.interpolate_offset == 0.1  # DUNE's resampling, not the hub reg models'


class TestAugment:
    def test_shape_range_and_determinism(self):
        image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8))
        tf = DuneTrainTransform(28, (0.4, 1.0), color_aug=True)
        outs = [tf(image, torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
        assert outs[0].shape == (3, 28, 28) and outs[0].dtype == torch.float32
        assert all(o.min() >= 0 and o.max() <= 1 for o in outs)
        assert torch.equal(outs[0], outs[1]) and not torch.equal(outs[0], outs[2])

    def test_rrc_box_respects_area_and_bounds(self):
        g = torch.Generator().manual_seed(0)
        for _ in range(50):
            left, top, w, h = rrc_box(100, 60, g, (0.4, 1.0))
            assert 0 <= left and left + w <= 100 and 0 <= top and top + h <= 60
            assert 0.4 * 6000 * 0.9 <= w * h <= 6000


class TestDatasets:
    def test_registry_has_the_paper_datasets(self):
        totals = {}
        for info in PAPER_DATASETS.values():
            totals[info.domain] = totals.get(info.domain, 0) + info.train_images
        assert len(PAPER_DATASETS) == 19
        assert totals == {"dinov2": 18_492_301, "mast3r": 1_748_558, "multihmr": 476_608}

    def test_teacher_balanced_batches_from_folders(self, tmp_path):
        roots = {}
        for name, n in (("gldv2", 3), ("BlendedMVS", 5), ("agora", 2)):
            folder = tmp_path / name
            folder.mkdir()
            for i in range(n):
                Image.fromarray(np.full((40, 30, 3), 20 * i, np.uint8)).save(folder / f"{i}.png")
            roots[name] = DatasetRoot(root=str(folder))
        (tmp_path / "BlendedMVS" / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
        roots_file = tmp_path / "roots.json"
        roots_file.write_text(json.dumps({k: {"root": v.root, "layout": "folder"} for k, v in roots.items()}))
        cfg = DataConfig(datasets=("gldv2", "BlendedMVS", "agora"), roots_file=str(roots_file), num_workers=0)
        ds = build_train_dataset(cfg, 28)
        assert len(ds) == 6 and items_per_batch(ds, 7) == 3
        collate = BalancedCollate(7)
        batch = collate([ds[(i, 100 + i)] for i in range(3)])
        assert batch["image"].shape == (7, 3, 28, 28)
        assert batch["domain"] == ["dinov2"] * 3 + ["mast3r"] * 3 + ["multihmr"]  # 3 + 3 + 1 (truncated)
        skipped = sum(int(collate([ds[(i, 0)]])["skipped"]) for i in range(len(ds)))
        assert skipped == 1  # broken.jpg, met once in a pass over the largest domain

    def test_missing_root_is_a_clear_error(self, tmp_path):
        with pytest.raises(DataConfigError, match=r"no location for dataset\(s\) \['in19k'\]"):
            build_train_dataset(DataConfig(datasets=("in19k",)), 28)
        with pytest.raises(DataConfigError, match="give its 'domain'"):
            (tmp_path / "x").mkdir()
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x" / "a.png")
            build_train_dataset(DataConfig(datasets=("mine",), roots={"mine": DatasetRoot(str(tmp_path / "x"))}), 28)


class TestCli:
    def run(self, *args):
        return subprocess.run(
            [sys.executable, "-m", "recon", "train", "distill", *args], capture_output=True, text=True
        )

    def test_print_config_with_overrides(self):
        proc = self.run("--preset", "smoke", "--set", "train.lr=0.5", "--set", "student.depth=3", "--print-config")
        assert proc.returncode == 0, proc.stderr
        cfg = json.loads(proc.stdout)
        assert cfg["train"]["lr"] == 0.5 and cfg["student"]["depth"] == 3 and len(cfg["teachers"]) == 2

    def test_bad_key_is_a_user_error(self):
        proc = self.run("--set", "train.lrr=1", "--print-config")
        assert proc.returncode == 2 and "no field 'train.lrr'" in proc.stderr and "Traceback" not in proc.stderr
