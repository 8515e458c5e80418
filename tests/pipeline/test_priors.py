"""User priors in original pixels become network-pixel priors by view index."""

import json

import numpy as np
import pytest
import torch

from recon.pipeline import ReconstructionError, UserPriors, build_priors, read_camera_file
from recon.types import View


def view(k, scale=0.25, crop=(8.0, 0.0), exif=None):
    # network pixel x -> original pixel (x + crop_x) / scale   (resize by `scale`, then crop)
    A = np.array([[1 / scale, 0, crop[0] / scale], [0, 1 / scale, crop[1] / scale], [0, 0, 1]])
    return View(image=torch.zeros(3, 32, 48), idx=k, name=f"img{k}.jpg", net_to_orig=A, focal_exif=exif)


def test_intrinsics_file_converted_to_network_pixels(tmp_path):
    K0 = np.array([[800.0, 0, 100.0], [0, 810.0, 64.0], [0, 0, 1]])
    (tmp_path / "cams.json").write_text(json.dumps({"img0.jpg": {"K": K0.tolist()}, "img1": {"fx": 400, "fy": 400}}))
    views = [view(0), view(1), view(2)]
    pri = build_priors(views, UserPriors(intrinsics_file=tmp_path / "cams.json"))
    K = pri.K[0]
    # the principal point maps through the same affine map as pixels do
    np.testing.assert_allclose(views[0].net_to_orig @ np.array([K[0, 2], K[1, 2], 1.0]), [100.0, 64.0, 1.0])
    np.testing.assert_allclose([K[0, 0], K[1, 1]], [200.0, 202.5])
    assert pri.K[1] is None and pri.focal[1] == pytest.approx(100.0)
    assert pri.K[2] is None and pri.focal[2] is None


def test_global_focal_and_exif(tmp_path):
    views = [view(0, exif=1000.0), view(1)]
    pri = build_priors(views, UserPriors())
    # EXIF is a start value that the alignment optimises; --fix-focal holds it fixed
    assert pri.focal is None and pri.focal_init == [250.0, None]
    fixed = build_priors(views, UserPriors(fix_focal=True))
    assert fixed.focal == [250.0, None] and fixed.focal_init is None
    assert build_priors(views, UserPriors(use_exif=False)).focal_init is None
    assert build_priors(views, UserPriors(focal=600.0)).focal == [150.0, 150.0]  # --focal beats EXIF


def test_poses_by_name(tmp_path):
    T = np.eye(4)
    T[:3, 3] = [1, 2, 3]
    path = tmp_path / "poses.json"
    path.write_text(json.dumps({"frames": [{"file_path": "images/img1.jpg", "T_world_cam": T.tolist()}]}))
    pri = build_priors([view(0), view(1)], UserPriors(poses_file=path))
    assert list(pri.T_world_cam) == [1]
    np.testing.assert_array_equal(pri.T_world_cam[1], T)


def test_unmatched_and_broken_files_are_clear_errors(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"other.jpg": {"fx": 1.0}}))
    with pytest.raises(ReconstructionError, match="no entry matches"):
        build_priors([view(0)], UserPriors(intrinsics_file=path))
    path.write_text("{not json")
    with pytest.raises(ReconstructionError, match="cannot read camera file"):
        read_camera_file(path)
