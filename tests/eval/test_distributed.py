"""A real 2-process torchrun (gloo) run: each rank takes its shard, rank 0 merges the results."""

import json
import os
import subprocess
import sys

import pytest

from tools.eval.runner import load_results

from .test_benchmark_co3d import CATS, GOOD, co3d_root  # noqa: F401  (module fixture)


# Three Python processes import torch (launcher + 2 ranks): ~6 s on an idle machine, more on a loaded one.
@pytest.mark.slow
def test_torchrun_two_ranks(co3d_root, tmp_path):  # noqa: F811
    out = tmp_path / "dist"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "recon", "-q", "eval", "co3d", "--root", str(co3d_root[0]), "--categories", *CATS,
        "--oracle", "--oracle-rot-noise", "4", "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(p.name for p in out.glob("results*.jsonl")) == [
        "results.shard-0-of-2.jsonl",
        "results.shard-1-of-2.jsonl",
    ]
    shard0 = [json.loads(ln)["sequence"] for ln in (out / "results.shard-0-of-2.jsonl").read_text().splitlines()]
    assert len(shard0) == 4  # round robin over 7 sequences
    assert {(r["category"], r["sequence"]) for r in load_results(out)} == GOOD
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"] and summary["mean"]["sequences"] == 7
    assert proc.stdout.count("| **mean** |") == 1  # only rank 0 prints the table
