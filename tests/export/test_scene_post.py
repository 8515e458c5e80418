"""recon.scene: validity masks, depth cleaning, point extraction, .npz round trip."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from recon.scene import (
    SceneError,
    check_scene,
    cleaned_conf,
    load_scene,
    sample_masks,
    save_scene,
    scene_points,
    scene_to_arrays,
    valid_masks,
)
from recon.types import Scene


class TestValidMasks:
    def test_threshold_is_strict_and_invalid_depth_is_dropped(self, scene):
        scene.conf[0][0, 0] = 1.5  # == thr: out
        scene.conf[0][0, 1] = 1.6  # > thr: in
        scene.depth[0][1, 0] = np.nan
        scene.depth[0][1, 1] = -1.0
        scene.depth[0][1, 2] = 0.0
        m = valid_masks(scene, 1.5)[0]
        assert not m[0, 0] and m[0, 1]
        assert not m[1, 0] and not m[1, 1] and not m[1, 2]
        assert m.sum() == m.size - 4

    def test_unregistered_view_is_empty(self, synth):
        s = synth.make_scene(3, registered=np.array([True, False, True]))
        masks = valid_masks(s, 1.0)
        assert masks[0].all() and not masks[1].any() and masks[2].all()


class TestScenePoints:
    def test_points_match_pts3d_world(self, scene):
        scene.conf[1][3:6, 4:9] = 1.0  # below the threshold
        xyz, rgb, view, pix = scene_points(scene, conf_thr=1.5, clean=False)
        assert xyz.shape == (3 * scene.depth[0].size - 15, 3) and xyz.dtype == np.float32
        assert rgb.dtype == np.uint8 and view.shape == (len(xyz),) and pix.shape == (len(xyz), 2)
        for k in range(3):
            sel = view == k
            x, y = pix[sel, 0], pix[sel, 1]
            np.testing.assert_allclose(xyz[sel], scene.pts3d_world(k)[y, x], rtol=0, atol=1e-5)
            np.testing.assert_array_equal(rgb[sel], scene.colors[k][y, x])
        assert not ((view == 1) & (pix[:, 1] >= 3) & (pix[:, 1] < 6) & (pix[:, 0] >= 4) & (pix[:, 0] < 9)).any()

    def test_points_lie_on_the_plane(self, scene, synth):
        xyz, *_ = scene_points(scene)
        np.testing.assert_allclose(xyz[:, 2], synth.PLANE_Z, rtol=0, atol=1e-4)

    def test_max_points_is_a_reproducible_subset(self, scene):
        full = scene_points(scene, clean=False)
        a = scene_points(scene, clean=False, max_points=100, seed=3)
        b = scene_points(scene, clean=False, max_points=100, seed=3)
        assert len(a[0]) == 100
        np.testing.assert_array_equal(a[0], b[0])
        keys_full = set(zip(full[2].tolist(), map(tuple, full[3].tolist()), strict=True))
        keys_sub = set(zip(a[2].tolist(), map(tuple, a[3].tolist()), strict=True))
        assert keys_sub <= keys_full and len(keys_sub) == 100

    def test_sample_masks_keeps_all_under_budget(self):
        masks = [np.ones((2, 3), bool), np.zeros((4, 4), bool)]
        out = sample_masks(masks, 10)
        assert out[0].all() and not out[1].any()
        assert sum(m.sum() for m in sample_masks(masks, 4)) == 4


def _floater_setup(scene: Scene, depth_scale: float, conf_floater: float) -> tuple[int, int]:
    """Move view 0's centre pixel along its ray to ``depth_scale`` times its plane depth; returns (y, x)."""
    y, x = 12, 16
    scene.depth[0][y, x] *= depth_scale
    scene.conf[0][y, x] = conf_floater
    return y, x


class TestCleaning:
    def test_floating_point_in_front_of_other_views_is_demoted(self, scene):
        y, x = _floater_setup(scene, 0.5, conf_floater=3.0)  # other views see the plane with conf 5
        conf = cleaned_conf(scene)
        assert conf[0][y, x] == 0.0
        # Nothing else moved: every other pixel lies on the plane, seen consistently.
        conf[0][y, x] = scene.conf[0][y, x]
        for k in range(3):
            np.testing.assert_array_equal(conf[k], scene.conf[k])
        xyz, _, view, pix = scene_points(scene, conf_thr=1.5, clean=True)
        assert not ((view == 0) & (pix[:, 0] == x) & (pix[:, 1] == y)).any()
        assert len(xyz) == 3 * scene.depth[0].size - 1
        kept = scene_points(scene, conf_thr=1.5, clean=False)
        assert ((kept[2] == 0) & (kept[3][:, 0] == x) & (kept[3][:, 1] == y)).any()

    def test_more_confident_floater_is_kept(self, scene):
        y, x = _floater_setup(scene, 0.5, conf_floater=9.0)
        assert cleaned_conf(scene)[0][y, x] == 9.0

    def test_occluded_point_behind_the_surface_is_kept(self, scene):
        y, x = _floater_setup(scene, 1.5, conf_floater=3.0)  # behind the plane: plain occlusion
        assert cleaned_conf(scene)[0][y, x] == 3.0

    def test_tolerance(self, scene):
        y, x = _floater_setup(scene, 0.998, conf_floater=3.0)  # 0.2% in front
        assert cleaned_conf(scene, tol=0.001)[0][y, x] == 0.0
        assert cleaned_conf(scene, tol=0.01)[0][y, x] == 3.0

    def test_bad_conf_is_a_ceiling(self, scene):
        y, x = _floater_setup(scene, 0.5, conf_floater=3.0)
        assert cleaned_conf(scene, bad_conf=2.0)[0][y, x] == 2.0

    def test_input_is_not_mutated(self, scene):
        _floater_setup(scene, 0.5, conf_floater=3.0)
        before = copy.deepcopy(scene)
        cleaned_conf(scene)
        scene_points(scene, clean=True)
        for k in range(3):
            np.testing.assert_array_equal(scene.conf[k], before.conf[k])
            np.testing.assert_array_equal(scene.depth[k], before.depth[k])

    def test_unregistered_views_neither_clean_nor_are_cleaned(self, synth):
        s = synth.make_scene(3, registered=np.array([True, True, False]))
        y, x = _floater_setup(s, 0.5, conf_floater=3.0)
        s.conf[1][:] = 1.0  # view 1 less confident than the floater; view 2 (unregistered) more
        assert cleaned_conf(s)[0][y, x] == 3.0

    def test_order_independent(self, scene):
        # Views 0 and 2 both hold a floater seen by the other views; permuting the views permutes the result.
        _floater_setup(scene, 0.5, conf_floater=3.0)
        scene.depth[2][5, 5] *= 0.6
        scene.conf[2][5, 5] = 2.0
        perm = [2, 0, 1]
        permuted = Scene(
            T_world_cam=scene.T_world_cam[perm],
            K=scene.K[perm],
            depth=[scene.depth[p] for p in perm],
            conf=[scene.conf[p] for p in perm],
            colors=[scene.colors[p] for p in perm],
            names=[scene.names[p] for p in perm],
        )
        a, b = cleaned_conf(scene), cleaned_conf(permuted)
        for i, p in enumerate(perm):
            np.testing.assert_array_equal(b[i], a[p])
        assert a[2][5, 5] == 0.0

    def test_bad_tolerance(self, scene):
        with pytest.raises(ValueError, match="tol"):
            cleaned_conf(scene, tol=1.0)


class TestCheckScene:
    def test_mismatched_shapes_name_the_field(self, scene):
        scene.conf[1] = scene.conf[1][:-1]
        with pytest.raises(SceneError, match=r"conf\[1\]"):
            check_scene(scene)

    def test_colors_must_be_uint8(self, scene):
        scene.colors[2] = scene.colors[2] / 255.0
        with pytest.raises(SceneError, match=r"colors\[2\] must be uint8"):
            check_scene(scene)

    def test_wrong_list_length(self, scene):
        scene.names = scene.names[:2]
        with pytest.raises(SceneError, match="names"):
            check_scene(scene)

    def test_paths_one_per_view(self, scene):
        scene.paths = ["a.png", None]
        with pytest.raises(SceneError, match="paths must be N=3 strings or None"):
            check_scene(scene)
        scene.paths = ["a.png", None, 3]
        with pytest.raises(SceneError, match="paths must be N=3 strings or None"):
            check_scene(scene)


class TestNpz:
    def _assert_same(self, a: Scene, b: Scene):
        for field in ("T_world_cam", "K"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
            assert getattr(a, field).dtype == getattr(b, field).dtype
        for field in ("depth", "conf", "colors"):
            for x, y in zip(getattr(a, field), getattr(b, field), strict=True):
                np.testing.assert_array_equal(x, y)
                assert x.dtype == y.dtype
        assert a.names == b.names and a.info == b.info and a.orig_sizes == b.orig_sizes and a.paths == b.paths
        if a.net_to_orig is None:
            assert b.net_to_orig is None
        else:
            np.testing.assert_array_equal(np.stack(a.net_to_orig), np.stack(b.net_to_orig))
        if a.registered is None:
            assert b.registered is None
        else:
            np.testing.assert_array_equal(a.registered, b.registered)

    def test_round_trip_exact(self, tmp_path, synth):
        s = synth.make_scene(3, registered=np.array([True, False, True]))
        s.depth[1][0, 0] = np.nan
        s.names[2] = "photo with spaces é.jpg"
        path = save_scene(s, tmp_path / "scene.npz")
        self._assert_same(s, load_scene(path))
        with np.load(path, allow_pickle=False) as data:
            assert all(data[k].dtype != object for k in data.files)

    def test_paths_round_trip(self, tmp_path, synth):
        s = synth.make_scene(3)
        s.paths = ["/photos/a b é.jpg", None, "relative/c.png"]  # None: a video frame, no file of its own
        back = load_scene(save_scene(s, tmp_path / "p.npz"))
        assert back.paths == ["/photos/a b é.jpg", None, "relative/c.png"]
        self._assert_same(s, back)

    def test_file_from_before_paths_loads_with_none(self, tmp_path, synth):
        s = synth.make_scene(2)
        s.paths = ["a.png", "b.png"]
        arrays = scene_to_arrays(s)
        del arrays["paths"]
        np.savez(tmp_path / "old.npz", **arrays)
        back = load_scene(tmp_path / "old.npz")
        assert back.paths is None and back.names == s.names

    def test_round_trip_without_optional_fields(self, tmp_path, synth):
        s = synth.make_scene(2, with_orig=False)
        s.info = {}
        back = load_scene(save_scene(s, tmp_path / "s.data"))  # any name: no ".npz" appended
        assert (tmp_path / "s.data").is_file() and not (tmp_path / "s.data.npz").exists()
        self._assert_same(s, back)

    def test_mixed_view_shapes(self, tmp_path, scene):
        scene.depth[1] = scene.depth[1][:16].copy()
        scene.conf[1] = scene.conf[1][:16].copy()
        scene.colors[1] = scene.colors[1][:16].copy()
        self._assert_same(scene, load_scene(save_scene(scene, tmp_path / "m.npz")))

    def test_foreign_npz_is_refused(self, tmp_path):
        np.savez(tmp_path / "other.npz", a=np.zeros(3))
        with pytest.raises(SceneError, match="not a recon scene file"):
            load_scene(tmp_path / "other.npz")

    def test_missing_folder(self, tmp_path, scene):
        with pytest.raises(FileNotFoundError, match="does not exist"):
            save_scene(scene, tmp_path / "nope" / "s.npz")
