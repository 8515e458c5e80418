"""End to end on a CO3D-layout dataset: oracle scores, sampling reproducibility, resume, shards, CLI."""

import json

import numpy as np
import pytest

from cli import main
from recon.datasets.co3d import Co3dReader
from tools.eval.benchmark import BenchmarkOptions, run_benchmark
from tools.eval.runner import load_results, summarize

from .helpers import Interrupting, independent_metrics
from .layouts import SeqSpec, write_co3d_layout

CATS = ["apple", "bench", "chair"]
GOOD = {("apple", "a1"), ("apple", "a2"), ("bench", "b1"), ("bench", "b2"), ("bench", "b3"), ("chair", "c1"),
        ("chair", "c2")}  # fmt: skip


@pytest.fixture(scope="module")
def co3d_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("co3d3")
    gt = write_co3d_layout(
        root,
        {
            "apple": [SeqSpec("a1"), SeqSpec("apple_lowq", quality=0.5), SeqSpec("a2", yaw0_deg=10),
                      SeqSpec("apple_short", n_frames=49)],
            "bench": [SeqSpec("b1", yaw0_deg=3), SeqSpec("bench_badT", bad_T_frame=20), SeqSpec("b2"),
                      SeqSpec("b3", n_frames=60, yaw0_deg=-30, yaw_step_deg=5.0)],
            "chair": [SeqSpec("c1"), SeqSpec("chair_mask", empty_mask_frame=0), SeqSpec("c2", yaw0_deg=5),
                      SeqSpec("chair_train", split="train")],
        },
    )  # fmt: skip
    return root, gt


def cli(*args):
    return main(["-q", "eval", *map(str, args)])


def records(out):
    return {(r["category"], r["sequence"]): r for r in load_results(out)}


def test_oracle_scores_100_and_filters_drop_decoys(co3d_root, tmp_path, capsys):
    root, gt = co3d_root
    out = tmp_path / "run"
    assert cli("co3d", "--root", root, "--categories", *CATS, "--oracle", "--out", out) == 0
    assert "| **mean** |" in capsys.readouterr().out
    recs = records(out)
    assert set(recs) == GOOD
    summary = json.loads((out / "summary.json").read_text())
    assert summary["complete"]
    for row in list(summary["categories"].values()) + [summary["mean"]]:
        assert row["RRA@15"] == row["RTA@15"] == row["mAA(30)"] == 100.0
    assert summary["mean"]["sequences"] == 7 and summary["mean"]["pairs"] == 7 * 45
    sampling = json.loads((out / "sampling.json").read_text())
    assert sampling["dropped"]["apple"] == {
        "low_quality": ["apple_lowq"], "too_few_frames": ["apple_short"], "bad_translation": []
    }  # fmt: skip
    assert sampling["dropped"]["bench"]["bad_translation"] == ["bench_badT"]
    assert sampling["dropped"]["chair"]["too_few_frames"] == ["chair_mask"]  # empty mask -> 49 frames (pd recipe)
    # The record holds frame ids as annotated, with their GT cameras, and K of the 64x48 images.
    r = recs[("bench", "b3")]
    assert len(r["frame_ids"]) == 10 and r["frame_ids"] == sorted(r["frame_ids"])  # pd: sorted by path
    np.testing.assert_allclose(r["T_world_cam_gt"], gt[("bench", "b3")][r["frame_ids"]], atol=1e-12)
    np.testing.assert_allclose(r["K_gt"][0], [[48, 0, 32], [0, 48, 24], [0, 0, 1]])
    assert len(r["rot_err_deg"]) == len(r["trans_err_deg"]) == 45
    assert r["seconds"] >= 0 and r["peak_rss_mb"] > 0
    csv = (out / "summary.csv").read_text().splitlines()
    assert csv[0].startswith("category,sequences,pairs,RRA@5") and [ln.split(",")[0] for ln in csv[1:]] == [
        *CATS,
        "mean",
    ]


def test_vggt_recipe_keeps_empty_mask_sequence(co3d_root, tmp_path):
    out = tmp_path / "vggt"
    assert cli("co3d", "--root", co3d_root[0], "--categories", *CATS, "--oracle", "--recipe", "vggt", "--out", out) == 0
    assert set(records(out)) == GOOD | {("chair", "chair_mask")}


def test_noisy_oracle_matches_independent_computation(co3d_root, tmp_path):
    out = tmp_path / "noisy"
    args = ["co3d", "--root", co3d_root[0], "--categories", *CATS, "--oracle"]
    assert cli(*args, "--oracle-rot-noise", 6, "--oracle-trans-noise", 0.2, "--out", out) == 0
    summary = json.loads((out / "summary.json").read_text())
    per_cat, mean = independent_metrics(records(out))
    for cat in CATS:
        for k in ("RRA@15", "RTA@15", "mAA(30)"):
            assert summary["categories"][cat][k] == pytest.approx(per_cat[cat][k], abs=1e-9)
    for k in ("RRA@15", "RTA@15", "mAA(30)"):
        assert summary["mean"][k] == pytest.approx(mean[k], abs=1e-9)
    assert 5 < summary["mean"]["mAA(30)"] < 95  # the noise really bites, and not everything fails
    # Same noise on a rerun in a fresh folder: the oracle's noise is seeded per sequence.
    out2 = tmp_path / "noisy2"
    assert cli(*args, "--oracle-rot-noise", 6, "--oracle-trans-noise", 0.2, "--out", out2) == 0
    again = json.loads((out2 / "summary.json").read_text())["mean"]
    for k in ("RRA@5", "RRA@15", "RTA@15", "RTA@30", "mAA(30)"):
        assert again[k] == summary["mean"][k]


def test_sampling_file_reproduces_frames(co3d_root, tmp_path):
    root = co3d_root[0]
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    assert cli("co3d", "--root", root, "--categories", *CATS, "--oracle", "--out", a) == 0
    # Reuse a's sampling file for one category in another folder; frames must be identical.
    assert cli("co3d", "--root", root, "--categories", "bench", "--oracle", "--sampling", a / "sampling.json",
               "--out", b) == 0  # fmt: skip
    ra, rb = records(a), records(b)
    assert set(rb) == {k for k in GOOD if k[0] == "bench"}
    for k in rb:
        assert rb[k]["frame_ids"] == ra[k]["frame_ids"]
    # A fresh sampling with the same seed is byte-identical; another seed draws other frames.
    assert cli("co3d", "--root", root, "--categories", *CATS, "--oracle", "--out", c) == 0
    assert (c / "sampling.json").read_bytes() == (a / "sampling.json").read_bytes()
    d = tmp_path / "d"
    assert cli("co3d", "--root", root, "--categories", *CATS, "--oracle", "--seed", 1, "--out", d) == 0
    assert any(records(d)[k]["frame_ids"] != ra[k]["frame_ids"] for k in GOOD)
    # Asking an existing sampling file for another seed is an error, not a silent mismatch.
    assert cli("co3d", "--root", root, "--oracle", "--seed", 1, "--sampling", a / "sampling.json", "--out", d) == 2


def test_interrupted_run_resumes_without_recomputing(co3d_root, tmp_path):
    reader = Co3dReader(co3d_root[0])
    opts = BenchmarkOptions(categories=CATS)
    out = tmp_path / "resume"
    first = Interrupting(stop_after=3)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(reader, first, out, opts)
    assert len(records(out)) == 3
    # A writer killed mid-line leaves a torn tail: it is cut and that sequence recomputed.
    with open(out / "results.jsonl", "a") as f:
        f.write('{"category": "chair", "sequ')
    second = Interrupting()
    stats, summary = run_benchmark(reader, second, out, opts)
    assert stats.skipped == 3 and stats.done == 4
    assert not set(first.calls) & set(second.calls)
    assert sorted(first.calls + second.calls) == sorted(s for _, s in GOOD)
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 7 and all(json.loads(ln) for ln in lines)
    assert summary["complete"] and summary["mean"]["RRA@15"] == 100.0
    # A third run has nothing left to do.
    third = Interrupting()
    assert run_benchmark(reader, third, out, opts)[0].done == 0 and third.calls == []


def test_resume_with_other_predictor_is_refused(co3d_root, tmp_path):
    out = tmp_path / "mismatch"
    assert cli("co3d", "--root", co3d_root[0], "--categories", "apple", "--oracle", "--out", out) == 0
    assert cli("co3d", "--root", co3d_root[0], "--categories", "apple", "--oracle", "--oracle-rot-noise", 1,
               "--out", out) == 2  # fmt: skip


def test_shards_merge_to_the_full_result(co3d_root, tmp_path, capsys):
    root = co3d_root[0]
    full, sharded = tmp_path / "full", tmp_path / "sharded"
    noise = ["--oracle-rot-noise", 5]
    assert cli("co3d", "--root", root, "--categories", *CATS, "--oracle", *noise, "--out", full) == 0
    assert (
        cli("co3d", "--root", root, "--categories", *CATS, "--oracle", *noise, "--shard", "1/3", "--out", sharded) == 0
    )
    partial = json.loads((sharded / "summary.json").read_text())
    assert not partial["complete"] and len(partial["missing"]) == 7 - 2  # shard 1 of 3 holds items 1 and 4
    for i in (0, 2):
        assert cli("co3d", "--root", root, "--categories", *CATS, "--oracle", *noise, "--shard", f"{i}/3",
                   "--out", sharded) == 0  # fmt: skip
    assert sorted(p.name for p in sharded.glob("results*.jsonl")) == [f"results.shard-{i}-of-3.jsonl" for i in range(3)]
    merged = summarize(sharded)
    ref = json.loads((full / "summary.json").read_text())
    for cat in CATS:
        for k in ("RRA@5", "RRA@15", "RTA@15", "mAA(30)", "pairs"):
            assert merged["categories"][cat][k] == ref["categories"][cat][k]
    capsys.readouterr()
    assert cli("summarize", sharded) == 0
    assert "| **mean** |" in capsys.readouterr().out
    assert cli("co3d", "--root", root, "--oracle", "--shard", "3/3", "--out", sharded) == 2


def test_bad_inputs_are_user_errors(co3d_root, tmp_path, capsys):
    assert cli("co3d", "--root", tmp_path / "nope", "--oracle", "--out", tmp_path / "o") == 2
    assert "is not a folder" in capsys.readouterr().err
    assert cli("co3d", "--root", co3d_root[0], "--oracle", "--out", tmp_path / "o") == 2  # 38 categories absent
    assert "pass --categories" in capsys.readouterr().err
    assert cli("co3d", "--root", co3d_root[0], "--categories", "pear", "--oracle", "--out", tmp_path / "o") == 2


class FailsOnOne(Interrupting):
    """An oracle whose model raises on one sequence (e.g. out of memory, or no usable matches)."""

    def __init__(self, bad):
        super().__init__()
        self.bad = bad

    def predict(self, frames):
        if frames[0].rel_path.split("/")[1] == self.bad:
            raise RuntimeError("no usable matches")
        return super().predict(frames)


def test_a_failing_sequence_is_recorded_and_the_run_goes_on(co3d_root, tmp_path):
    reader = Co3dReader(co3d_root[0])
    bad_cat, bad = sorted(GOOD)[0]
    out = tmp_path / "failing"
    stats, summary = run_benchmark(reader, FailsOnOne(bad), out, BenchmarkOptions(categories=CATS))
    assert stats.done == len(GOOD) and stats.failed == 1
    rec = records(out)[(bad_cat, bad)]
    assert rec["failed"] and rec["error"] == "RuntimeError: no usable matches" and rec["T_world_cam_pred"] is None
    assert set(rec["rot_err_deg"]) == {180.0} and rec["metrics"]["RRA@30"] == 0.0
    assert summary["categories"][bad_cat]["failed"] == 1 and summary["mean"]["failed"] == 1
    assert summary["categories"][bad_cat]["RRA@15"] < 100.0  # the failure counts as wrong, it is not dropped
    assert "failed" in (out / "summary.csv").read_text().splitlines()[0]
    # with fail_fast the same model stops the run at that sequence
    with pytest.raises(RuntimeError, match="no usable matches"):
        run_benchmark(reader, FailsOnOne(bad), tmp_path / "ff", BenchmarkOptions(categories=CATS, fail_fast=True))
