"""``recon.export.export``: format resolution, PLY / npz outputs, clear errors, atomic writes."""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest
import trimesh

import recon.export.colmap as colmap_module
from recon.export import (
    DEFAULT_SPARSE_POINTS,
    ColmapOptions,
    ExportOptionsError,
    GlbOptions,
    NerfstudioOptions,
    NpzOptions,
    PlyOptions,
    export,
    resolve_options,
)
from recon.export._atomic import MANIFEST
from recon.export.options import PointOptions
from recon.export.ply import ply_bytes
from recon.scene import SceneError, load_scene, scene_points


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


class TestResolveOptions:
    @pytest.mark.parametrize(("name", "kind"), [("a.glb", GlbOptions), ("a.PLY", PlyOptions), ("a.npz", NpzOptions)])
    def test_defaults_from_extension(self, tmp_path, name, kind):
        assert resolve_options(tmp_path / name) == kind()

    def test_options_name_the_format(self, tmp_path):
        options = ColmapOptions(max_points=5)
        assert resolve_options(tmp_path / "out", options) is options
        assert isinstance(resolve_options(tmp_path / "out.d", NerfstudioOptions()), NerfstudioOptions)

    def test_errors(self, tmp_path):
        with pytest.raises(ExportOptionsError, match="cannot tell the export format"):
            resolve_options(tmp_path / "out")
        with pytest.raises(ExportOptionsError, match=r"GlbOptions writes glb, which does not match the name 'a.ply'"):
            resolve_options(tmp_path / "a.ply", GlbOptions())
        with pytest.raises(TypeError, match="export options must be one of"):
            resolve_options(tmp_path / "a", PointOptions())


class TestOptionsValidation:
    """Each options type refuses out-of-range values and contradicting settings at construction, in one line."""

    @pytest.mark.parametrize("kind", [GlbOptions, PlyOptions, ColmapOptions, NerfstudioOptions])
    @pytest.mark.parametrize(
        ("field", "value", "message"),
        [
            ("conf_thr", -1.0, "conf_thr must be a finite number >= 0, got -1.0"),
            ("conf_thr", float("nan"), "conf_thr must be a finite number >= 0, got nan"),
            ("clean_tol", 0.0, "clean_tol must be a finite number > 0, got 0.0"),
            ("max_points", 0, "max_points must be an integer >= 1, got 0"),
            ("max_points", 2.5, "max_points must be an integer >= 1, got 2.5"),
            ("tsdf_thresh", float("inf"), "tsdf_thresh must be a finite number >= 0, got inf"),
            ("seed", -1, "seed must be an integer >= 0, got -1"),
        ],
    )
    def test_point_settings(self, kind, field, value, message):
        with pytest.raises(ExportOptionsError) as info:
            kind(**{field: value})
        assert str(info.value) == message

    def test_npz(self):
        assert NpzOptions(tsdf_thresh=0.5, seed=3).tsdf_thresh == 0.5
        with pytest.raises(ExportOptionsError, match="tsdf_thresh must be a finite number >= 0"):
            NpzOptions(tsdf_thresh=-0.1)
        with pytest.raises(TypeError):
            NpzOptions(conf_thr=1.0)  # an .npz keeps every pixel: no point settings

    @pytest.mark.parametrize("kind", [GlbOptions, PlyOptions])
    def test_mesh_has_no_point_budget(self, kind):
        assert kind(mesh=True).mesh and kind(max_points=10).max_points == 10
        with pytest.raises(ExportOptionsError, match="max_points cannot apply to a mesh"):
            kind(mesh=True, max_points=10)

    def test_glb(self):
        assert GlbOptions(cam_size=0.5, frame="world").frame == "world"
        with pytest.raises(ExportOptionsError, match="cam_size must be a finite number > 0, got 0"):
            GlbOptions(cam_size=0)
        with pytest.raises(ExportOptionsError, match="cameras=False leaves them out"):
            GlbOptions(cameras=False, cam_size=0.5)
        with pytest.raises(ExportOptionsError, match="frame must be one of first_camera, world, got 'camera0'"):
            GlbOptions(frame="camera0")
        with pytest.raises(TypeError):
            PlyOptions(cameras=False)  # a .ply has no camera frustums

    @pytest.mark.parametrize("kind", [ColmapOptions, NerfstudioOptions])
    def test_photo_formats(self, kind):
        assert kind().max_points == DEFAULT_SPARSE_POINTS and kind(max_points=None).max_points is None
        assert kind(link_images=True).link_images
        with pytest.raises(ExportOptionsError, match="photos=False leaves them out"):
            kind(photos=False, link_images=True)

    def test_options_are_frozen(self):
        with pytest.raises(dataclasses.FrozenInstanceError):
            GlbOptions().mesh = True


class TestPly:
    def test_points_read_back(self, tmp_path, scene):
        path = export(scene, tmp_path / "cloud.ply", PlyOptions(conf_thr=1.5))
        assert path.read_bytes().startswith(b"ply\nformat binary_little_endian 1.0\n")
        cloud = trimesh.load(path)
        xyz, rgb, _, _ = scene_points(scene, conf_thr=1.5)
        np.testing.assert_allclose(cloud.vertices, xyz, atol=0)
        np.testing.assert_array_equal(cloud.colors[:, :3], rgb)

    def test_mesh_reads_back(self, tmp_path, synth):
        s = synth.make_scene(1)
        mesh = trimesh.load(export(s, tmp_path / "mesh.ply", PlyOptions(mesh=True)), process=False)
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
    for name, options in [
        ("x.glb", None),
        ("x.ply", None),
        ("x.npz", None),
        ("x", ColmapOptions()),
        ("x", NerfstudioOptions()),
    ]:
        with pytest.raises(FileNotFoundError, match="does not exist"):
            export(scene, tmp_path / "missing" / name, options)
    assert _leftovers(tmp_path) == []


def test_bad_photo_list_fails_before_cleaning(tmp_path, scene, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("cleaning ran before the photo check")

    monkeypatch.setattr("recon.export.clean_scene", boom)
    scene.paths = [str(tmp_path / n) for n in scene.names]
    with pytest.raises(FileNotFoundError, match="source images not found"):
        export(scene, tmp_path / "c", ColmapOptions())
    scene.paths = [str(tmp_path / "a.png")] * len(scene)
    with pytest.raises(ValueError, match=r"exported image names must be unique; repeated: \['a.png'\]"):
        export(scene, tmp_path / "ns", NerfstudioOptions())
    scene.paths = [str(tmp_path / "a.png")]
    with pytest.raises(SceneError, match="paths must be N=3 strings or None"):
        export(scene, tmp_path / "ns", NerfstudioOptions())
    assert _leftovers(tmp_path) == []


def test_views_without_photo_files_are_named_without_photos(tmp_path, scene):
    scene.paths = [None] * len(scene)  # video frames
    out = export(scene, tmp_path / "ns", NerfstudioOptions())
    assert not (out / "images").exists()
    frames = json.loads((out / "transforms.json").read_text())["frames"]
    assert [f["file_path"] for f in frames] == [f"images/{n}" for n in scene.names]


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
            export(scene, path, PlyOptions(conf_thr=3.0))
        assert path.read_bytes() == before
        assert _leftovers(tmp_path) == ["a.ply"]

    def test_failing_folder_export_leaves_nothing(self, tmp_path, scene, monkeypatch):
        def fail(path, model):
            path.write_text("partial")
            raise RuntimeError("interrupted")

        monkeypatch.setattr(colmap_module, "_write_points3D_txt", fail)
        with pytest.raises(RuntimeError, match="interrupted"):
            export(scene, tmp_path / "colmap", ColmapOptions())
        assert _leftovers(tmp_path) == []

    def test_failing_folder_export_keeps_the_previous_one(self, tmp_path, scene, monkeypatch):
        out = export(scene, tmp_path / "colmap", ColmapOptions(max_points=10))
        before = (out / "sparse" / "0" / "points3D.txt").read_text()

        def fail(path, model):
            raise RuntimeError("interrupted")

        monkeypatch.setattr(colmap_module, "_write_points3D_txt", fail)
        with pytest.raises(RuntimeError):
            export(scene, out, ColmapOptions(max_points=20))
        assert (out / "sparse" / "0" / "points3D.txt").read_text() == before
        assert _leftovers(tmp_path) == ["colmap"]

    def test_folder_export_replaces_an_earlier_export(self, tmp_path, scene):
        out = export(scene, tmp_path / "ns", NerfstudioOptions(max_points=10))
        export(scene, out, NerfstudioOptions(max_points=20, point_cloud=False))
        assert _leftovers(out) == [MANIFEST, "transforms.json"]  # its own stale sparse_pc.ply is gone
        assert _leftovers(tmp_path) == ["ns"]

    def test_folder_with_foreign_files_keeps_them(self, tmp_path, scene):
        folder = tmp_path / "photos"
        folder.mkdir()
        (folder / "IMG_0001.jpg").write_bytes(b"precious")
        export(scene, folder, ColmapOptions())
        assert _leftovers(folder) == [MANIFEST, "IMG_0001.jpg", "sparse"]
        assert (folder / "IMG_0001.jpg").read_bytes() == b"precious"
        assert _leftovers(tmp_path) == ["photos"]

    def test_foreign_file_at_an_output_name_is_refused(self, tmp_path, scene):
        folder = tmp_path / "project"
        (folder / "sparse" / "0").mkdir(parents=True)
        (folder / "sparse" / "0" / "points3D.txt").write_text("my own model")
        with pytest.raises(FileExistsError, match=r"recon did not write: sparse/0/points3D.txt"):
            export(scene, folder, ColmapOptions())
        assert _leftovers(folder / "sparse" / "0") == ["points3D.txt"]  # nothing was moved in
        assert _leftovers(tmp_path) == ["project"]

    def test_outputs_get_the_permissions_of_a_plain_open(self, tmp_path, scene):
        umask = os.umask(0o022)
        os.umask(umask)
        path = export(scene, tmp_path / "a.glb")
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # tempfile alone would give 0o600
        folder = export(scene, tmp_path / "c", ColmapOptions(max_points=5))
        assert folder.stat().st_mode & 0o777 == 0o777 & ~umask


def test_default_threshold_that_leaves_nothing_exports_every_point_and_says_so(tmp_path, synth, caplog):
    """A model that is nowhere confident (every confidence 0.01, below the sparse demo's 1.5) still gives a point
    cloud with the default threshold, with a warning; an explicit threshold is obeyed even when it leaves nothing."""
    scene = synth.make_scene(conf=0.01)
    scene.info["method"] = "sparse"
    export(scene, tmp_path / "a.ply")
    assert "no pixel is above the default confidence threshold 1.5" in caplog.text
    caplog.clear()
    export(scene, tmp_path / "b.ply", PlyOptions(conf_thr=1.5))
    assert "default confidence threshold" not in caplog.text

    def vertices(path):
        header = path.read_bytes().split(b"end_header")[0].decode()
        return int(next(line.split()[-1] for line in header.splitlines() if line.startswith("element vertex")))

    assert vertices(tmp_path / "a.ply") == scene.depth[0].size * len(scene)  # every pixel, none of the plane lost
    assert vertices(tmp_path / "b.ply") == 0
