"""``.glb`` export: loads in trimesh with one frustum per registered camera and points that undo to the world."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from recon.export import GlbOptions, export
from recon.export.glb import OPENGL, glb_transform
from recon.export.mesh import grid_faces
from recon.scene import scene_points


def _load(path) -> trimesh.Scene:
    loaded = trimesh.load(path, force="scene")
    assert isinstance(loaded, trimesh.Scene)
    return loaded


def _frustums(glb: trimesh.Scene) -> list[str]:
    return sorted(n for n in glb.geometry if n.startswith("camera_") and not n.endswith("_image"))


def _to_world(glb: trimesh.Scene, pts: np.ndarray) -> np.ndarray:
    A = np.asarray(glb.metadata["recon"]["glb_from_world"])
    return trimesh.transform_points(pts, np.linalg.inv(A))


def _world_vertices(glb: trimesh.Scene, name: str) -> np.ndarray:
    # Geometry may sit under a node transform; dump applies it (ours are identity, baked into the vertices).
    transform = glb.graph[glb.graph.geometry_nodes[name][0]][0]
    return _to_world(glb, trimesh.transform_points(glb.geometry[name].vertices, transform))


class TestPointCloud:
    def test_points_and_frustums(self, tmp_path, scene):
        scene.conf[2][:4] = 1.0
        path = export(scene, tmp_path / "scene.glb", GlbOptions(conf_thr=1.5))
        glb = _load(path)
        assert _frustums(glb) == ["camera_000", "camera_001", "camera_002"]
        assert isinstance(glb.geometry["points"], trimesh.PointCloud)
        xyz, rgb, _, _ = scene_points(scene, conf_thr=1.5)
        pts = _world_vertices(glb, "points")
        assert pts.shape == xyz.shape
        np.testing.assert_allclose(pts, xyz, rtol=0, atol=1e-4)
        np.testing.assert_array_equal(glb.geometry["points"].colors[:, :3], rgb)

    def test_documented_transform(self, tmp_path, scene):
        glb = _load(export(scene, tmp_path / "s.glb"))
        A = np.asarray(glb.metadata["recon"]["glb_from_world"])
        np.testing.assert_allclose(A, OPENGL @ np.linalg.inv(scene.T_world_cam[0]), atol=1e-12)
        np.testing.assert_allclose(A, glb_transform(scene), atol=1e-12)
        # Camera 0 sits at the origin looking down -z (glTF's default view direction), y up.
        apex = _world_vertices(glb, "camera_000").mean(axis=0)  # not the apex, but on camera 0's axis
        local = trimesh.transform_points(apex[None], A)[0]
        assert local[2] < 0 and abs(local[0]) < 1e-6 and abs(local[1]) < 1e-6
        assert (glb.geometry["points"].vertices[:, 2] < 0).all()
        # A point below the image centre of camera 0 (larger OpenCV y) is lower (smaller y) in the glb.
        below = scene.T_world_cam[0] @ np.array([0.0, 1.0, 5.0, 1.0])
        above = scene.T_world_cam[0] @ np.array([0.0, -1.0, 5.0, 1.0])
        assert (A @ below)[1] < (A @ above)[1]

    def test_world_frame(self, tmp_path, scene):
        glb = _load(export(scene, tmp_path / "w.glb", GlbOptions(frame="world")))
        np.testing.assert_array_equal(np.asarray(glb.metadata["recon"]["glb_from_world"]), OPENGL)
        np.testing.assert_allclose(_world_vertices(glb, "points"), scene_points(scene)[0], atol=1e-4)

    def test_frustum_apex_at_camera_centre(self, tmp_path, scene):
        glb = _load(export(scene, tmp_path / "s.glb", GlbOptions(cam_size=0.5)))
        for k in range(3):
            v = _world_vertices(glb, f"camera_{k:03d}")
            d = np.linalg.norm(v - scene.T_world_cam[k, :3, 3], axis=1)
            assert d.min() < 0.01  # the tube around the apex
            # The far corners sit at depth cam_size in front of the camera.
            z = (v - scene.T_world_cam[k, :3, 3]) @ scene.T_world_cam[k, :3, 2]
            np.testing.assert_allclose(z.max(), 0.5, atol=0.02)

    def test_textured_cameras(self, tmp_path, scene):
        glb = _load(export(scene, tmp_path / "s.glb"))
        quad = glb.geometry["camera_001_image"]
        image = quad.visual.material.baseColorTexture
        assert image.size == (scene.colors[1].shape[1], scene.colors[1].shape[0])
        np.testing.assert_array_equal(np.asarray(image.convert("RGB")), scene.colors[1])
        plain = _load(export(scene, tmp_path / "p.glb", GlbOptions(textured_cameras=False)))
        assert not [n for n in plain.geometry if n.endswith("_image")]
        assert len(_frustums(plain)) == 3

    def test_no_cameras(self, tmp_path, scene):
        glb = _load(export(scene, tmp_path / "s.glb", GlbOptions(cameras=False)))
        assert list(glb.geometry) == ["points"]

    def test_unregistered_camera_is_left_out(self, tmp_path, synth):
        s = synth.make_scene(3, registered=np.array([False, True, True]))
        glb = _load(export(s, tmp_path / "s.glb"))
        assert _frustums(glb) == ["camera_001", "camera_002"]
        # The first *registered* camera defines the frame.
        np.testing.assert_allclose(glb.metadata["recon"]["glb_from_world"], OPENGL @ np.linalg.inv(s.T_world_cam[1]))
        assert len(glb.geometry["points"].vertices) == 2 * s.depth[0].size
        assert glb.metadata["recon"]["unregistered"] == [s.names[0]]  # named, not silently missing

    def test_depth_cleaning_applies(self, tmp_path, scene):
        scene.depth[0][12, 16] *= 0.5
        scene.conf[0][12, 16] = 3.0
        n_clean = len(_load(export(scene, tmp_path / "c.glb")).geometry["points"].vertices)
        n_raw = len(_load(export(scene, tmp_path / "r.glb", GlbOptions(clean_depth=False))).geometry["points"].vertices)
        assert n_raw == n_clean + 1 == 3 * scene.depth[0].size


class TestMesh:
    def test_grid_faces_hand_count(self):
        mask = np.ones((4, 5), bool)
        assert len(grid_faces(mask)) == 2 * 3 * 4
        mask[1, 2] = False  # an interior vertex touches 6 triangles of this triangulation
        assert len(grid_faces(mask)) == 2 * 3 * 4 - 6
        mask[0, 0] = False  # a corner touches 1 (the tl-bl-tr triangle of its quad)
        assert len(grid_faces(mask)) == 2 * 3 * 4 - 7

    def test_mesh_export(self, tmp_path, scene, synth):
        scene.conf[0][5, 5] = 1.0
        glb = _load(export(scene, tmp_path / "m.glb", GlbOptions(mesh=True)))
        mesh = glb.geometry["mesh"]
        H, W = synth.H, synth.W
        assert len(mesh.faces) == 3 * 2 * (H - 1) * (W - 1) - 6
        assert mesh.visual.material.doubleSided is True
        np.testing.assert_allclose(_world_vertices(glb, "mesh")[:, 2], synth.PLANE_Z, atol=1e-4)
        assert len(_frustums(glb)) == 3

    def test_normals_face_their_camera(self, tmp_path, synth):
        s = synth.make_scene(1)
        glb = _load(export(s, tmp_path / "m.glb", GlbOptions(mesh=True, frame="world")))
        mesh = glb.geometry["mesh"]
        normals_world = mesh.face_normals @ OPENGL[:3, :3]  # OPENGL is its own inverse
        to_camera = s.T_world_cam[0, :3, 3] - _to_world(glb, mesh.triangles_center)
        assert (np.einsum("ij,ij->i", normals_world, to_camera) > 0).all()


def test_bad_frame(tmp_path, scene):
    with pytest.raises(ValueError, match="first_camera"):
        export(scene, tmp_path / "s.glb", GlbOptions(frame="camera0"))
    assert not list(tmp_path.iterdir())
