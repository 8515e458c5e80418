"""nerfstudio ``transforms.json``: fields, OpenGL camera flip, original-pixel intrinsics, point cloud."""

from __future__ import annotations

import json

import numpy as np
import trimesh
from PIL import Image

from recon.export import NerfstudioOptions, export
from recon.scene import scene_points

FLIP = np.diag([1.0, -1.0, -1.0, 1.0])


def _meta(folder) -> dict:
    return json.loads((folder / "transforms.json").read_text())


def test_fields_and_shared_intrinsics(tmp_path, scene, synth):
    meta = _meta(export(scene, tmp_path / "ns", NerfstudioOptions()))
    assert meta["camera_model"] == "OPENCV"
    assert all(meta[k] == 0.0 for k in ("k1", "k2", "p1", "p2"))
    assert (meta["w"], meta["h"]) == (synth.W * synth.SCALE, synth.H * synth.SCALE)
    K_orig = scene.K_orig[0]
    assert meta["fl_x"] == K_orig[0, 0] and meta["fl_y"] == K_orig[1, 1]
    assert meta["cx"] == K_orig[0, 2] + 0.5 and meta["cy"] == K_orig[1, 2] + 0.5
    assert [f["file_path"] for f in meta["frames"]] == [f"images/{n}" for n in scene.names]
    for f in meta["frames"]:
        assert "fl_x" not in f and np.asarray(f["transform_matrix"]).shape == (4, 4)


def test_matrices_invert_to_our_poses(tmp_path, scene):
    meta = _meta(export(scene, tmp_path / "ns", NerfstudioOptions()))
    for k, f in enumerate(meta["frames"]):
        M = np.asarray(f["transform_matrix"])
        np.testing.assert_allclose(M @ FLIP, scene.T_world_cam[k], atol=1e-12)
        # nerfstudio cameras look down their -z axis: -M[:3, 2] is our optical axis.
        np.testing.assert_allclose(-M[:3, 2], scene.T_world_cam[k, :3, 2], atol=1e-12)


def test_rays_pass_through_the_points(tmp_path, scene):
    """nerfstudio's ray of pixel coordinate (u, v) in camera space is ((u - cx)/fx, -(v - cy)/fy, -1)."""
    meta = _meta(export(scene, tmp_path / "ns", NerfstudioOptions()))
    xyz, _, view, pix = scene_points(scene)
    for k, f in enumerate(meta["frames"]):
        sel = view == k
        # Network pixel x is original pixel 2x + 0.5 (centre at 0), i.e. nerfstudio coordinate 2x + 1.
        u, v = 2.0 * pix[sel, 0] + 1.0, 2.0 * pix[sel, 1] + 1.0
        rays = np.stack([(u - meta["cx"]) / meta["fl_x"], -(v - meta["cy"]) / meta["fl_y"], -np.ones_like(u)], -1)
        M = np.asarray(f["transform_matrix"])
        d = rays @ M[:3, :3].T
        to_point = xyz[sel].astype(np.float64) - M[:3, 3]
        cos = np.einsum("ij,ij->i", d, to_point) / np.linalg.norm(d, axis=1) / np.linalg.norm(to_point, axis=1)
        assert (1 - cos).max() < 1e-9


def test_per_frame_intrinsics_when_they_differ(tmp_path, synth):
    s = synth.make_scene(3, focals=(30.0, 31.0, 30.0))
    meta = _meta(export(s, tmp_path / "ns", NerfstudioOptions()))
    assert "fl_x" not in meta
    assert [f["fl_x"] for f in meta["frames"]] == [60.0, 62.0, 60.0]
    assert all({"fl_x", "fl_y", "cx", "cy", "w", "h"} <= set(f) for f in meta["frames"])


def test_point_cloud_and_images(tmp_path, scene, synth):
    paths = []
    for k, name in enumerate(scene.names):
        Image.fromarray(np.kron(scene.colors[k], np.ones((2, 2, 1), np.uint8))).save(tmp_path / name)
        paths.append(str(tmp_path / name))
    scene.paths = paths
    out = export(scene, tmp_path / "ns", NerfstudioOptions(max_points=123))
    meta = _meta(out)
    assert meta["ply_file_path"] == "sparse_pc.ply"
    cloud = trimesh.load(out / meta["ply_file_path"])
    assert len(cloud.vertices) == 123
    for f in meta["frames"]:
        with Image.open(out / f["file_path"]) as im:
            assert im.size == (meta["w"], meta["h"])
    no_ply = _meta(export(scene, tmp_path / "ns2", NerfstudioOptions(point_cloud=False)))
    assert "ply_file_path" not in no_ply and not (tmp_path / "ns2" / "sparse_pc.ply").exists()


def test_unregistered_view_is_left_out(tmp_path, synth):
    s = synth.make_scene(3, registered=np.array([True, True, False]))
    meta = _meta(export(s, tmp_path / "ns", NerfstudioOptions()))
    assert [f["file_path"] for f in meta["frames"]] == ["images/view_0.png", "images/view_1.png"]
    assert meta["unregistered"] == [s.names[2]]
