"""Warm-up + cosine schedule values, AdamW parameter groups, per-parameter gradient clipping."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from training.common.optim import build_adamw, clip_grad_per_param, param_groups
from training.common.schedule import WarmupCosine


class TestWarmupCosine:
    def test_matches_linspace_then_cosine(self):
        s = WarmupCosine(base=1.0, final=0.1, total=10, warmup=4)
        # warm-up = linspace(0, base, warmup) (end point included), then cosine over the remaining 6 iterations
        expected = np.concatenate([np.linspace(0.0, 1.0, 4), 0.1 + 0.45 * (1 + np.cos(np.pi * np.arange(6) / 6))])
        np.testing.assert_allclose([s(i) for i in range(10)], expected, rtol=0, atol=1e-12)

    def test_hand_values_and_floor(self):
        s = WarmupCosine(base=2.0, final=0.0, total=5, warmup=0)
        assert s(0) == 2.0
        assert s(1) == pytest.approx(1.0 + math.cos(math.pi / 5))
        assert s(5) == pytest.approx(0.0) and s(100) == pytest.approx(0.0)

    def test_apply_sets_every_group(self):
        opt = torch.optim.SGD([{"params": [nn.Parameter(torch.zeros(1))]}, {"params": [nn.Parameter(torch.zeros(1))]}])
        lr = WarmupCosine(base=1.0, final=0.0, total=4, warmup=2).apply(opt, 1)
        assert lr == 1.0 and [g["lr"] for g in opt.param_groups] == [1.0, 1.0]

    def test_bad_arguments(self):
        with pytest.raises(ValueError, match="warmup"):
            WarmupCosine(base=1, final=0, total=3, warmup=4)


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 4)
        self.norm = nn.LayerNorm(4)
        self.token = nn.Parameter(torch.zeros(1, 2, 4))
        self.frozen = nn.Parameter(torch.zeros(4, 4), requires_grad=False)


class TestOptim:
    def test_decay_on_matrices_only(self):
        groups = param_groups(Tiny(), 0.03)
        assert groups[0]["param_names"] == ["token", "lin.weight"] and groups[0]["weight_decay"] == 0.03
        assert groups[1]["param_names"] == ["lin.bias", "norm.weight", "norm.bias"]
        assert groups[1]["weight_decay"] == 0.0

    def test_build_adamw(self):
        opt = build_adamw(Tiny(), lr=0.1, weight_decay=0.5, betas=(0.9, 0.99), eps=1e-15)
        assert [len(g["params"]) for g in opt.param_groups] == [2, 3]
        assert opt.param_groups[0]["betas"] == (0.9, 0.99) and opt.param_groups[0]["eps"] == 1e-15

    def test_clip_per_parameter(self):
        a, b, c = (nn.Parameter(torch.zeros(2)) for _ in range(3))
        a.grad = torch.tensor([3.0, 4.0])  # norm 5 -> scaled to norm ~1
        b.grad = torch.tensor([0.3, 0.4])  # norm 0.5 -> untouched
        norms = clip_grad_per_param([a, b, c], 1.0)
        torch.testing.assert_close(norms, torch.tensor([5.0, 0.5]))
        torch.testing.assert_close(a.grad, torch.tensor([3.0, 4.0]) / (5 + 1e-6))
        torch.testing.assert_close(b.grad, torch.tensor([0.3, 0.4]), rtol=0, atol=0)
        assert c.grad is None
