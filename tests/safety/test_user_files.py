"""User files are sacred: exports never delete or overwrite a file recon did not write, and clean up after themselves.

Before: ``recon run proj/images --format colmap --out proj`` swapped the whole ``proj`` folder for a fresh export,
deleting every file of ``proj/images`` that was not one of the photos (RAW files, notes); temporaries of a killed
run stayed behind forever.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recon.export import ColmapOptions, NerfstudioOptions, PlyOptions, export
from recon.export._atomic import MANIFEST, OverwriteRefusedError
from recon.export.options import OPTIONS_BY_FORMAT
from recon.types import Scene

from .helpers import one_line, tree_digest

H, W = 12, 16  # network pixels; photos are twice as large


def _scene(photos) -> Scene:
    """A scene of one view per photo (a path: its ``paths`` entry and name; a bare name: no photo file)."""
    n = len(photos)
    names = [Path(p).name for p in photos]
    paths = [str(p) for p in photos] if all(isinstance(p, Path) for p in photos) else None
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, 0, 3] = np.arange(n) * 0.2
    K = np.array([[20.0, 0, (W - 1) / 2], [0, 20.0, (H - 1) / 2], [0, 0, 1]])
    g = np.random.default_rng(0)
    return Scene(
        T_world_cam=T,
        K=np.tile(K, (n, 1, 1)),
        depth=[np.full((H, W), 3.0, np.float32) for _ in range(n)],
        conf=[np.full((H, W), 5.0, np.float32) for _ in range(n)],
        colors=[g.integers(0, 255, (H, W, 3), dtype=np.uint8) for _ in range(n)],
        names=list(names),
        net_to_orig=[np.diag([2.0, 2.0, 1.0]) + np.array([[0, 0, 0.5], [0, 0, 0.5], [0, 0, 0]]) for _ in range(n)],
        orig_sizes=[(2 * H, 2 * W)] * n,
        paths=paths,
    )


@pytest.fixture
def project(tmp_path):
    """``proj/images`` with two photos, a RAW file, a sidecar and notes; ``proj/notes.txt`` beside it."""
    proj = tmp_path / "proj"
    (proj / "images").mkdir(parents=True)
    photos = []
    for k in range(2):
        p = proj / "images" / f"IMG_{k}.jpg"
        Image.fromarray(np.full((2 * H, 2 * W, 3), 60 * k + 30, np.uint8)).save(p, quality=90)
        photos.append(p)
    (proj / "images" / "IMG_0.CR2").write_bytes(b"RAW" * 1000)
    (proj / "images" / "IMG_0.xmp").write_text("<xmp/>")
    (proj / "images" / "todo.txt").write_text("reshoot the left side")
    (proj / "notes.txt").write_text("my project notes")
    return proj, photos


def _unchanged(before: dict, after: dict) -> None:
    """Every entry of ``before`` is still there with the same content."""
    changed = {k: (v, after.get(k)) for k, v in before.items() if after.get(k) != v}
    assert not changed, changed


@pytest.mark.parametrize("notes_beside", [False, True], ids=["only-images", "with-notes"])
def test_colmap_into_the_project_folder_keeps_every_user_file(project, notes_beside):
    """The reported bug: the standard COLMAP layout, photos already in proj/images (which was wiped)."""
    proj, photos = project
    if not notes_beside:
        (proj / "notes.txt").unlink()
    before = tree_digest(proj)
    export(_scene(photos), proj, ColmapOptions())
    after = tree_digest(proj)
    _unchanged(before, after)  # RAW, sidecar, notes and the photos themselves: untouched
    added = sorted(set(after) - set(before))
    assert added == [MANIFEST, "sparse", "sparse/0"] + [f"sparse/0/{f}" for f in sorted(
        ["cameras.bin", "cameras.txt", "images.bin", "images.txt", "points3D.bin", "points3D.txt"])]  # fmt: skip
    export(_scene(photos), proj, ColmapOptions())  # a rerun works and changes no user file
    _unchanged(before, tree_digest(proj))


def test_nerfstudio_into_the_project_folder_keeps_every_user_file(project):
    proj, photos = project
    before = tree_digest(proj)
    export(_scene(photos), proj, NerfstudioOptions())
    _unchanged(before, tree_digest(proj))
    assert (proj / "transforms.json").is_file() and (proj / "sparse_pc.ply").is_file()


def test_copied_images_are_only_added(project, tmp_path):
    proj, photos = project
    out = tmp_path / "export"
    (out / "images").mkdir(parents=True)
    (out / "images" / "keep_me.jpg").write_bytes(b"user photo")
    export(_scene(photos), out, ColmapOptions())
    assert (out / "images" / "keep_me.jpg").read_bytes() == b"user photo"
    assert (out / "images" / "IMG_0.jpg").read_bytes() == photos[0].read_bytes()


def test_an_image_of_the_same_name_with_other_content_is_refused(project, tmp_path):
    proj, photos = project
    out = tmp_path / "export"
    (out / "images").mkdir(parents=True)
    (out / "images" / "IMG_1.jpg").write_bytes(b"a different photo")
    before = tree_digest(tmp_path)
    with pytest.raises(OverwriteRefusedError, match=r"recon did not write: images/IMG_1.jpg") as info:
        export(_scene(photos), out, ColmapOptions())
    assert "nothing was changed" in one_line(info.value)
    assert tree_digest(tmp_path) == before  # no partial export, no staging folder left


def test_rotated_photo_in_place_is_refused_not_replaced(tmp_path):
    proj = tmp_path / "proj"
    (proj / "images").mkdir(parents=True)
    photos = []
    for k in range(2):
        im = Image.fromarray(np.full((2 * W, 2 * H, 3), 100, np.uint8))  # stored portrait, displayed landscape
        exif = im.getexif()
        exif[0x0112] = 6 if k == 0 else 1
        p = proj / "images" / f"R_{k}.jpg"
        if k == 1:
            im = im.transpose(Image.Transpose.ROTATE_90)
        im.save(p, exif=exif)
        photos.append(p)
    before = tree_digest(tmp_path)
    with pytest.raises(OverwriteRefusedError, match=r"R_0.jpg is already at its place .* stored rotated") as info:
        export(_scene(photos), proj, ColmapOptions())
    one_line(info.value)
    assert tree_digest(tmp_path) == before


def test_rerun_replaces_only_its_own_unchanged_files(project, tmp_path):
    proj, photos = project
    out = tmp_path / "export"
    scene = _scene(photos)
    export(scene, out, NerfstudioOptions())
    (out / "images" / "IMG_0.jpg").write_bytes(b"edited by the user")  # ours, but changed since
    with pytest.raises(OverwriteRefusedError, match="images/IMG_0.jpg"):
        export(scene, out, NerfstudioOptions())
    assert (out / "images" / "IMG_0.jpg").read_bytes() == b"edited by the user"
    (out / "images" / "IMG_0.jpg").unlink()
    export(scene, out, NerfstudioOptions(point_cloud=False))
    assert not (out / "sparse_pc.ply").exists()  # its own stale, unchanged output is gone
    (out / "sparse_pc.ply").write_text("the user's own point cloud")
    export(scene, out, NerfstudioOptions(point_cloud=False))
    assert (out / "sparse_pc.ply").read_text() == "the user's own point cloud"  # not ours: left alone


@pytest.mark.parametrize(("name", "options"), [("scene.glb", None), ("scene.ply", None), ("out", ColmapOptions())])
def test_a_failure_mid_write_leaves_no_temporary(project, tmp_path, monkeypatch, name, options):
    proj, photos = project
    target = tmp_path / name

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("recon.export.colmap._write_points3D_txt", interrupted)
    monkeypatch.setattr("recon.export.ply.ply_bytes", interrupted)
    monkeypatch.setattr("trimesh.Scene.export", interrupted)
    before = tree_digest(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        export(_scene(photos), target, options)
    assert tree_digest(tmp_path) == before


def test_leftovers_of_a_killed_run_are_removed_by_the_next_run(project, tmp_path):
    proj, photos = project
    dead = _dead_pid()
    leftovers = [
        tmp_path / f".scene.glb.{dead}.k3j5_x9q.tmp",
        tmp_path / f".out.export.{dead}.a8b7c6d5",
    ]
    leftovers[0].write_bytes(b"half a glb")
    (leftovers[1] / "sparse").mkdir(parents=True)
    alive = tmp_path / f".scene.glb.{os.getppid()}.zzzzzzzz.tmp"  # a concurrent writer's: kept
    alive.write_bytes(b"in progress")
    lookalike = tmp_path / ".scene.glb.backup.tmp"  # not recon's shape: kept
    lookalike.write_bytes(b"user")
    scene = _scene(photos)
    export(scene, tmp_path / "scene.glb")
    export(scene, tmp_path / "out", ColmapOptions())
    assert not any(p.exists() for p in leftovers)
    assert alive.read_bytes() == b"in progress" and lookalike.read_bytes() == b"user"


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid  # exited and reaped: no process has this id (barring an immediate reuse)


def test_recon_run_colmap_into_the_project_folder(tmp_path):
    """End to end, as reported: ``recon run proj/images --format colmap --out proj`` (tiny random model)."""
    import shutil
    from pathlib import Path

    import torch

    from cli import main
    from recon.model.loading import save_model
    from tools.bench.pipeline import tiny_model

    torch.manual_seed(0)
    ckpt = save_model(tiny_model(small_heads=True), tmp_path / "tiny.pth")
    proj = tmp_path / "proj"
    (proj / "images").mkdir(parents=True)
    demo = Path(__file__).resolve().parents[2] / "demo_data" / "orbit"
    for src in sorted(demo.glob("*.jpg"))[:3]:
        shutil.copy(src, proj / "images" / src.name)
    (proj / "images" / "view_000.CR2").write_bytes(b"RAW" * 1000)
    (proj / "images" / "notes.txt").write_text("shot at dusk")
    before = tree_digest(proj)
    args = ["-q", "run", proj / "images", "--checkpoint", ckpt, "--align", "dense", "--image-size", "64"]
    assert main([str(a) for a in [*args, "--format", "colmap", "--out", proj]]) == 0
    after = tree_digest(proj)
    _unchanged(before, after)
    assert "sparse/0/images.bin" in after and not any(k.startswith("images/") for k in set(after) - set(before))


@pytest.mark.parametrize("name", ["scene.glb", "scene.ply", "scene.npz"])
def test_a_file_recon_did_not_write_is_never_overwritten(tmp_path, name):
    scene = _scene(["a.jpg", "b.jpg"])
    target = tmp_path / name
    target.write_bytes(b"the user's own file")
    before = tree_digest(tmp_path)
    with pytest.raises(OverwriteRefusedError, match="was not written by recon") as info:
        export(scene, target)
    one_line(info.value)
    assert tree_digest(tmp_path) == before
    target.unlink()
    export(scene, target)  # recon's own output is replaced on a rerun
    first = target.read_bytes()
    export(scene, target, None if name == "scene.npz" else OPTIONS_BY_FORMAT[name[-3:]](conf_thr=6.0))
    assert target.read_bytes() != first or name == "scene.npz"


def test_destination_can_be_checked_before_a_long_reconstruction(tmp_path):
    from recon.export import check_destination

    (tmp_path / "mine.glb").write_bytes(b"not recon's")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OverwriteRefusedError, match="was not written by recon"):
        check_destination(tmp_path / "mine.glb")
    with pytest.raises(OverwriteRefusedError, match="is not a folder"):
        check_destination(tmp_path / "afile", ColmapOptions())
    assert check_destination(tmp_path / "new.ply") == PlyOptions()
    assert (
        check_destination(tmp_path, ColmapOptions()) == ColmapOptions()
    )  # an existing folder is fine: files are checked later
