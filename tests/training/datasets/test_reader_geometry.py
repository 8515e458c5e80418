"""Readers feed geometrically consistent pairs: a synthetic scene written in a dataset's layout (cameras converted
to that dataset's convention by an independent route) comes back with views whose matched pixels see the same
3D point, through the full pair pipeline (MASt3R crops, correspondences)."""

import json

import numpy as np
import pytest
from PIL import Image
from scipy.spatial.transform import Rotation

from tools.synth import render_scene
from training.datasets.mixture import build_pair_mixture
from training.finetune.config import DataConfig


@pytest.fixture(scope="module")
def views():
    return render_scene("orbit", n_views=3, size=(96, 72), seed=11)


def check_pairs(text, n=3):
    mix = build_pair_mixture(text, DataConfig(n_corres=64, aug_monocular=0.0, color_jitter=False))
    for k in range(n):
        s = mix[(k % len(mix), 100 + k, (56, 42))]
        v = s["valid_corres"].numpy()
        assert v.sum() >= 16, "too few true correspondences"
        c1, c2 = s["view1"]["corres"].numpy()[v], s["view2"]["corres"].numpy()[v]
        p1 = s["view1"]["pts3d"].numpy()[c1[:, 1], c1[:, 0]]
        p2 = s["view2"]["pts3d"].numpy()[c2[:, 1], c2[:, 0]]
        scale = np.linalg.norm(s["view1"]["pts3d"].numpy()[s["view1"]["valid"].numpy()], axis=-1).mean()
        assert np.median(np.linalg.norm(p1 - p2, axis=-1)) < 0.05 * scale


def test_arkitscenes_layout_is_consistent(tmp_path, views):
    scene = tmp_path / "Training" / "41069021"
    names = [f"41069021_{k}.000.png" for k in range(len(views))]
    for v, n in zip(views, names, strict=True):
        (scene / "vga_wide").mkdir(parents=True, exist_ok=True)
        (scene / "lowres_depth").mkdir(exist_ok=True)
        Image.fromarray(v.rgb).save(scene / "vga_wide" / n.replace(".png", ".jpg"), quality=95)
        Image.fromarray(np.round(np.where(v.mask, v.depth, 0) * 1000).astype(np.uint16)).save(
            scene / "lowres_depth" / n
        )
    np.savez(tmp_path / "Training" / "all_metadata.npz", scenes=np.array(["41069021"]), sceneids=np.zeros(3, int),
             images=np.array(names), intrinsics=np.stack([v.K for v in views]),
             trajectories=np.stack([v.T_world_cam for v in views]),
             pairs=np.array([[0, 1, 0.5], [1, 2, 0.5]]))  # fmt: skip
    check_pairs(f"ARKitScenes(root='{tmp_path}')", n=2)


def test_tartanair_layout_is_consistent(tmp_path, views, monkeypatch):
    traj = tmp_path / "office" / "Hard" / "P003"
    (traj / "image_left").mkdir(parents=True)
    (traj / "depth_left").mkdir()
    rows = []
    for i, v in enumerate(views):
        # TartanAir's body frame: x forward, y right, z down = the OpenCV camera's z, x and y axes.
        R_cv = v.T_world_cam[:3, :3]
        R_body = np.stack([R_cv[:, 2], R_cv[:, 0], R_cv[:, 1]], axis=1)
        rows.append([*v.T_world_cam[:3, 3], *Rotation.from_matrix(R_body).as_quat()])  # tx ty tz qx qy qz qw
        Image.fromarray(v.rgb).save(traj / "image_left" / f"{i:06d}_left.png")
        np.save(traj / "depth_left" / f"{i:06d}_left_depth.npy", np.where(v.mask, v.depth, 1e4).astype(np.float32))
    np.savetxt(traj / "pose_left.txt", np.array(rows))
    # TartanAir's fixed 640 x 480 intrinsics do not fit the render: the reader gets the render's K.
    from training.datasets import pairs

    monkeypatch.setattr(pairs.TartanAir, "K", views[0].K.copy())
    check_pairs(f"TartanAir(root='{tmp_path}', max_gap=2)")


def test_dl3dv_layout_is_consistent(tmp_path, views):
    scene = tmp_path / "1a2b3c"
    (scene / "images_4").mkdir(parents=True)
    K = views[0].K
    frames = []
    for i, v in enumerate(views):
        Image.fromarray(v.rgb).save(scene / "images_4" / f"frame_{i + 1:05d}.png")
        Image.fromarray(np.round(np.where(v.mask, v.depth, 0) * 1000).astype(np.uint16)).save(
            scene / "images_4" / f"frame_{i + 1:05d}.depth.png"
        )
        T_gl = v.T_world_cam.copy()
        T_gl[:3, 1:3] *= -1  # OpenGL camera: y up, z backward
        frames.append({"file_path": f"images_4/frame_{i + 1:05d}.png", "transform_matrix": T_gl.tolist()})
    meta = {"fl_x": K[0, 0], "fl_y": K[1, 1], "cx": K[0, 2] + 0.5, "cy": K[1, 2] + 0.5, "w": 96, "h": 72,
            "frames": frames}  # fmt: skip
    (scene / "transforms.json").write_text(json.dumps(meta))
    check_pairs(f"DL3DV(root='{tmp_path}', max_gap=2, depth_suffix='.depth.png')")
