"""``recon run`` end to end with a tiny random-weight MASt3R checkpoint, on demo_data photos.

Random weights give meaningless geometry, so these tests check plumbing, outputs and error handling; accuracy
is checked with an oracle model in ``test_reconstruct_oracle.py``.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from fixture_files import require_extra
from PIL import Image

from cli import main

DEMO = Path(__file__).resolve().parents[2] / "demo_data" / "orbit"
SIZE = ["--image-size", "128"]  # 128x96 network inputs keep the DPT heads cheap on CPU


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    from recon.model.loading import save_model
    from tools.bench.pipeline import tiny_model

    torch.manual_seed(0)
    return str(save_model(tiny_model(small_heads=True), tmp_path_factory.mktemp("model") / "tiny.pth"))


@pytest.fixture
def photos(tmp_path):
    """Four demo photos (and the scene's cameras.json, which the loader must pass over)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for src in sorted(DEMO.glob("*.jpg"))[:4]:
        shutil.copy(src, folder / src.name)
    shutil.copy(DEMO / "cameras.json", folder / "cameras.json")
    return folder


def run(*args):
    return main(["-q", "run", *map(str, args)])


def count_frustums(scene: trimesh.Scene) -> int:
    """Frustums are named ``camera_NNN`` (their textured image planes ``camera_NNN_image``)."""
    return sum(1 for name in scene.geometry if name.startswith("camera_") and not name.endswith("_image"))


def test_dense_glb_has_all_cameras_and_points(tiny_ckpt, photos, tmp_path, capsys):
    out = tmp_path / "scene.glb"
    assert run(photos, "--checkpoint", tiny_ckpt, "--align", "dense", "--conf-thr", "0", *SIZE, "--out", out) == 0
    summary = capsys.readouterr().out
    assert "images used: 4, skipped: 0" in summary  # cameras.json is not reported as a bad image
    assert "4 encoder passes" in summary
    scene = trimesh.load(out)
    clouds = [g for g in scene.geometry.values() if isinstance(g, trimesh.PointCloud)]
    assert clouds and len(clouds[0].vertices) > 1000
    assert np.isfinite(clouds[0].vertices).all()
    assert count_frustums(scene) == 4


def test_sparse_runs_and_reports(tiny_ckpt, photos, tmp_path, capsys):
    out = tmp_path / "scene.npz"
    assert run(photos, "--checkpoint", tiny_ckpt, "--graph", "complete", *SIZE, "--out", out) == 0
    summary = capsys.readouterr().out
    assert "scene graph: complete -> 6 pairs (12 decoder passes), 4 encoder passes" in summary
    assert "registered cameras:" in summary and "peak memory" in summary
    data = np.load(out, allow_pickle=False)
    assert data["T_world_cam"].shape == (4, 4, 4)


def test_official_mast3r_sfm_alignment_runs(tiny_ckpt, photos, tmp_path, capsys):
    out = tmp_path / "scene.npz"
    assert (
        run(photos, "--checkpoint", tiny_ckpt, "--align", "mast3r-sfm", "--graph", "complete", *SIZE, "--out", out) == 0
    )
    assert "registered cameras: 4/4" in capsys.readouterr().out
    data = np.load(out, allow_pickle=False)
    assert data["T_world_cam"].shape == (4, 4, 4) and np.isfinite(data["T_world_cam"]).all()


def test_colmap_and_nerfstudio_exports(tiny_ckpt, photos, tmp_path):
    pycolmap = require_extra("pycolmap")
    common = [photos, "--checkpoint", tiny_ckpt, "--align", "dense", "--conf-thr", "0", *SIZE]
    assert run(*common, "--format", "colmap", "--out", tmp_path / "colmap") == 0
    rec = pycolmap.Reconstruction(str(tmp_path / "colmap" / "sparse" / "0"))
    assert rec.num_reg_images() == 4 and rec.num_points3D() > 0
    cam = next(iter(rec.cameras.values()))
    assert (cam.width, cam.height) == (512, 384)  # intrinsics in original pixels
    assert len(list((tmp_path / "colmap" / "images").iterdir())) == 4

    assert run(*common, "--format", "nerfstudio", "--out", tmp_path / "ns") == 0
    meta = json.loads((tmp_path / "ns" / "transforms.json").read_text())
    assert len(meta["frames"]) == 4
    for frame in meta["frames"]:
        assert {"file_path", "transform_matrix"} <= set(frame)
        assert (tmp_path / "ns" / frame["file_path"]).is_file()
    assert all(k in meta or k in meta["frames"][0] for k in ("fl_x", "fl_y", "cx", "cy", "w", "h"))


def test_mixed_orientations(tiny_ckpt, photos, tmp_path):
    first = sorted(photos.glob("*.jpg"))[0]
    Image.open(first).transpose(Image.Transpose.ROTATE_90).save(first)  # now portrait
    out = tmp_path / "x.npz"
    assert run(photos, "--checkpoint", tiny_ckpt, "--align", "dense", *SIZE, "--out", out) == 0
    depth_shapes = {tuple(np.load(out)[f"depth_{k}"].shape) for k in range(4)} if "depth_0" in np.load(out) else None
    if depth_shapes is not None:
        assert depth_shapes == {(128, 96), (96, 128)}


def test_bad_input_is_reported_and_writes_nothing(tiny_ckpt, tmp_path, capsys):
    folder = tmp_path / "bad"
    folder.mkdir()
    shutil.copy(sorted(DEMO.glob("*.jpg"))[0], folder / "ok.jpg")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg" * 20)
    Image.new("RGB", (8, 8)).save(folder / "tiny.png")
    out = tmp_path / "x.glb"
    assert run(folder, "--checkpoint", tiny_ckpt, *SIZE, "--out", out) == 2
    err = capsys.readouterr().err
    assert "need at least 2 usable images, got 1" in err
    for name in ("empty.jpg", "corrupt.jpg", "tiny.png"):
        assert name in err
    assert "Traceback" not in err
    assert not out.exists() and list(tmp_path.glob("x*")) == []


def test_missing_output_folder_fails_before_any_work(tiny_ckpt, photos, tmp_path, capsys):
    assert run(photos, "--checkpoint", tiny_ckpt, "--out", tmp_path / "nope" / "x.glb") == 2
    assert "does not exist" in capsys.readouterr().err


def test_missing_checkpoint_is_a_clear_error(photos, tmp_path, capsys):
    assert run(photos, "--checkpoint", tmp_path / "missing.pth", "--out", tmp_path / "x.glb") == 2
    assert "missing.pth" in capsys.readouterr().err


def test_corrupt_images_are_skipped_and_reported(tiny_ckpt, photos, tmp_path, capsys):
    (photos / "zero.jpg").write_bytes(b"")
    (photos / "dup.jpg").write_bytes(sorted(photos.glob("*.jpg"))[0].read_bytes())
    out = tmp_path / "x.npz"
    assert run(photos, "--checkpoint", tiny_ckpt, "--align", "dense", *SIZE, "--out", out) == 0
    summary = capsys.readouterr().out
    assert "images used: 4, skipped: 2" in summary
    assert "zero.jpg" in summary and "dup.jpg" in summary


def test_no_registered_camera_is_a_clear_error(tiny_ckpt, photos, tmp_path, capsys, monkeypatch):
    # The aligners place every view that any pair connects (weak pairs fall back to their point maps), so a
    # scene without a single camera needs an aligner that gives up on every view: simulate one.
    import numpy as np

    import recon.align

    real_align = recon.align.align

    def align_nothing(*args, **kwargs):
        scene = real_align(*args, **kwargs)
        scene.registered = np.zeros(len(scene), dtype=bool)
        scene.info["unregistered"] = list(scene.names)
        return scene

    monkeypatch.setattr(recon.align, "align", align_nothing)
    out = tmp_path / "x.glb"
    assert run(photos, "--checkpoint", tiny_ckpt, "--graph", "complete", *SIZE, "--out", out) == 2
    err = capsys.readouterr().err
    assert "no camera could be registered" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize(("flag", "value"), [("--tsdf-thresh", "-0.1"), ("--conf-thr", "nan")])
def test_bad_thresholds_are_one_line_errors(photos, tmp_path, capsys, flag, value):
    assert run(photos, "--checkpoint", tmp_path / "never-read.pth", flag, value, "--out", tmp_path / "x.glb") == 2
    assert f"{flag} must be a number >= 0" in capsys.readouterr().err


def test_one_number_retrieval_graph_is_explained(tiny_ckpt, photos, tmp_path, capsys):
    rc = run(photos, "--checkpoint", tiny_ckpt, *SIZE, "--graph", "retrieval-10", "--out", tmp_path / "x.npz")
    err = capsys.readouterr().err
    assert rc == 2 and "write retrieval-Na-k" in err and "Traceback" not in err
