"""Fixtures shared by the training recipes' tests."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def torchrun(tmp_path):
    """``torchrun(recipe, cfg)``: train ``cfg`` with ``python -m training.<recipe> --preset smoke --config FILE`` on
    two CPU ranks (gloo) under torchrun, in ``tmp_path``; asserts exit code 0 and returns the ``CompletedProcess``.

    Three Python processes import torch (launcher + 2 ranks): several seconds on a loaded 2-core machine.
    """
    from training.common.config import save_json

    def launch(recipe: str, cfg) -> subprocess.CompletedProcess:
        cfg_file = save_json(cfg, tmp_path / "cfg.json")
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
        env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", f"training.{recipe}", "--preset", "smoke", "--config", str(cfg_file),
        ]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-4000:]
        return proc

    return launch


class Divergence:
    """A recipe's run made to diverge after ``step`` of its 4 steps: from then on ``module_of(trainer)`` gets NaN
    inputs (its first positional argument), so that step's loss is not finite."""

    def __init__(self, step: int, module_of) -> None:
        self.step, self.module_of = step, module_of
        self.trainer = None
        self.params: dict[int, dict[str, torch.Tensor]] = {}

    def on_iteration(self, it: int, trainer) -> None:
        module = self.module_of(trainer)
        self.trainer = trainer
        self.params[it] = {k: v.detach().clone() for k, v in module.named_parameters()}
        if it == self.step:
            module.register_forward_pre_hook(lambda m, args: (args[0] * math.nan, *args[1:]))

    def check(self, train, cfg) -> None:
        """``train(cfg)`` (4 iterations, no periodic checkpoint before ``step``) stops with a one-line
        ``TrainingDiverged`` naming the step and the checkpoint of the last good state; that checkpoint exists and
        holds finite weights; the bad step changed no parameter; ``train(cfg)`` again resumes from it and finishes."""
        from training.common.checkpoint import load_checkpoint
        from training.common.run import TrainingDiverged

        out = Path(cfg.train.output_dir)
        with pytest.raises(TrainingDiverged) as info:
            train(cfg, on_iteration=self.on_iteration)
        err, step = info.value, self.step
        message = str(err)
        assert "\n" not in message and message.startswith(f"the loss is not finite at step {step} "), message
        assert err.step == step and err.checkpoint == out / f"checkpoint_{step:08d}.pth", err.checkpoint
        assert message.endswith(f"the last good weights are in {err.checkpoint} (the run resumes from them)")
        assert sorted(p.name for p in out.glob("checkpoint_*.pth")) == [err.checkpoint.name]
        saved = load_checkpoint(err.checkpoint)
        assert saved["iter"] == step
        assert all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())
        now = dict(self.module_of(self.trainer).named_parameters())
        for key, before in self.params[step].items():
            assert torch.equal(now[key].detach(), before), key
        seen = []
        assert train(cfg, on_iteration=lambda it, tr: seen.append(it)).iterations == 4
        assert seen == list(range(step + 1, 5))  # resumed at the saved step


@pytest.fixture
def diverge_at():
    """``diverge_at(step, module_of) -> Divergence``."""
    return Divergence
