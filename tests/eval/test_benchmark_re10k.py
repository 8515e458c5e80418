"""End to end through ``recon eval re10k`` on a RealEstate10K-layout dataset."""

import json

import numpy as np
import pytest

from cli import main
from recon.datasets.data import DatasetError
from recon.datasets.re10k import Re10kReader, read_camera_file
from tools.eval.benchmark import BenchmarkOptions, run_benchmark
from tools.eval.runner import load_results

from .helpers import Interrupting, independent_metrics
from .layouts import write_re10k_layout

CLIPS = {"0a1b2c3d4e5f6a7b": 30, "1111222233334444": 24, "5555666677778888": 40, "9999aaaabbbbcccc": 5,
         "ddddeeeeffff0000": 30, "notinsplit000000": 30}  # fmt: skip
GOOD = {"0a1b2c3d4e5f6a7b", "1111222233334444", "5555666677778888"}


@pytest.fixture(scope="module")
def re10k_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("re10k")
    gt = write_re10k_layout(root, CLIPS, missing_frames=("ddddeeeeffff0000",))
    split = root / "re10k_test_ids.txt"
    split.write_text("\n".join(c for c in CLIPS if c != "notinsplit000000") + "\n")
    return root, split, gt


def cli(*args):
    return main(["-q", "eval", "re10k", *map(str, args)])


def test_reader_conversion(re10k_root):
    root, _, gt = re10k_root
    ts, intr, w2c = read_camera_file(root / "test" / "0a1b2c3d4e5f6a7b.txt")
    assert len(ts) == 30 and intr.shape == (30, 4) and w2c.shape == (30, 3, 4)
    frames = Re10kReader(root).load_frames("re10k", "0a1b2c3d4e5f6a7b", [int(ts[3]), int(ts[0])])
    want_ts, want_T, want_K = gt["0a1b2c3d4e5f6a7b"]
    np.testing.assert_allclose(frames[0].T_world_cam, want_T[3], atol=1e-12)
    np.testing.assert_allclose(frames[1].T_world_cam, want_T[0], atol=1e-12)
    np.testing.assert_allclose(frames[0].K, want_K, atol=1e-12)
    assert frames[0].image_size == (48, 64) and frames[0].rel_path == f"frames/test/0a1b2c3d4e5f6a7b/{want_ts[3]}.png"


def test_oracle_100_and_filters(re10k_root, tmp_path, capsys):
    root, split, _ = re10k_root
    out = tmp_path / "run"
    assert cli("--root", root, "--split-file", split, "--oracle", "--out", out) == 0
    assert "| re10k |" in capsys.readouterr().out
    recs = {r["sequence"]: r for r in load_results(out)}
    assert set(recs) == GOOD
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mean"]["RRA@15"] == summary["mean"]["RTA@15"] == summary["mean"]["mAA(30)"] == 100.0
    dropped = json.loads((out / "sampling.json").read_text())["dropped"]["re10k"]
    assert dropped == {"no_frames": ["ddddeeeeffff0000"], "too_few_frames": ["9999aaaabbbbcccc"]}
    # Without a split file every camera file counts (with a warning), so the extra clip appears.
    out2 = tmp_path / "all"
    assert cli("--root", root, "--oracle", "--out", out2) == 0
    assert {r["sequence"] for r in load_results(out2)} == GOOD | {"notinsplit000000"}


def test_noisy_oracle_and_sampling_reuse(re10k_root, tmp_path):
    root, split, _ = re10k_root
    a, b = tmp_path / "a", tmp_path / "b"
    args = ["--root", root, "--split-file", split, "--oracle", "--oracle-rot-noise", 8, "--oracle-trans-noise", 0.3]
    assert cli(*args, "--out", a) == 0
    summary = json.loads((a / "summary.json").read_text())
    recs = {(r["category"], r["sequence"]): r for r in load_results(a)}
    per_cat, _ = independent_metrics(recs)
    for k in ("RRA@15", "RTA@15", "mAA(30)"):
        assert summary["mean"][k] == pytest.approx(per_cat["re10k"][k], abs=1e-9)
    assert 1 < summary["mean"]["mAA(30)"] < 99
    assert cli(*args, "--sampling", a / "sampling.json", "--out", b) == 0
    for r in load_results(b):
        assert r["frame_ids"] == recs[("re10k", r["sequence"])]["frame_ids"]
        assert r["frame_ids"] == sorted(r["frame_ids"])  # pd recipe: sorted by path (same-length timestamps)


def test_resume(re10k_root, tmp_path):
    root, split, _ = re10k_root
    reader = Re10kReader(root, split_file=split)
    out = tmp_path / "resume"
    first = Interrupting(stop_after=2)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(reader, first, out, BenchmarkOptions())
    second = Interrupting()
    stats, summary = run_benchmark(reader, second, out, BenchmarkOptions())
    assert (stats.skipped, stats.done) == (2, 1) and len(second.calls) == 1
    assert summary["complete"] and summary["mean"]["mAA(30)"] == 100.0


def test_errors(re10k_root, tmp_path, capsys):
    root, split, _ = re10k_root
    assert cli("--root", tmp_path, "--oracle", "--out", tmp_path / "o") == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli("--root", root, "--split-file", tmp_path / "none.txt", "--oracle", "--out", tmp_path / "o") == 2
    bad = tmp_path / "bad" / "test"
    bad.mkdir(parents=True)
    (bad / "x.txt").write_text("url\n1 2 3\n")
    with pytest.raises(DatasetError, match="19 values"):
        read_camera_file(bad / "x.txt")
