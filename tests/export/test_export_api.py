"""``recon.export.export``: format resolution, PLY / npz outputs, clear errors, atomic writes."""

from __future__ import annotations

import os

import numpy as np
import pytest
import trimesh

import recon.export.colmap as colmap_module
from recon.export import export, resolve_format
from recon.export._atomic import MANIFEST
from recon.export.ply import ply_bytes
from recon.scene import load_scene, scene_points


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


class TestResolveFormat:
    @pytest.mark.parametrize(("name", "fmt"), [("a.glb", "glb"), ("a.PLY", "ply"), ("a.npz", "npz")])
    def test_from_extension(self, tmp_path, name, fmt):
        assert resolve_format(tmp_path / name) == fmt

    def test_explicit(self, tmp_path):
        assert resolve_format(tmp_path / "out", "COLMAP") == "colmap"
        assert resolve_format(tmp_path / "out.d", "nerfstudio") == "nerfstudio"

    def test_errors(self, tmp_path):
        with pytest.raises(ValueError, match="cannot tell the export format"):
            resolve_format(tmp_path / "out")
        with pytest.raises(ValueError, match="does not match"):
            resolve_format(tmp_path / "a.ply", "glb")
        with pytest.raises(ValueError, match="unknown export format"):
            resolve_format(tmp_path / "a", "obj")


class TestPly:
    def test_points_read_back(self, tmp_path, scene):
        path = export(scene, tmp_path / "cloud.ply", conf_thr=1.5)
        assert path.read_bytes().startswith(b"ply\nformat binary_little_endian 1.0\n")
        cloud = trimesh.load(path)
        xyz, rgb, _, _ = scene_points(scene, conf_thr=1.5)
        np.testing.assert_allclose(cloud.vertices, xyz, atol=0)
        np.testing.assert_array_equal(cloud.colors[:, :3], rgb)

    def test_mesh_reads_back(self, tmp_path, synth):
        s = synth.make_scene(1)
        mesh = trimesh.load(export(s, tmp_path / "mesh.ply", as_mesh=True), process=False)
        assert len(mesh.faces) == 2 * (synth.H - 1) * (synth.W - 1)
        np.testing.assert_allclose(mesh.vertices[:, 2], synth.PLANE_Z, atol=1e-4)

    def test_empty_cloud(self):
        data = ply_bytes(np.zeros((0, 3)), np.zeros((0, 3), np.uint8))
        assert b"element vertex 0\n" in data

    def test_bad_shapes(self):
        with pytest.raises(ValueError, match=r"\[P,3\]"):
            ply_bytes(np.zeros((4, 3)), np.zeros((3, 3), np.uint8))


def test_npz_through_export(tmp_path, scene):
    back = load_scene(export(scene, tmp_path / "scene.npz"))
    np.testing.assert_array_equal(back.T_world_cam, scene.T_world_cam)
    assert back.names == scene.names


def test_missing_parent_fails_before_any_work(tmp_path, scene, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("cleaning ran before the path check")

    monkeypatch.setattr("recon.export.clean_scene", boom)
    for name, fmt in [("x.glb", None), ("x.ply", None), ("x.npz", None), ("x", "colmap"), ("x", "nerfstudio")]:
        with pytest.raises(FileNotFoundError, match="does not exist"):
            export(scene, tmp_path / "missing" / name, fmt)
    assert _leftovers(tmp_path) == []


def test_bad_photo_list_fails_before_cleaning(tmp_path, scene, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("cleaning ran before the photo check")

    monkeypatch.setattr("recon.export.clean_scene", boom)
    with pytest.raises(FileNotFoundError, match="source images not found"):
        export(scene, tmp_path / "c", "colmap", images=[tmp_path / n for n in scene.names])
    with pytest.raises(ValueError, match="3 views"):
        export(scene, tmp_path / "ns", "nerfstudio", images=[tmp_path / "a.png"])
    assert _leftovers(tmp_path) == []


def test_no_registered_camera(tmp_path, synth):
    s = synth.make_scene(2, registered=np.array([False, False]))
    with pytest.raises(ValueError, match="no registered camera"):
        export(s, tmp_path / "a.glb")


class TestAtomicity:
    def test_failing_file_export_leaves_nothing(self, tmp_path, scene, monkeypatch):
        def fail(self, *args, **kwargs):
            raise RuntimeError("disk full")

        monkeypatch.setattr(trimesh.Scene, "export", fail)
        with pytest.raises(RuntimeError, match="disk full"):
            export(scene, tmp_path / "a.glb")
        assert _leftovers(tmp_path) == []

    def test_failing_write_keeps_the_previous_file(self, tmp_path, scene, monkeypatch):
        path = export(scene, tmp_path / "a.ply")
        before = path.read_bytes()

        def fail(self, data):  # fails half-way through writing the temporary
            with open(self, "wb") as f:
                f.write(data[:10])
            raise OSError("disk full")

        monkeypatch.setattr("pathlib.Path.write_bytes", fail)
        with pytest.raises(OSError, match="disk full"):
            export(scene, path, conf_thr=3.0)
        assert path.read_bytes() == before
        assert _leftovers(tmp_path) == ["a.ply"]

    def test_failing_folder_export_leaves_nothing(self, tmp_path, scene, monkeypatch):
        def fail(path, model):
            path.write_text("partial")
            raise RuntimeError("interrupted")

        monkeypatch.setattr(colmap_module, "_write_points3D_txt", fail)
        with pytest.raises(RuntimeError, match="interrupted"):
            export(scene, tmp_path / "colmap", "colmap")
        assert _leftovers(tmp_path) == []

    def test_failing_folder_export_keeps_the_previous_one(self, tmp_path, scene, monkeypatch):
        out = export(scene, tmp_path / "colmap", "colmap", max_points=10)
        before = (out / "sparse" / "0" / "points3D.txt").read_text()

        def fail(path, model):
            raise RuntimeError("interrupted")

        monkeypatch.setattr(colmap_module, "_write_points3D_txt", fail)
        with pytest.raises(RuntimeError):
            export(scene, out, "colmap", max_points=20)
        assert (out / "sparse" / "0" / "points3D.txt").read_text() == before
        assert _leftovers(tmp_path) == ["colmap"]

    def test_folder_export_replaces_an_earlier_export(self, tmp_path, scene):
        out = export(scene, tmp_path / "ns", "nerfstudio", max_points=10)
        export(scene, out, "nerfstudio", max_points=20, point_cloud=False)
        assert _leftovers(out) == [MANIFEST, "transforms.json"]  # its own stale sparse_pc.ply is gone
        assert _leftovers(tmp_path) == ["ns"]

    def test_folder_with_foreign_files_keeps_them(self, tmp_path, scene):
        folder = tmp_path / "photos"
        folder.mkdir()
        (folder / "IMG_0001.jpg").write_bytes(b"precious")
        export(scene, folder, "colmap")
        assert _leftovers(folder) == [MANIFEST, "IMG_0001.jpg", "sparse"]
        assert (folder / "IMG_0001.jpg").read_bytes() == b"precious"
        assert _leftovers(tmp_path) == ["photos"]

    def test_foreign_file_at_an_output_name_is_refused(self, tmp_path, scene):
        folder = tmp_path / "project"
        (folder / "sparse" / "0").mkdir(parents=True)
        (folder / "sparse" / "0" / "points3D.txt").write_text("my own model")
        with pytest.raises(FileExistsError, match=r"recon did not write: sparse/0/points3D.txt"):
            export(scene, folder, "colmap")
        assert _leftovers(folder / "sparse" / "0") == ["points3D.txt"]  # nothing was moved in
        assert _leftovers(tmp_path) == ["project"]

    def test_outputs_get_the_permissions_of_a_plain_open(self, tmp_path, scene):
        umask = os.umask(0o022)
        os.umask(umask)
        path = export(scene, tmp_path / "a.glb")
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # tempfile alone would give 0o600
        folder = export(scene, tmp_path / "c", "colmap", max_points=5)
        assert folder.stat().st_mode & 0o777 == 0o777 & ~umask
