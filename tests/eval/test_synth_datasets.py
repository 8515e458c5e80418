"""The evaluator on datasets written by ``tools.synth`` (the writers behind ``recon synth --format co3d|re10k``):
a second, independent implementation of the reference's file formats and camera conventions."""

import json

import numpy as np
import pytest

from cli import main
from recon.datasets.co3d import Co3dReader
from recon.datasets.re10k import Re10kReader
from tools.eval.benchmark import BenchmarkOptions, run_benchmark
from tools.eval.runner import load_results
from tools.synth import render_scene, write_re10k
from tools.synth.co3d import Co3dSequence, write_co3d

from .helpers import Interrupting, independent_metrics

CATS = ("apple", "bench", "chair")
VALID = {(c, f"{c}_s{k}") for c in CATS for k in range(2)}


@pytest.fixture(scope="module")
def views50():
    # One rendered orbit reused by every sequence: the writers, not the renderer, are under test here.
    return render_scene("orbit", n_views=50, size=(64, 48), seed=0)


@pytest.fixture(scope="module")
def synth_co3d(tmp_path_factory, views50):
    root = tmp_path_factory.mktemp("synth_co3d")
    cats = {c: [Co3dSequence(f"{c}_s{k}", views50) for k in range(2)] for c in CATS}
    cats["apple"] += [Co3dSequence("decoy_lowq", views50, quality=0.5), Co3dSequence("decoy_short", views50[:49])]
    cats["bench"] += [Co3dSequence("decoy_badT", views50, bad_translation_frame=3)]
    cats["chair"] += [
        Co3dSequence("decoy_train", views50[:10], split="train"),
        Co3dSequence("decoy_mask", views50, empty_mask_frames=(7,)),
    ]
    write_co3d(root, cats, with_depth=False)
    return root


@pytest.fixture(scope="module")
def synth_re10k(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_re10k")
    views = render_scene("room_walk", n_views=30, size=(64, 48), seed=1)
    clips = {"clip_a": views, "clip_b": views[5:], "clip_c": views[::-1], "clip_short": views[:6]}
    write_re10k(root, clips)
    split = root / "split.txt"
    split.write_text("\n".join([*clips, "clip_gone"]) + "\n")  # clip_gone: camera file and frames missing
    (root / "test" / "clip_gone.txt").write_text((root / "test" / "clip_a.txt").read_text())
    return root, split, views


def test_co3d_cameras_round_trip_through_the_writer(synth_co3d, views50):
    frames = Co3dReader(synth_co3d).load_frames("bench", "bench_s1", range(50))
    for f, v in zip(frames, views50, strict=True):
        np.testing.assert_allclose(f.T_world_cam, v.T_world_cam, atol=1e-9)
        np.testing.assert_allclose(f.K, v.K, atol=1e-9)
        assert f.image_size == (48, 64)


def test_co3d_oracle_filters_noise_resume(synth_co3d, tmp_path):
    base = ["-q", "eval", "co3d", "--root", str(synth_co3d), "--categories", *CATS, "--oracle"]
    out = tmp_path / "oracle"
    assert main([*base, "--out", str(out)]) == 0
    assert {(r["category"], r["sequence"]) for r in load_results(out)} == VALID
    summary = json.loads((out / "summary.json").read_text())
    assert summary["mean"]["RRA@15"] == summary["mean"]["RTA@15"] == 100.0
    dropped = json.loads((out / "sampling.json").read_text())["dropped"]
    assert dropped["apple"]["low_quality"] == ["decoy_lowq"] and dropped["apple"]["too_few_frames"] == ["decoy_short"]
    assert dropped["bench"]["bad_translation"] == ["decoy_badT"]
    assert dropped["chair"]["too_few_frames"] == ["decoy_mask"]  # pd recipe: empty-mask frame dropped -> 49

    noisy = tmp_path / "noisy"
    assert main([*base, "--oracle-rot-noise", "7", "--sampling", str(out / "sampling.json"), "--out", str(noisy)]) == 0
    recs = {(r["category"], r["sequence"]): r for r in load_results(noisy)}
    first = {(r["category"], r["sequence"]): r["frame_ids"] for r in load_results(out)}
    assert {k: r["frame_ids"] for k, r in recs.items()} == first  # the sampling file fixes the frames
    per_cat, mean = independent_metrics(recs)
    got = json.loads((noisy / "summary.json").read_text())
    for k in ("RRA@15", "RTA@15", "mAA(30)"):
        assert got["mean"][k] == pytest.approx(mean[k], abs=1e-9)
    assert 5 < got["mean"]["mAA(30)"] < 95

    resumed = tmp_path / "resumed"
    reader = Co3dReader(synth_co3d)
    opts = BenchmarkOptions(categories=CATS, sampling_path=out / "sampling.json")
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(reader, Interrupting(stop_after=4), resumed, opts)
    second = Interrupting()
    stats, summary = run_benchmark(reader, second, resumed, opts)
    assert (stats.skipped, stats.done, len(second.calls)) == (4, 2, 2) and summary["complete"]


def test_re10k_round_trip_and_oracle(synth_re10k, tmp_path):
    root, split, views = synth_re10k
    frames = Re10kReader(root).load_frames("re10k", "clip_c", [int(round(i * 1e6 / 30)) for i in range(30)])
    for f, v in zip(frames, views[::-1], strict=True):
        np.testing.assert_allclose(f.T_world_cam, v.T_world_cam, atol=1e-9)
        np.testing.assert_allclose(f.K, v.K, atol=1e-9)
    out = tmp_path / "re"
    base = ["-q", "eval", "re10k", "--root", str(root), "--split-file", str(split), "--oracle"]
    assert main([*base, "--out", str(out)]) == 0
    assert {r["sequence"] for r in load_results(out)} == {"clip_a", "clip_b", "clip_c"}
    assert json.loads((out / "summary.json").read_text())["mean"]["mAA(30)"] == 100.0
    dropped = json.loads((out / "sampling.json").read_text())["dropped"]["re10k"]
    assert dropped == {"no_frames": ["clip_gone"], "too_few_frames": ["clip_short"]}

    noisy = tmp_path / "re_noisy"
    assert main([*base, "--oracle-rot-noise", "5", "--oracle-trans-noise", "0.2", "--out", str(noisy)]) == 0
    recs = {(r["category"], r["sequence"]): r for r in load_results(noisy)}
    per_cat, _ = independent_metrics(recs)
    got = json.loads((noisy / "summary.json").read_text())["categories"]["re10k"]
    for k in ("RRA@15", "RTA@15", "mAA(30)"):
        assert got[k] == pytest.approx(per_cat["re10k"][k], abs=1e-9)
    # Resuming a finished run recomputes nothing.
    stats, _ = run_benchmark(Re10kReader(root, split_file=split), Interrupting(), out, BenchmarkOptions())
    assert (stats.done, stats.skipped) == (0, 3)
