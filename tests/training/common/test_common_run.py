"""``training.common.run``: what every recipe's ``train`` does around its loop (single-process behaviour; the
recipes' torchrun tests cover two ranks)."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from training.common.distributed import DistInfo
from training.common.run import agreed_digests, all_ranks_finite, seed_everything, start_run, wrap_ddp


@dataclass(frozen=True)
class _Train:
    output_dir: str = ""
    seed: int = 3
    device: str = "cpu"


@dataclass(frozen=True)
class _Config:
    train: _Train = field(default_factory=_Train)
    note: str = "x"


def _draws():
    return random.random(), np.random.random(), torch.rand(3)  # noqa: NPY002  (seed_everything seeds the legacy RNG)


def test_seed_everything_makes_python_numpy_and_torch_repeat():
    seed_everything(11)
    a = _draws()
    seed_everything(11)
    b = _draws()
    seed_everything(12)
    c = _draws()
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
    assert a[0] != c[0] and not torch.equal(a[2], c[2])


def test_start_run_single_process(tmp_path, monkeypatch):
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    cfg = _Config(train=_Train(output_dir=str(tmp_path / "run" / "a")))
    info, out = start_run(cfg)
    assert info.rank == 0 and info.world_size == 1 and not info.enabled and info.device == torch.device("cpu")
    assert out == tmp_path / "run" / "a"
    assert json.loads((out / "config.json").read_text()) == {
        "train": {"output_dir": str(out), "seed": 3, "device": "cpu"},
        "note": "x",
    }
    first = torch.rand(4)
    seed_everything(3)  # rank 0 is seeded with train.seed + 0
    assert torch.equal(first, torch.rand(4))


def test_wrap_ddp_without_a_process_group_is_the_module_itself():
    module = torch.nn.Linear(2, 2)
    assert wrap_ddp(module, DistInfo()) is module
    assert wrap_ddp(module, DistInfo(), find_unused_parameters=True) is module


@pytest.mark.parametrize(
    "finite, expected",
    [
        (True, True),
        (False, False),
        (torch.isfinite(torch.tensor(1.0)), True),
        (torch.isfinite(torch.tensor(np.inf)), False),
    ],
)
def test_all_ranks_finite_single_process(finite, expected):
    assert all_ranks_finite(finite, DistInfo()) is expected


def test_agreed_digests_single_process():
    assert agreed_digests("abc") == ["abc"]
