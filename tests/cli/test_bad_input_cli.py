"""Bad input of every family to ``recon run``: one line ``error: ...`` naming the input, exit code 2, no traceback,
nothing written, and all of it before any image is decoded or any model is loaded.

``load_model`` and ``load_images`` are replaced by functions that fail the test if called, so each case proves
that its check runs first.
"""

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from cli import main

DEMO = Path(__file__).resolve().parents[2] / "demo_data" / "orbit"
MODEL = ["--model", "random:mast3r_tiny"]


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A folder with three demo photos, and the compute entry points booby-trapped."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for src in sorted(DEMO.glob("*.jpg"))[:3]:
        shutil.copy(src, photos / src.name)

    def forbidden(*args, **kwargs):
        raise AssertionError("validation must fail before images are decoded or the model is loaded")

    monkeypatch.setattr("recon.model.loading.load_model", forbidden)
    monkeypatch.setattr("recon.images.load_images", forbidden)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def snapshot(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_size for p in folder.rglob("*")}


def spill_folders() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("recon-spill-*")}


def run_bad(work: Path, capsys, *args: str) -> str:
    """Run ``recon run`` and check the failure contract; returns the error line."""
    before, spills = snapshot(work), spill_folders()
    assert main(["-q", "run", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert snapshot(work) == before, "a failed validation wrote or removed files"
    assert spill_folders() == spills
    return err


def write_json(path: Path, text_or_data) -> Path:
    path.write_text(text_or_data if isinstance(text_or_data, str) else json.dumps(text_or_data))
    return path


ROT = np.eye(4).tolist()


class TestPriorFiles:
    """``--intrinsics`` and ``--poses``: every value checked before any work."""

    @pytest.mark.parametrize(
        ("flag", "content", "expect"),
        [
            ("--intrinsics", '{"view_000.jpg": {"fx": NaN}}', "NaN is not a valid camera value"),
            ("--intrinsics", {"view_000.jpg": {"fx": 0}}, "focal lengths must be > 0"),
            ("--intrinsics", {"view_000.jpg": {"focal": -300}}, "focal lengths must be > 0"),
            ("--intrinsics", {"view_000.jpg": {"fx": "300"}}, "'fx' must be a finite number"),
            ("--intrinsics", {"view_000.jpg": {"K": [[300, 0, 256], [0, 300, 192]]}}, "'K' must be 3x3"),
            ("--intrinsics", {"view_000.jpg": {"K": [[300, 0, 256], [0, 300, 192], [1, 0, 1]]}}, "[0, 0, 1]]"),
            ("--intrinsics", {"view_000.jpg": {"K": [[-3, 0, 256], [0, 300, 192], [0, 0, 1]]}}, "must be > 0"),
            ("--intrinsics", {"view_000.jpg": {"K": "eye"}}, "'K' must be a 3x3 matrix of numbers"),
            ("--poses", {"view_000.jpg": {"T_world_cam": (2 * np.eye(4)).tolist()}}, "[0, 0, 0, 1]"),
            ("--poses", {"view_000.jpg": {"T_world_cam": np.diag([2, 2, 2, 1.0]).tolist()}}, "must be rigid"),
            ("--poses", {"view_000.jpg": {"T_world_cam": np.diag([1, 1, -1, 1.0]).tolist()}}, "no reflection"),
            ("--poses", {"view_000.jpg": {"T_world_cam": np.eye(3).tolist()}}, "must be 4x4"),
            ("--poses", {"view_000.jpg": {"T_world_cam": [[1, 0, 0, 0]] * 3 + [[0, 0, 0, float("inf")]]}}, "Infinity"),
            ("--poses", {"view_000.jpg": {"K": np.eye(3).tolist()}}, "no record has a 'T_world_cam'"),
            ("--poses", "null", "expected a JSON list or mapping"),
            ("--poses", "[null]", "must be a JSON object"),
            ("--poses", [{"T_world_cam": ROT}], "no 'name' / 'file_path'"),
            ("--poses", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
            ("--poses", "{not json", "cannot read camera file"),
        ],
    )
    def test_bad_values(self, work, capsys, flag, content, expect):
        path = write_json(work / "cams.json", content)
        err = run_bad(work, capsys, "photos", *MODEL, flag, str(path), "--out", "x.glb")
        assert expect in err and "cams.json" in err

    def test_missing_file(self, work, capsys):
        err = run_bad(work, capsys, "photos", *MODEL, "--intrinsics", "nope.json", "--out", "x.glb")
        assert "--intrinsics file not found: nope.json" in err


class TestGraph:
    @pytest.mark.parametrize(
        ("graph", "expect"),
        [
            ("swin-0", "window size must be >= 1"),
            ("star", "valid: complete"),
            ("retrieval-x", "valid: complete"),
            ("swin-" + "9" * 5000, "is not a graph name"),
            ("oneref-9", "out of range for 3 images"),
        ],
    )
    def test_bad_names(self, work, capsys, graph, expect):
        assert expect in run_bad(work, capsys, "photos", *MODEL, "--graph", graph, "--out", "x.glb")

    def test_plan_over_budget_is_refused_without_yes(self, work, capsys):
        many = work / "many"
        many.mkdir()
        for k in range(60):  # never decoded: planning only lists the folder
            (many / f"img_{k:03d}.jpg").write_bytes(b"\xff\xd8 not decoded")
        err = run_bad(work, capsys, "many", *MODEL, "--graph", "complete", "--out", "x.glb")
        assert "3540 decoder passes (more than 2000)" in err and "--yes" in err

    def test_huge_window_is_planned_in_closed_form(self, work, capsys):
        # swin-1000000000 over 3 images is the complete graph: planned at once, then the (trapped) model loads
        with pytest.raises(AssertionError, match="validation must fail before"):
            main(["-q", "run", "photos", *MODEL, "--graph", "swin-1000000000", "--out", "x.glb"])
        assert "graph swin-1000000000: 3 pairs (6 decoder passes)" in capsys.readouterr().out


class TestSettings:
    @pytest.mark.parametrize(
        ("args", "expect"),
        [
            (["--batch-size", "0"], "batch size must be an integer in [1, 4096], got 0"),
            (["--seed", "-1"], "seed must be an integer in [0, 4294967295], got -1"),
            (["--device", "meta"], "device 'meta' is not supported; use auto, cpu, cuda or cuda:K"),
            (["--device", "cuda:99"], "cuda:99"),
            (["--conf-thr", "nan"], "--conf-thr must be a number >= 0, got nan"),
            (["--image-size", "0"], "image size must be an integer in [32, 4096], got 0"),
            (["--image-size", "-1"], "image size must be an integer in [32, 4096], got -1"),
            (["--max-ram-gb", "-1"], "max RAM (GB) must be a number >= 0, got -1.0"),
            (["--max-ram-gb", "inf"], "max RAM (GB) must be a number >= 0, got inf"),
            (["--focal", "0"], "focal length must be a number > 0, got 0.0"),
            (["--focal", "nan"], "focal length must be a number > 0, got nan"),
            (["--cache-dir", "photos/view_000.jpg"], "is a file, not a folder"),
        ],
    )
    def test_out_of_range(self, work, capsys, args, expect):
        assert expect in run_bad(work, capsys, "photos", *MODEL, *args, "--out", "x.glb")

    @pytest.mark.parametrize(
        ("model", "expect"),
        [
            (["--model", "random:nope"], "unknown random model 'nope'; known: random:mast3r_vitl16"),
            (["--model", "random:mast3r_tiny@-1"], "the seed after '@' must be an integer"),
            (["--model", "mast3r_vit_typo"], "unknown weights 'mast3r_vit_typo'"),
            (["--checkpoint", "missing.pth"], "checkpoint not found: missing.pth"),
        ],
    )
    def test_models(self, work, capsys, model, expect):
        assert expect in run_bad(work, capsys, "photos", *model, "--out", "x.glb")


class TestInputsAndOutput:
    def test_missing_image_input(self, work, capsys):
        assert "image input not found: nowhere" in run_bad(work, capsys, "nowhere", *MODEL, "--out", "x.glb")

    def test_one_image(self, work, capsys):
        one = work / "one"
        one.mkdir()
        shutil.copy(DEMO / "view_000.jpg", one)
        assert "need at least 2 images, found 1 in one" in run_bad(work, capsys, "one", *MODEL, "--out", "x.glb")

    def test_existing_folder_for_a_file_format(self, work, capsys):
        (work / "scene.glb").mkdir()
        err = run_bad(work, capsys, "photos", *MODEL, "--out", "scene.glb")
        assert "scene.glb exists and is not a regular file" in err

    def test_a_file_recon_did_not_write_is_refused(self, work, capsys):
        (work / "scene.glb").write_bytes(b"the user's own model")
        err = run_bad(work, capsys, "photos", *MODEL, "--out", "scene.glb")
        assert "scene.glb exists and was not written by recon" in err
        assert (work / "scene.glb").read_bytes() == b"the user's own model"

    def test_existing_file_for_a_folder_format(self, work, capsys):
        (work / "colmap").write_text("mine")
        err = run_bad(work, capsys, "photos", *MODEL, "--format", "colmap", "--out", "colmap")
        assert "colmap exists and is not a folder" in err

    def test_missing_output_folder(self, work, capsys):
        assert "output folder nope does not exist" in run_bad(work, capsys, "photos", *MODEL, "--out", "nope/x.glb")

    @pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs a read-only /proc (Linux)")
    def test_unwritable_output_folder(self, work, capsys):
        assert "output folder /proc is not writable" in run_bad(work, capsys, "photos", *MODEL, "--out", "/proc/x.glb")

    def test_unknown_format(self, work, capsys):
        assert "cannot tell the output format" in run_bad(work, capsys, "photos", *MODEL, "--out", "scene.obj")


def test_subprocess_prints_one_line_and_no_traceback(tmp_path):
    """The same contract seen from outside: a real process, its stderr and its exit code."""
    write_json(tmp_path / "cams.json", '{"a.jpg": {"fx": NaN}}')
    proc = subprocess.run(
        [sys.executable, "-m", "recon", "-q", "run", str(DEMO), "--intrinsics", str(tmp_path / "cams.json"),
         "--model", "random:mast3r_tiny", "--out", str(tmp_path / "x.glb")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: cannot read camera file") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cams.json"]
