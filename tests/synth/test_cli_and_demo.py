"""``recon synth`` end to end, and the committed demo_data against the command that made it."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from cli import main
from tools.synth import make_scene, read_folder, read_re10k_clip, render_view

DEMO = Path(__file__).resolve().parents[2] / "demo_data"


def test_synth_folder(tmp_path, capsys):
    out = tmp_path / "orbit"
    assert main(["synth", "orbit", "--views", "3", "--size", "32x24", "--seed", "7", "--out", str(out),
                 "--with-depth", "--mixed-orientation"]) == 0  # fmt: skip
    assert "wrote 3 views" in capsys.readouterr().out
    views = read_folder(out)
    assert len(views) == 3 and {v.rgb.shape for v in views} == {(24, 32, 3), (32, 24, 3)}
    assert all(v.depth is not None and v.depth.shape == v.rgb.shape[:2] for v in views)
    meta = json.loads((out / "cameras.json").read_text())["meta"]
    assert meta["seed"] == 7 and meta["layout"] == "orbit" and meta["options"] == {"mixed_orientation": True}
    # The same command writes into a non-empty folder only with --overwrite.
    assert main(["synth", "orbit", "--views", "1", "--size", "32x24", "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_synth_co3d_and_re10k(tmp_path):
    root = tmp_path / "co3d"
    assert main(["synth", "orbit", "--format", "co3d", "--categories", "cup", "--sequences", "1", "--views", "3",
                 "--size", "24x16", "--no-decoys", "--out", str(root)]) == 0  # fmt: skip
    with gzip.open(root / "cup" / "frame_annotations.jgz", "rt") as fh:
        frames = json.load(fh)
    assert [f["frame_number"] for f in frames] == [0, 1, 2]
    assert frames[0]["image"]["size"] == [16, 24]
    re = tmp_path / "re10k"
    assert main(["synth", "room_walk", "--format", "re10k", "--clips", "2", "--views", "2", "--size", "24x16",
                 "--out", str(re)]) == 0  # fmt: skip
    clips = (re / "test_clips.txt").read_text().split()
    assert len(clips) == 2 and all(len(c) == 16 for c in clips)
    assert len(read_re10k_clip(re, clips[0])) == 2


def test_synth_rejects_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["synth", "orbit", "--size", "512", "--out", str(tmp_path / "x")])
    assert "512x384" in capsys.readouterr().err
    assert main(["synth", "orbit", "--views", "0", "--out", str(tmp_path / "y")]) == 2
    assert main(["synth", "orbit", "--views", "1", "--size", "32x24", "--focal-range", "1", "0.5",
                 "--out", str(tmp_path / "z")]) == 2  # fmt: skip
    assert "--focal-range LO HI must satisfy 0 < LO <= HI" in capsys.readouterr().err


@pytest.mark.parametrize("name, layout", [("orbit", "orbit"), ("room", "room_walk")])
def test_demo_data_matches_its_command(name, layout):
    folder = DEMO / name
    views = read_folder(folder)
    assert 8 <= len(views) <= 12
    meta = json.loads((folder / "cameras.json").read_text())["meta"]
    assert meta["layout"] == layout and meta["options"] == {}
    # The README's command (layout, views, size, seed) gives exactly these cameras ...
    scene, cams = make_scene(layout, meta["views"], tuple(meta["size"]), meta["seed"])
    assert len(cams) == len(views)
    for cam, v in zip(cams, views, strict=True):
        assert cam.name == v.name
        np.testing.assert_array_equal(cam.K, v.K)
        np.testing.assert_array_equal(cam.T_world_cam, v.T_world_cam)
        assert v.rgb.shape == (cam.size[1], cam.size[0], 3)
    # ... and these images (up to JPEG loss), checked on one view to keep the test fast.
    fresh = render_view(scene, cams[1].K, cams[1].T_world_cam, cams[1].size)
    assert np.abs(fresh.rgb.astype(float) - views[1].rgb).mean() < 4.0


def test_demo_data_stays_light():
    files = [p for p in DEMO.rglob("*") if p.is_file()]
    total = sum(p.stat().st_size for p in files)
    assert total < 4 * 2**20, f"demo_data is {total / 2**20:.1f} MiB"
    assert (DEMO / "README.md").is_file()
    assert "recon run demo_data/orbit --out scene.glb" in (DEMO / "README.md").read_text()
