"""COLMAP export: read back by pycolmap (bin and txt), original-pixel intrinsics, consistent tracks."""

from __future__ import annotations

import numpy as np
import pycolmap
import pytest
from PIL import Image

from recon.export import ColmapOptions, export
from recon.export.colmap import rotmat_to_qvec
from recon.scene import valid_masks


def _read(folder, kind: str) -> pycolmap.Reconstruction:
    rec = pycolmap.Reconstruction()
    getattr(rec, f"read_{kind}")(str(folder / "sparse" / "0"))
    return rec


def _write_photos(folder, scene, synth) -> list:
    paths = []
    for k, name in enumerate(scene.names):
        big = np.kron(scene.colors[k], np.ones((int(synth.SCALE), int(synth.SCALE), 1), np.uint8))
        p = folder / name
        Image.fromarray(big).save(p)
        paths.append(p)
    return paths


@pytest.mark.parametrize("kind", ["binary", "text"])
def test_reads_back_with_consistent_projections(tmp_path, scene, synth, kind):
    out = export(scene, tmp_path / "colmap", ColmapOptions(max_points=500))
    rec = _read(out, kind)
    assert rec.num_images() == 3 and rec.num_cameras() == 3 and rec.num_points3D() == 500
    K_orig = scene.K_orig
    for image_id, image in rec.images.items():
        k = image_id - 1
        assert image.name == scene.names[k]
        cam = rec.cameras[image.camera_id]
        assert cam.model == pycolmap.CameraModelId.PINHOLE
        assert (cam.width, cam.height) == (synth.W * synth.SCALE, synth.H * synth.SCALE)
        np.testing.assert_allclose(cam.params, [*np.diag(K_orig[k])[:2], *(K_orig[k, :2, 2] + 0.5)], atol=1e-12)
        np.testing.assert_allclose(cam.params[:2], synth.SCALE * scene.K[k, 0, 0])  # fx in original pixels
        # cam_from_world is the inverse of our camera-to-world.
        np.testing.assert_allclose(image.cam_from_world().matrix(), np.linalg.inv(scene.T_world_cam[k])[:3], atol=1e-9)
    max_err = 0.0
    for point_id, point in rec.points3D.items():
        assert point.track.length() >= 1
        for el in point.track.elements:
            image = rec.images[el.image_id]
            obs = image.points2D[el.point2D_idx]
            assert obs.point3D_id == point_id
            proj = image.project_point(point.xyz)
            max_err = max(max_err, float(np.abs(proj - obs.xy).max()))
    assert max_err < 1e-6


def test_source_observation_is_the_pixel_in_original_pixels(tmp_path, scene, synth):
    """Hand-computed: network pixel (x, y) is original pixel 2x + 0.5 (centre at 0), 2x + 1 in COLMAP."""
    out = export(scene, tmp_path / "colmap", ColmapOptions(multi_view_tracks=False))
    rec = _read(out, "binary")
    assert rec.num_points3D() == 3 * synth.H * synth.W
    image = rec.images[2]  # view 1
    xy = np.array([p.xy for p in image.points2D])
    expected = np.stack(np.meshgrid(np.arange(synth.W), np.arange(synth.H)), -1).reshape(-1, 2) * 2.0 + 1.0
    np.testing.assert_allclose(xy, expected, atol=1e-9)
    for point in rec.points3D.values():
        assert point.track.length() == 1


def test_multi_view_tracks_link_overlapping_views(tmp_path, scene):
    rec = _read(export(scene, tmp_path / "colmap", ColmapOptions()), "binary")
    lengths = np.array([p.track.length() for p in rec.points3D.values()])
    assert lengths.max() == 3 and lengths.mean() > 2
    assert rec.compute_mean_reprojection_error() < 1e-6


def test_extra_observations_need_agreeing_depth(tmp_path, scene):
    # View 2 disagrees with the plane everywhere (a wrong depth map): nothing from views 0/1 is observed there.
    scene.depth[2] = scene.depth[2] * 1.5
    rec = _read(export(scene, tmp_path / "colmap", ColmapOptions(clean_depth=False)), "binary")
    for point in rec.points3D.values():
        images = {el.image_id for el in point.track.elements}
        assert not (3 in images and len(images) > 1)


def test_bin_and_txt_agree(tmp_path, scene):
    out = export(scene, tmp_path / "colmap", ColmapOptions(max_points=300))
    a, b = _read(out, "binary"), _read(out, "text")
    assert a.num_points3D() == b.num_points3D() == 300
    for pid, p in a.points3D.items():
        np.testing.assert_array_equal(p.xyz, b.points3D[pid].xyz)
        np.testing.assert_array_equal(p.color, b.points3D[pid].color)
        assert [(e.image_id, e.point2D_idx) for e in p.track.elements] == [
            (e.image_id, e.point2D_idx) for e in b.points3D[pid].track.elements
        ]


def test_conf_threshold_limits_points(tmp_path, scene):
    scene.conf[0][:] = 1.0
    out = export(scene, tmp_path / "colmap", ColmapOptions(conf_thr=1.5))
    rec = _read(out, "binary")
    assert rec.num_points3D() == sum(m.sum() for m in valid_masks(scene, 1.5))
    # View 0 keeps its pose but, with no confident pixel, neither contributes nor observes points.
    assert rec.num_images() == 3 and len(rec.images[1].points2D) == 0
    assert all(1 not in {e.image_id for e in p.track.elements} for p in rec.points3D.values())


def test_unregistered_view_is_left_out(tmp_path, synth):
    s = synth.make_scene(3, registered=np.array([True, False, True]))
    rec = _read(export(s, tmp_path / "colmap", ColmapOptions()), "binary")
    assert sorted(rec.images) == [1, 3]
    assert rec.num_points3D() == 2 * synth.H * synth.W


def test_images_are_copied_and_named(tmp_path, scene, synth):
    photos = tmp_path / "photos"
    photos.mkdir()
    scene.names = ["a b.png", "b.png", "c.png"]
    scene.paths = [str(p) for p in _write_photos(photos, scene, synth)]
    out = export(scene, tmp_path / "colmap", ColmapOptions(max_points=50))
    assert sorted(p.name for p in (out / "images").iterdir()) == ["a_b.png", "b.png", "c.png"]
    rec = _read(out, "text")
    assert sorted(i.name for i in rec.images.values()) == ["a_b.png", "b.png", "c.png"]
    linked = export(scene, tmp_path / "linked", ColmapOptions(link_images=True, max_points=50))
    assert (linked / "images" / "b.png").is_symlink()


def test_wrong_image_size_is_refused(tmp_path, scene):
    paths = []
    for name in scene.names:
        Image.new("RGB", (10, 10)).save(tmp_path / name)
        paths.append(str(tmp_path / name))
    scene.paths = paths
    with pytest.raises(ValueError, match="expects 64x48"):
        export(scene, tmp_path / "colmap", ColmapOptions())
    assert not (tmp_path / "colmap").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_exif_rotated_photo_is_written_upright(tmp_path, scene, synth):
    paths = _write_photos(tmp_path, scene, synth)
    # Store view 0 rotated on disk, with the EXIF tag that turns it back upright (6 = rotate 90 CW to view).
    upright = Image.open(paths[0]).convert("RGB")
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    paths[0] = tmp_path / "rot.jpg"
    stored.save(paths[0], exif=exif.tobytes(), quality=100)
    scene.paths = [str(p) for p in paths]
    out = export(scene, tmp_path / "colmap", ColmapOptions(max_points=10))
    with Image.open(out / "images" / "rot.jpg") as im:
        assert im.size == (synth.W * synth.SCALE, synth.H * synth.SCALE)
        assert im.getexif().get(0x0112, 1) == 1


def test_qvec_convention():
    # 90 degrees about z: (qw, qx, qy, qz) = (cos 45, 0, 0, sin 45), and qw >= 0 after a sign flip.
    R = np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
    np.testing.assert_allclose(rotmat_to_qvec(R), [np.sqrt(0.5), 0, 0, np.sqrt(0.5)], atol=1e-12)
    with pytest.raises(ValueError, match="orthonormal"):
        rotmat_to_qvec(2 * R)
