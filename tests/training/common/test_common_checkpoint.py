"""Checkpoints: atomic files, latest/prune, exact restoration of model, optimizer and every RNG."""

import argparse
import random

import numpy as np
import pytest
import torch
from torch import nn

from backbone.checkpoint import CheckpointError
from training.common.checkpoint import CheckpointManager, load_checkpoint
from training.common.data import InfiniteDistributedSampler
from training.common.schedule import WarmupCosine


def _draws(gen):
    legacy = float(np.random.rand())  # noqa: NPY002  (the global numpy RNG is what the checkpoint restores)
    return (random.random(), legacy, float(torch.rand(1)), float(torch.rand(1, generator=gen)))


class TestCheckpointManager:
    def test_save_resume_restores_everything(self, tmp_path):
        model = nn.Linear(3, 2)
        opt = torch.optim.AdamW(model.parameters(), lr=0.1)
        model(torch.randn(4, 3)).sum().backward()
        opt.step()
        gen = torch.Generator().manual_seed(5)
        sampler = InfiniteDistributedSampler(10, rank=0, world_size=1, seed=3, position=17)
        sched = WarmupCosine(base=1.0, final=0.0, total=10)
        mgr = CheckpointManager(tmp_path, keep=2)
        path = mgr.save(7, model=model, optimizer=opt, scheduler=sched, sampler=sampler, generators={"g": gen},
                        config={"a": 1}, extra={"args": argparse.Namespace(x=1)})  # fmt: skip
        expected = _draws(gen)

        model2 = nn.Linear(3, 2)
        opt2 = torch.optim.AdamW(model2.parameters(), lr=0.1)
        gen2 = torch.Generator().manual_seed(99)
        sampler2 = InfiniteDistributedSampler(10, rank=0, world_size=1, seed=0)
        random.random(), np.random.rand(), torch.rand(3)  # noqa: NPY002  (disturb the global RNGs)
        ckpt = mgr.resume(model=model2, optimizer=opt2, scheduler=sched, sampler=sampler2, generators={"g": gen2})
        assert ckpt["iter"] == 7 and ckpt["config"] == {"a": 1} and ckpt["args"].x == 1
        assert mgr.latest() == path and path.name == "checkpoint_00000007.pth"
        assert _draws(gen2) == expected
        for p, q in zip(model.parameters(), model2.parameters(), strict=True):
            assert torch.equal(p, q)
        assert torch.equal(opt.state_dict()["state"][0]["exp_avg"], opt2.state_dict()["state"][0]["exp_avg"])
        assert sampler2.position == 17 and sampler2.seed == 3

    def test_latest_prune_and_no_temp_files(self, tmp_path):
        mgr = CheckpointManager(tmp_path, keep=2)
        assert mgr.latest() is None and mgr.resume() is None
        for it in (2, 10, 4):
            mgr.save(it, model={"w": torch.zeros(1)})
        assert [i for i, _ in mgr.all()] == [4, 10]
        assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_00000004.pth", "checkpoint_00000010.pth"]

    def test_model_mismatch_names_keys(self, tmp_path):
        mgr = CheckpointManager(tmp_path)
        mgr.save(1, model={"weight": torch.zeros(2, 3)})
        with pytest.raises(CheckpointError, match="missing keys.*bias"):
            mgr.resume(model=nn.Linear(3, 2))

    def test_refuses_pickled_code(self, tmp_path):
        bad = tmp_path / "checkpoint_00000001.pth"
        torch.save({"model": {}, "evil": print}, bad)
        with pytest.raises(CheckpointError, match="refusing to load"):
            load_checkpoint(bad)
