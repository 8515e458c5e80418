"""Every pair reader against a fixture the test writes in the dataset's real on-disk layout, read back exactly."""

import json

import numpy as np
import pytest
from PIL import Image

from training.datasets.io import LayoutError, write_exr
from training.datasets.pairs import (
    ArkitScenes,
    BlendedMvs,
    Co3d,
    Dl3dv,
    Habitat,
    MapFree,
    MegaDepth,
    ScanNetpp,
    TartanAir,
    VirtualKitti,
    WildRgbd,
    quat_to_matrix,
)

H, W = 6, 8
RNG = np.random.default_rng(0)


def rgb_of(k: int) -> np.ndarray:
    """A flat colour per view: survives JPEG within a couple of levels."""
    return np.full((H, W, 3), (20 * k + 10, 200 - 15 * k, 90), np.uint8)


def save_image(path, k):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb_of(k)).save(path, quality=100) if path.suffix != ".png" else Image.fromarray(rgb_of(k)).save(
        path
    )


def save_png16(path, values):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(values, dtype=np.uint16)).save(path)


def random_pose(k):
    from scipy.spatial.transform import Rotation

    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec([0.1 * k, -0.2, 0.05 * k]).as_matrix()
    T[:3, 3] = [k, 2.0 - k, 0.5]
    return T


K0 = np.array([[7.0, 0, 3.5], [0, 7.5, 2.5], [0, 0, 1]])
DEPTH_MM = (np.arange(H * W).reshape(H, W) * 37 + 500).astype(np.uint16)


def check_rgb(frame, k):
    assert frame.rgb.shape == (H, W, 3) and frame.rgb.dtype == np.uint8
    np.testing.assert_allclose(frame.rgb.astype(int), rgb_of(k).astype(int), atol=3)


class TestCo3dAndWildRgbd:
    def write_co3d(self, root):
        (root / "selected_seqs_train.json").parent.mkdir(parents=True, exist_ok=True)
        (root / "selected_seqs_train.json").write_text(json.dumps({"apple": {"seq1": [3, 7]}, "ball": {}}))
        for k, f in enumerate((3, 7)):
            d = root / "apple" / "seq1"
            save_image(d / "images" / f"frame{f:06d}.jpg", k)
            np.savez(d / "images" / f"frame{f:06d}.npz", camera_intrinsics=K0 * (k + 1), camera_pose=random_pose(k),
                     maximum_depth=np.float32(4.0))  # fmt: skip
            save_png16(d / "depths" / f"frame{f:06d}.jpg.geometric.png", DEPTH_MM)
            mask = np.zeros((H, W), np.uint8)
            mask[:, : W // 2] = 255
            (d / "masks").mkdir(exist_ok=True)
            Image.fromarray(mask).save(d / "masks" / f"frame{f:06d}.png")

    def test_co3d_values_and_pairs(self, tmp_path):
        self.write_co3d(tmp_path)
        r = Co3d(tmp_path, split="train", mask_bg=False)
        assert len(r) == sum(100 - d for d in range(5, 31, 5))  # 495 frame-position pairs per sequence
        a, b = r.pair(0, np.random.default_rng(1))
        expected = DEPTH_MM.astype(np.float32) / 65535.0 * np.float32(4.0)
        for f in (a, b):
            np.testing.assert_allclose(f.depth, expected, rtol=1e-6)
        # Positions are clipped to the 2-frame sequence: every view is frame 3 or 7.
        views = {r.view(v, None).K[0, 0] for v in (0, 1)}
        assert views == {7.0, 14.0}
        f1 = r.view(1, None)
        np.testing.assert_array_equal(f1.T_world_cam, random_pose(1))
        check_rgb(f1, 1)

    def test_co3d_mask_bg(self, tmp_path):
        self.write_co3d(tmp_path)
        a, _ = Co3d(tmp_path, mask_bg=True).pair(5, np.random.default_rng(0))
        assert (a.depth[:, W // 2 :] == 0).all() and (a.depth[:, : W // 2] > 0).all()

    def test_wildrgbd_mm_depth(self, tmp_path):
        (tmp_path / "selected_seqs_test.json").write_text(json.dumps({"cup": {"s0": [12]}}))
        d = tmp_path / "cup" / "s0"
        save_image(d / "rgb" / "00012.jpg", 2)
        (d / "metadata").mkdir()
        np.savez(d / "metadata" / "00012.npz", camera_intrinsics=K0, camera_pose=random_pose(2))
        save_png16(d / "depth" / "00012.png", DEPTH_MM)
        r = WildRgbd(tmp_path, split="test", mask_bg=False)
        a, b = r.pair(3, np.random.default_rng(0))
        np.testing.assert_allclose(a.depth, DEPTH_MM / 1000.0, rtol=1e-6)
        np.testing.assert_array_equal(a.K, K0)
        check_rgb(b, 2)
        assert r.metric and not Co3d.METRIC

    def test_wrong_root_names_the_layout(self, tmp_path):
        with pytest.raises(LayoutError, match=r"selected_seqs_train.json not found; expected .*preprocess_co3d"):
            Co3d(tmp_path)
        with pytest.raises(LayoutError, match="is not a folder"):
            Co3d(tmp_path / "nope")


def write_metadata(folder, scenes, images, Ks, Ts, pairs):
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "all_metadata.npz", scenes=np.array(scenes), sceneids=np.array([0] * len(images)),
             images=np.array(images), intrinsics=np.stack(Ks), trajectories=np.stack(Ts),
             pairs=np.array(pairs, dtype=np.float64), counts=np.array([0]))  # fmt: skip


class TestMetadataLayouts:
    def test_arkitscenes(self, tmp_path):
        names = ["41069021_1234.567.png", "41069021_1235.000.png"]
        write_metadata(tmp_path / "Training", ["41069021"], names, [K0, 2 * K0], [random_pose(0), random_pose(1)],
                       [[1, 0, 0.7]])  # fmt: skip
        for k, n in enumerate(names):
            save_image(tmp_path / "Training" / "41069021" / "vga_wide" / n.replace(".png", ".jpg"), k)
            save_png16(tmp_path / "Training" / "41069021" / "lowres_depth" / n, DEPTH_MM + k)
        r = ArkitScenes(tmp_path, split="train")
        assert len(r) == 1
        a, b = r.pair(0, None)
        np.testing.assert_allclose(a.depth, (DEPTH_MM + 1) / 1000.0, rtol=1e-6)  # pair (1, 0): view 1 first
        np.testing.assert_array_equal(a.K, 2 * K0)
        np.testing.assert_array_equal(b.T_world_cam, random_pose(0))
        check_rgb(a, 1)
        with pytest.raises(LayoutError, match="Test/all_metadata.npz not found"):
            ArkitScenes(tmp_path, split="test")

    def test_scannetpp_colmap_principal_point(self, tmp_path):
        write_metadata(tmp_path, ["abc123"], ["DSC00001", "frame_000010"], [K0, K0], [random_pose(0), random_pose(2)],
                       [[0, 1, 0.5]])  # fmt: skip
        for k, n in enumerate(["DSC00001", "frame_000010"]):
            save_image(tmp_path / "abc123" / "images" / f"{n}.jpg", k)
            save_png16(tmp_path / "abc123" / "depth" / f"{n}.png", DEPTH_MM)
        a, b = ScanNetpp(tmp_path).pair(0, None)
        np.testing.assert_allclose(a.K[:2, 2], K0[:2, 2] - 0.5)
        np.testing.assert_array_equal(b.T_world_cam, random_pose(2))
        np.testing.assert_allclose(b.depth, DEPTH_MM / 1000.0, rtol=1e-6)


class TestExrLayouts:
    def test_blendedmvs(self, tmp_path):
        dtype = [("seq_high", "<u4"), ("seq_low", "<u8"), ("img1", "<u4"), ("img2", "<u4"), ("score", "<f4")]
        pairs = np.array([(0x5A, 0x11, 3, 8, 0.5), (0x5A, 0x20, 1, 2, 0.3)], dtype=dtype)  # 0x20 % 10 == 2: train
        np.save(tmp_path / "blendedmvs_pairs.npy", pairs)
        depth = (np.arange(H * W, dtype=np.float32).reshape(H, W) + 1) / 7
        for low, imgs in ((0x11, (3, 8)), (0x20, (1, 2))):
            seq = tmp_path / f"{0x5A:08x}{low:016x}"
            for k, img in enumerate(imgs):
                save_image(seq / f"{img:08d}.jpg", k)
                write_exr(seq / f"{img:08d}.exr", depth * (k + 1))
                T = random_pose(k)
                np.savez(seq / f"{img:08d}.npz", intrinsics=K0, R_cam2world=T[:3, :3], t_cam2world=T[:3, 3])
        r = BlendedMvs(tmp_path, split="train")
        assert len(r) == 2  # seq_low 0x11 = 17 and 0x20 = 32: neither a multiple of 10
        assert len(BlendedMvs(tmp_path, split="val")) == 0
        a, b = r.pair(1, None)
        np.testing.assert_array_equal(b.depth, depth * 2)
        np.testing.assert_allclose(a.T_world_cam, random_pose(0))
        check_rgb(b, 1)

    def test_megadepth(self, tmp_path):
        dtype = [("scene_id", "<i4"), ("im1_id", "<i4"), ("im2_id", "<i4"), ("score", "<f4")]
        np.savez(tmp_path / "all_metadata.npz", scenes=np.array(["0001 0", "0015 1"]),
                 images=np.array(["a_1", "b_2", "c_3"]),
                 pairs=np.array([(0, 0, 1, 0.4), (1, 2, 0, 0.2)], dtype=dtype))  # fmt: skip
        depth = np.linspace(1, 5, H * W, dtype=np.float32).reshape(H, W)
        depth[0, 0] = np.nan  # invalid pixels become 0
        for scene in ("0001/0", "0015/1"):
            for k, img in enumerate(("a_1", "b_2", "c_3")):
                d = tmp_path / scene
                save_image(d / f"{img}.jpg", k)
                write_exr(d / f"{img}.exr", depth)
                np.savez(d / f"{img}.npz", intrinsics=K0, cam2world=random_pose(k))
        train, val = MegaDepth(tmp_path, split="train"), MegaDepth(tmp_path, split="val")
        assert (len(train), len(val)) == (1, 1)
        a, b = val.pair(0, None)  # scene 0015: image c_3 then a_1
        np.testing.assert_array_equal(a.T_world_cam, random_pose(2))
        assert a.depth[0, 0] == 0 and a.depth[5, 7] == 5.0
        check_rgb(b, 0)

    def test_habitat(self, tmp_path):
        (tmp_path / "Habitat_1000_scenes_val.txt").write_text("scenes/apt1/000017\n")
        d = tmp_path / "scenes" / "apt1"
        d.mkdir(parents=True)
        for v in range(1, 6):
            save_image(d / f"000017_{v}.jpeg", v)
            write_exr(d / f"000017_{v}_depth.exr", np.full((H, W), float(v), np.float32))
            T = random_pose(v)
            cam = {
                "camera_intrinsics": K0.tolist(),
                "R_cam2world": T[:3, :3].tolist(),
                "t_cam2world": T[:3, 3].tolist(),
            }
            (d / f"000017_{v}_camera_params.json").write_text(json.dumps(cam))
        r = Habitat(tmp_path, size=1000, split="val")
        a, b = r.pair(0, np.random.default_rng(3))
        assert (a.depth == 1).all() and b.depth[0, 0] in (2, 3, 4, 5)
        v = int(b.depth[0, 0])
        np.testing.assert_allclose(b.T_world_cam, random_pose(v))
        check_rgb(b, v)


class TestPublicReleases:
    def test_tartanair_ned_to_opencv(self, tmp_path):
        traj = tmp_path / "abandonedfactory" / "Easy" / "P001"
        # Camera 0: identity body pose -> OpenCV optical axis (z) is the body's x (forward, north).
        poses = np.array([[0, 0, 0, 0, 0, 0, 1], [1, 2, 3, 0, 0, np.sin(0.25), np.cos(0.25)]])
        traj.mkdir(parents=True)
        np.savetxt(traj / "pose_left.txt", poses)
        for i in range(2):
            save_image(traj / "image_left" / f"{i:06d}_left.png", i)
            depth = np.full((H, W), 2.5 + i, np.float32)
            depth[0, :] = 5000.0  # sky
            (traj / "depth_left").mkdir(exist_ok=True)
            np.save(traj / "depth_left" / f"{i:06d}_left_depth.npy", depth)
        r = TartanAir(tmp_path, max_gap=5)
        a, b = r.pair(0, np.random.default_rng(0))
        np.testing.assert_allclose(a.T_world_cam[:3, 2], [1, 0, 0])  # looks along body x
        np.testing.assert_allclose(a.T_world_cam[:3, 0], [0, 1, 0])  # image x = body y (right)
        np.testing.assert_allclose(b.T_world_cam[:3, :3], quat_to_matrix([0, 0, np.sin(0.25), np.cos(0.25)])
                                   @ np.array([[0, 0, 1], [1, 0, 0], [0, 1, 0]]))  # fmt: skip
        np.testing.assert_allclose(b.T_world_cam[:3, 3], [1, 2, 3])
        assert (a.depth[0] == 0).all() and a.sky[0].all() and (a.depth[1:] == 2.5).all()
        np.testing.assert_array_equal(a.K, [[320, 0, 320], [0, 320, 240], [0, 0, 1]])
        check_rgb(b, 1)

    def test_virtual_kitti2(self, tmp_path):
        folder = tmp_path / "Scene01" / "clone"
        folder.mkdir(parents=True)
        intr = "frame cameraID K[0,0] K[1,1] K[0,2] K[1,2]\n0 0 725.0087 725.0087 620.5 187\n1 0 725 725 620 187\n"
        (folder / "intrinsic.txt").write_text(intr)
        rows = ["frame cameraID r1,1 r1,2 r1,3 t1 r2,1 r2,2 r2,3 t2 r3,1 r3,2 r3,3 t3 0 0 0 1"]
        for i in range(2):
            T_cam_world = np.linalg.inv(random_pose(i))
            rows.append(f"{i} 0 " + " ".join(f"{v:.17g}" for v in T_cam_world.ravel()))
            save_image(folder / "frames" / "rgb" / "Camera_0" / f"rgb_{i:05d}.jpg", i)
            depth = np.full((H, W), 1234 + i, np.uint16)
            depth[-1] = 65535
            save_png16(folder / "frames" / "depth" / "Camera_0" / f"depth_{i:05d}.png", depth)
        (folder / "extrinsic.txt").write_text("\n".join(rows) + "\n")
        r = VirtualKitti(tmp_path, cameras=(0,))
        a, b = r.pair(1, np.random.default_rng(0))
        np.testing.assert_allclose(a.T_world_cam, random_pose(1), atol=1e-12)
        np.testing.assert_allclose(a.K, [[725, 0, 620], [0, 725, 187], [0, 0, 1]])
        assert a.depth[0, 0] == pytest.approx(12.35) and (a.depth[-1] == 0).all() and a.sky[-1].all()
        check_rgb(b, 0)

    def test_mapfree_with_and_without_depth(self, tmp_path):
        scene = tmp_path / "train" / "s00000"
        scene.mkdir(parents=True)
        lines_i, lines_p = [], []
        for k, name in enumerate(["seq0/frame_00000.jpg", "seq1/frame_00000.jpg", "seq1/frame_00001.jpg"]):
            save_image(scene / name, k)
            save_png16(scene / name.replace(".jpg", ".depth.png"), DEPTH_MM)
            lines_i.append(f"{name} 590.1 591.2 269.5 359.5 540 720")
            q = np.array([np.cos(0.1 * k), 0, np.sin(0.1 * k), 0])  # qw qx qy qz
            lines_p.append(f"{name} {q[0]} {q[1]} {q[2]} {q[3]} {k} 0 {-k}")
        (scene / "intrinsics.txt").write_text("\n".join(lines_i))
        (scene / "poses.txt").write_text("\n".join(lines_p))
        r = MapFree(tmp_path, split="train")
        assert len(r) == 3 and not r.has_depth
        a, b = r.pair(1, np.random.default_rng(0))  # seq1: frames 1 and 2 (seq0 is its own sequence)
        T_cam_world = np.eye(4)
        T_cam_world[:3, :3] = quat_to_matrix([0, np.sin(0.1), 0, np.cos(0.1)])
        T_cam_world[:3, 3] = [1, 0, -1]
        np.testing.assert_allclose(a.T_world_cam, np.linalg.inv(T_cam_world), atol=1e-12)
        np.testing.assert_array_equal(a.K, [[590.1, 0, 269.5], [0, 591.2, 359.5], [0, 0, 1]])
        assert (a.depth == 0).all()
        check_rgb(b, 2)
        a, _ = MapFree(tmp_path, depth_suffix=".depth.png").pair(0, np.random.default_rng(0))
        np.testing.assert_allclose(a.depth, DEPTH_MM / 1e3, rtol=1e-6)

    def test_dl3dv_nerfstudio(self, tmp_path):
        scene = tmp_path / "0a1b2c"
        frames = [{"file_path": f"images_4/frame_{i:05d}.png", "transform_matrix": random_pose(i).tolist()}
                  for i in (2, 10)]  # fmt: skip
        for i in (2, 10):
            save_image(scene / "images_4" / f"frame_{i:05d}.png", i % 7)
        scene.mkdir(exist_ok=True)
        meta = {"fl_x": 100.0, "fl_y": 101.0, "cx": 4.0, "cy": 3.0, "w": W, "h": H, "frames": frames[::-1]}
        (scene / "transforms.json").write_text(json.dumps(meta))
        r = Dl3dv(tmp_path)
        a, b = r.pair(0, np.random.default_rng(0))  # natural order: frame 2 first
        np.testing.assert_allclose(a.K, [[100, 0, 3.5], [0, 101, 2.5], [0, 0, 1]])
        np.testing.assert_allclose(b.T_world_cam[:3, 3], random_pose(10)[:3, 3])
        np.testing.assert_allclose(b.T_world_cam[:3, 1], -random_pose(10)[:3, 1])  # OpenGL y up -> OpenCV y down
        np.testing.assert_allclose(a.T_world_cam[:3, 2], -random_pose(2)[:3, 2])  # OpenGL z backward
        check_rgb(b, 3)

    def test_empty_release_root_is_a_layout_error(self, tmp_path):
        for cls in (TartanAir, VirtualKitti, Dl3dv):
            with pytest.raises(LayoutError, match="no frame found"):
                cls(tmp_path)


def test_unrealstereo4k_depth_from_disparity(tmp_path):
    from training.datasets.pairs import UnrealStereo4K

    scene = tmp_path / "00003"
    K = np.array([[200.0, 0, 3.5], [0, 200.0, 2.5], [0, 0, 1]])
    for cam, x in ((0, 0.0), (1, 0.5)):  # right camera 0.5 units to the right: baseline 0.5
        for i in range(2):
            T_world_cam = random_pose(i)
            T_world_cam[:3, 3] += T_world_cam[:3, 0] * x
            T_cam_world = np.linalg.inv(T_world_cam)
            (scene / f"Extrinsics{cam}").mkdir(parents=True, exist_ok=True)
            (scene / f"Extrinsics{cam}" / f"{i:05d}.txt").write_text(
                " ".join(f"{v:.17g}" for v in K.ravel())
                + "\n"
                + " ".join(f"{v:.17g}" for v in T_cam_world[:3].ravel())
                + "\n"
            )
            save_image(scene / f"Image{cam}" / f"{i:05d}.png", cam + 2 * i)
            disp = np.full((H, W), 20.0 + i, np.float32)
            disp[0, 0] = 0  # no disparity: invalid
            (scene / f"Disp{cam}").mkdir(exist_ok=True)
            np.save(scene / f"Disp{cam}" / f"{i:05d}.npy", disp)
    r = UnrealStereo4K(tmp_path, max_gap=1)
    assert len(r) == 4  # two sequences (cameras) of two frames
    a, b = r.pair(2, np.random.default_rng(0))  # camera 1, frame 0 with camera 1, frame 1
    np.testing.assert_allclose(a.depth[1:], 0.5 * 200.0 / 20.0, rtol=1e-6)  # baseline x fx / disparity = 5
    assert a.depth[0, 0] == 0
    np.testing.assert_allclose(b.depth[2, 2], 0.5 * 200.0 / 21.0, rtol=1e-6)
    expected = random_pose(0)
    expected[:3, 3] += expected[:3, 0] * 0.5
    np.testing.assert_allclose(a.T_world_cam, expected, atol=1e-12)
    np.testing.assert_array_equal(a.K, K)
    check_rgb(b, 3)
