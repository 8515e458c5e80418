"""Writers: K and T_world_cam round-trip through the folder, CO3D and RealEstate10K layouts."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest

from recon.datasets.cameras import co3d_viewpoint_to_opencv, opencv_to_co3d_viewpoint
from recon.geometry import K_from_focal
from tools.synth import (
    CamerasFileError,
    Co3dSequence,
    SynthView,
    read_folder,
    read_re10k_clip,
    render_scene,
    synth_co3d_sequences,
    write_co3d,
    write_folder,
    write_re10k,
)
from tools.synth.cameras import look_at
from tools.synth.co3d import decode_depth_png

F = np.diag([-1.0, -1.0, 1.0])


def circle_views(n: int, size=(64, 48), focal=48.0, radius=3.0, height=0.5) -> list[SynthView]:
    """The reference's fixture cameras (co3d_eval.md 7.1): a circle of radius 3 at height 0.5 around the origin."""
    W, H = size
    views = []
    for i in range(n):
        a = np.deg2rad(7.2 * i)
        T = look_at([radius * np.cos(a), radius * np.sin(a), height], [0.0, 0.0, 0.0])
        depth = np.full((H, W), 3.0, dtype=np.float32)
        fg = np.zeros((H, W), dtype=bool)
        fg[H // 4 : H // 2, W // 3 : W // 2] = True
        valid = np.ones((H, W), dtype=bool)
        valid[0] = False  # one invalid row, written as depth 0
        rgb = np.full((H, W, 3), 40 + i, dtype=np.uint8)
        views.append(SynthView(f"f{i}", rgb, depth, valid, K_from_focal(focal, (H, W)), T, fg))
    return views


def read_jgz(path):
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return json.load(fh)


# ---------------------------------------------------------------- folder


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_folder_round_trip(tmp_path, fmt):
    views = render_scene("room_set", n_views=3, size=(40, 30), seed=4, mixed_orientation=True)
    write_folder(views, tmp_path, image_format=fmt, with_depth=True, meta={"seed": 4})
    doc = json.loads((tmp_path / "cameras.json").read_text())
    assert doc["format"] == "recon-cameras" and doc["meta"] == {"seed": 4}
    expected = ["cameras.json", "depth"] + [f"{v.name}.{fmt}" for v in views]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(expected)
    back = read_folder(tmp_path)
    assert [v.name for v in back] == [v.name for v in views]
    for a, b in zip(views, back, strict=True):
        assert np.array_equal(a.K, b.K) and np.array_equal(a.T_world_cam, b.T_world_cam)  # exact: JSON repr floats
        assert b.rgb.shape == a.rgb.shape
        if fmt == "png":
            assert np.array_equal(a.rgb, b.rgb)
        else:
            assert np.abs(a.rgb.astype(int) - b.rgb).mean() < 6
        assert np.array_equal(a.depth, b.depth) and np.array_equal(a.mask, b.mask)
        assert np.array_equal(a.fg_mask, b.fg_mask)
    no_depth = read_folder(tmp_path, load_images=False, load_depth=False)
    assert no_depth[0].rgb is None and no_depth[0].depth is None
    assert np.array_equal(no_depth[1].K, views[1].K)


def test_folder_without_depth_and_errors(tmp_path):
    views = circle_views(2, size=(16, 12), focal=12.0)
    write_folder(views, tmp_path / "a", image_format="png")
    back = read_folder(tmp_path / "a")
    assert back[0].depth is None and back[0].mask is None
    with pytest.raises(CamerasFileError, match="no cameras.json"):
        read_folder(tmp_path)
    doc = json.loads((tmp_path / "a" / "cameras.json").read_text())
    doc["views"][1]["K"] = [[1, 0], [0, 1]]
    (tmp_path / "a" / "cameras.json").write_text(json.dumps(doc))
    with pytest.raises(CamerasFileError, match="view 1: 'K' must be a finite 3x3"):
        read_folder(tmp_path / "a")
    (tmp_path / "a" / "cameras.json").write_text('{"views": []}')
    with pytest.raises(CamerasFileError, match="not a 'recon-cameras' file"):
        read_folder(tmp_path / "a")
    with pytest.raises(ValueError, match="unique"):
        write_folder([views[0], views[0]], tmp_path / "b")


# ---------------------------------------------------------------- CO3D conventions


def test_co3d_viewpoint_matches_hand_computed_values():
    """Reference 7.2: f = 2 (isotropic NDC), p = 0, origin at pixel (32, 24), centre at distance sqrt(9.25)."""
    for v in circle_views(5):
        vp = opencv_to_co3d_viewpoint(v.T_world_cam, v.K, (48, 64))
        assert vp["intrinsics_format"] == "ndc_isotropic"
        np.testing.assert_allclose(vp["focal_length"], [2.0, 2.0])
        np.testing.assert_allclose(vp["principal_point"], [0.0, 0.0], atol=1e-15)
        R, T = np.array(vp["R"]), np.array(vp["T"])
        # PyTorch3D: row-vector camera X_cam = X_world R + T (+X left, +Y up); NDC x = f X / Z + p;
        # screen x = W/2 - s * x_ndc with s = min(W, H) / 2 = 24.
        for X in (np.zeros(3), np.array([0.3, -0.2, 0.4])):
            Xc = X @ R + T
            ndc = np.array(vp["focal_length"]) * Xc[:2] / Xc[2] + np.array(vp["principal_point"])
            screen = np.array([32.0, 24.0]) - 24.0 * ndc
            pc = (X - v.T_world_cam[:3, 3]) @ v.T_world_cam[:3, :3]  # OpenCV projection of the same point
            np.testing.assert_allclose(screen, (v.K @ pc)[:2] / pc[2], atol=1e-9)
            if not X.any():
                np.testing.assert_allclose(screen, [32.0, 24.0], atol=1e-9)
        assert np.linalg.norm(-R @ T) == pytest.approx(np.sqrt(9.25))
        legacy = opencv_to_co3d_viewpoint(v.T_world_cam, v.K, (48, 64), "ndc_norm_image_bounds")
        np.testing.assert_allclose(legacy["focal_length"], [1.5, 2.0])
        for fmt_vp in (vp, legacy):
            T_wc, K = co3d_viewpoint_to_opencv(fmt_vp, [48, 64])
            np.testing.assert_allclose(K, v.K, atol=1e-12)
            np.testing.assert_allclose(T_wc, v.T_world_cam, atol=1e-12)


def test_co3d_off_centre_principal_point_and_portrait():
    K = np.array([[50.0, 0.0, 20.0], [0.0, 55.0, 33.0], [0.0, 0.0, 1.0]])
    T = look_at([1.0, 2.0, 0.5], [0.0, 0.1, 0.2], roll_deg=10.0)
    vp = opencv_to_co3d_viewpoint(T, K, (64, 48))  # portrait: W = 48, H = 64, s = 24
    np.testing.assert_allclose(vp["focal_length"], [50 / 24, 55 / 24])
    np.testing.assert_allclose(vp["principal_point"], [(24 - 20) / 24, (32 - 33) / 24])
    T2, K2 = co3d_viewpoint_to_opencv(vp, [64, 48])
    np.testing.assert_allclose(K2, K, atol=1e-12)
    np.testing.assert_allclose(T2, T, atol=1e-12)
    with pytest.raises(ValueError, match="intrinsics_format"):
        opencv_to_co3d_viewpoint(T, K, (64, 48), "ndc")


# ---------------------------------------------------------------- CO3D layout


def _protocol_survivors(root, cat):
    """The reference's section 0 filters, restated independently: quality > 0.5, >= 50 frames, T sum <= 1e5."""
    q = {a["sequence_name"]: a["viewpoint_quality_score"] for a in read_jgz(root / cat / "sequence_annotations.jgz")}
    frames = {(a["sequence_name"], a["frame_number"]): a for a in read_jgz(root / cat / "frame_annotations.jgz")}
    test = json.loads((root / cat / "set_lists" / "set_lists_fewview_dev.json").read_text())["test"]
    per_seq = {}
    for seq, fn, _ in test:
        per_seq.setdefault(seq, []).append(fn)
    return [
        s
        for s, fns in per_seq.items()
        if q[s] > 0.5 and len(fns) >= 50 and max(sum(frames[(s, fn)]["viewpoint"]["T"]) for fn in fns) <= 1e5
    ]


@pytest.fixture(scope="module")
def co3d_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("co3d")
    good = circle_views(50)
    cats = {
        "apple": [
            Co3dSequence("seqA", good, quality=1.0, empty_mask_frames=(7,)),
            Co3dSequence("seqLowQ", good, quality=0.5),
            Co3dSequence("seqShort", good[:49], quality=1.0),
            Co3dSequence("seqBadT", good, quality=1.0, bad_translation_frame=3),
            Co3dSequence("seqTrain", good[:10], quality=1.0, split="train"),
        ],
        "ball": [Co3dSequence("s0", good[:50], quality=0.9), Co3dSequence("s1", good[::-1], quality=0.7)],
    }
    write_co3d(root, cats)
    return root


def test_co3d_layout_and_annotations(co3d_root):
    root = co3d_root
    assert json.loads((root / "category_to_subset_name_list.json").read_text()) == {
        "apple": ["fewview_dev"],
        "ball": ["fewview_dev"],
    }
    frames = read_jgz(root / "apple" / "frame_annotations.jgz")
    assert len(frames) == 50 * 3 + 49 + 10
    a = next(f for f in frames if f["sequence_name"] == "seqA" and f["frame_number"] == 7)
    assert a["image"] == {"path": "apple/seqA/images/frame000008.jpg", "size": [48, 64]}  # file index = fn + 1
    assert a["depth"]["path"] == "apple/seqA/depths/frame000008.jpg.geometric.png"
    assert a["depth"]["scale_adjustment"] == 1.0 and a["depth"]["mask_path"] == "apple/seqA/depth_masks/frame000008.png"
    assert a["mask"]["path"] == "apple/seqA/masks/frame000008.png"
    assert a["mask"]["mass"] == 0.0  # the requested empty mask
    assert a["frame_timestamp"] == pytest.approx(7 / 30) and a["meta"] == {"frame_type": "test_known"}
    for key in ("path", "depth", "mask"):
        rel = a["image"]["path"] if key == "path" else a[key]["path"]
        assert (root / rel).is_file()
    seqs = read_jgz(root / "apple" / "sequence_annotations.jgz")
    assert [s["sequence_name"] for s in seqs] == ["seqA", "seqLowQ", "seqShort", "seqBadT", "seqTrain"]
    assert all(s["category"] == "apple" and "viewpoint_quality_score" in s for s in seqs)
    sl = json.loads((root / "apple" / "set_lists" / "set_lists_fewview_dev.json").read_text())
    assert set(sl) == {"train", "val", "test"} and len(sl["train"]) == 10 and sl["val"] == []
    assert sl["test"][0] == ["seqA", 0, "apple/seqA/images/frame000001.jpg"]
    bad = next(f for f in frames if f["sequence_name"] == "seqBadT" and f["frame_number"] == 3)
    assert bad["viewpoint"]["T"] == [1e5, 1.0, 0.0]


def test_co3d_cameras_depth_and_masks_round_trip(co3d_root):
    views = circle_views(50)
    frames = read_jgz(co3d_root / "ball" / "frame_annotations.jgz")
    s1 = sorted((f for f in frames if f["sequence_name"] == "s1"), key=lambda f: f["frame_number"])
    for f, v in zip(s1, views[::-1], strict=True):
        T, K = co3d_viewpoint_to_opencv(f["viewpoint"], f["image"]["size"])
        np.testing.assert_allclose(K, v.K, atol=1e-12)
        np.testing.assert_allclose(T, v.T_world_cam, atol=1e-12)
    from PIL import Image

    f = s1[0]
    depth = decode_depth_png(co3d_root / f["depth"]["path"])
    np.testing.assert_allclose(depth[1:], 3.0)  # exactly representable in float16
    assert (depth[0] == 0).all()
    dmask = np.asarray(Image.open(co3d_root / f["depth"]["mask_path"]))
    assert np.array_equal(dmask > 0, views[-1].mask)

    mask = np.asarray(Image.open(co3d_root / f["mask"]["path"]))
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 255}
    assert np.array_equal(mask > 0, views[-1].fg_mask)
    assert f["mask"]["mass"] == float(views[-1].fg_mask.sum())


def test_co3d_decoys_are_dropped_by_the_protocol_filters(co3d_root):
    assert _protocol_survivors(co3d_root, "apple") == ["seqA"]
    assert _protocol_survivors(co3d_root, "ball") == ["s0", "s1"]


def test_co3d_round_trip_through_the_evaluator_reader(co3d_root):
    """Cross-check with the dataset reader in recon.datasets (written from the same reference by another helper)."""
    from recon.datasets import co3d

    reader = co3d.Co3dReader(co3d_root)
    cat = reader.category("apple")
    kept_b = cat.candidate_sequences(drop_empty_masks=False, sort_sequences=False)
    assert [s.name for s in kept_b] == ["seqA"] and len(kept_b[0].frames) == 50
    assert set(cat.dropped["low_quality"]) == {"seqLowQ"}
    assert set(cat.dropped["too_few_frames"]) == {"seqShort"}
    assert set(cat.dropped["bad_translation"]) == {"seqBadT"}
    # RelPose++ preprocessing drops the frame with the empty mask, so seqA falls to 49 frames and out.
    assert cat.candidate_sequences(drop_empty_masks=True, sort_sequences=False) == []
    views = circle_views(50)
    for fr, v in zip(kept_b[0].frames, views, strict=True):
        np.testing.assert_allclose(fr.K, v.K, atol=1e-12)
        np.testing.assert_allclose(fr.T_world_cam, v.T_world_cam, atol=1e-12)


def test_synth_co3d_sequences_renders_valid_sequences_and_decoys(tmp_path):
    seqs = synth_co3d_sequences(n_sequences=1, n_frames=4, size=(24, 16), seed=1, min_frames=4)
    assert [(s.name, len(s.views), s.quality > 0.5, s.split) for s in seqs] == [
        ("seq_000", 4, True, "test"),
        ("decoy_lowq", 4, False, "test"),
        ("decoy_short", 3, True, "test"),
        ("decoy_badT", 4, True, "test"),
        ("decoy_train", 10, True, "train"),
    ]
    assert seqs[3].bad_translation_frame == 1
    write_co3d(tmp_path, {"cup": seqs}, intrinsics_format="ndc_norm_image_bounds")
    frames = read_jgz(tmp_path / "cup" / "frame_annotations.jgz")
    f0 = frames[0]
    assert f0["viewpoint"]["intrinsics_format"] == "ndc_norm_image_bounds"
    T, K = co3d_viewpoint_to_opencv(f0["viewpoint"], f0["image"]["size"])
    np.testing.assert_allclose(K, seqs[0].views[0].K, atol=1e-12)
    np.testing.assert_allclose(T, seqs[0].views[0].T_world_cam, atol=1e-12)
    depth = decode_depth_png(tmp_path / f0["depth"]["path"])
    v = seqs[0].views[0]
    np.testing.assert_allclose(depth[v.mask], v.depth[v.mask], rtol=1e-3)  # float16 precision


# ---------------------------------------------------------------- RealEstate10K


def test_re10k_round_trip(tmp_path):
    views = render_scene("room_walk", n_views=3, size=(40, 24), seed=2, focal_range=(0.6, 0.6))
    write_re10k(tmp_path, {"00000000deadbeef": views, "0123456789abcdef": views[:2]})
    assert (tmp_path / "test_clips.txt").read_text().split() == ["00000000deadbeef", "0123456789abcdef"]
    lines = (tmp_path / "test" / "00000000deadbeef.txt").read_text().splitlines()
    assert lines[0].startswith("https://") and len(lines) == 4
    vals = lines[2].split()
    assert len(vals) == 19 and vals[0] == "33333"
    np.testing.assert_allclose([float(x) for x in vals[1:7]], [0.6, 0.6 * 40 / 24, 0.5, 0.5, 0, 0])
    P = np.array([float(x) for x in vals[7:]]).reshape(3, 4)
    np.testing.assert_allclose(P[:, :3], views[1].T_world_cam[:3, :3].T, atol=1e-15)
    assert (tmp_path / "frames" / "test" / "00000000deadbeef" / "33333.png").is_file()
    back = read_re10k_clip(tmp_path, "00000000deadbeef")
    for a, b in zip(views, back, strict=True):
        np.testing.assert_allclose(b.K, a.K, atol=1e-12)
        np.testing.assert_allclose(b.T_world_cam, a.T_world_cam, atol=1e-12)
        assert np.array_equal(a.rgb, b.rgb)
    with pytest.raises(ValueError, match="one image size"):
        write_re10k(tmp_path / "x", {"c": render_scene("orbit", 2, (24, 16), mixed_orientation=True)})


def test_re10k_round_trip_through_the_evaluator_reader(tmp_path):
    from recon.datasets import cameras, re10k

    views = circle_views(4, size=(32, 24), focal=20.0)
    write_re10k(tmp_path, {"abc": views})
    ts, intr, w2c = re10k.read_camera_file(tmp_path / "test" / "abc.txt")
    assert ts.tolist() == [0, 33333, 66667, 100000]
    for k, v in enumerate(views):
        T, K = cameras.re10k_to_opencv(intr[k], w2c[k], (24, 32))
        np.testing.assert_allclose(K, v.K, atol=1e-12)
        np.testing.assert_allclose(T, v.T_world_cam, atol=1e-12)
