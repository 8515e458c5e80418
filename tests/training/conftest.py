"""Fixtures shared by the training recipes' tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

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
