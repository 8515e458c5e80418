"""MuM sequence builders on COLMAP models written by the test (images.txt and images.bin), hand-worked values."""

import gzip
import json
import struct

import numpy as np
import pytest
from PIL import Image
from scipy.spatial.transform import Rotation

from training.mum.config import DatasetConfig
from training.mum.overlaps import (
    ColmapModelError,
    iou_sequences,
    main,
    overlap_matrix,
    read_colmap_images,
    topk_sequences,
)
from training.mum.sequences import DataConfigError, build_source

# Four images and the 3D points each sees.
POINTS = {"a.jpg": [1, 2, 3, 4], "b.jpg": [3, 4, 5, 6], "c.jpg": [4, 5, 6, 7, 8, 9, 10, 11], "d.jpg": []}
YAW = {"a.jpg": 0.0, "b.jpg": 30.0, "c.jpg": 65.0, "d.jpg": 5.0}


def qvec(name):
    x, y, z, w = Rotation.from_euler("y", YAW[name], degrees=True).as_quat()
    return [w, x, y, z]


def write_images_txt(folder):
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        "# Image list with two lines of data per image:",
        "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
    ]
    for k, (name, pts) in enumerate(POINTS.items()):
        lines.append(" ".join(str(v) for v in [k + 1, *qvec(name), 0.1, 0.2, 0.3, 1, name]))
        lines.append(" ".join(f"{10.0 + i} {20.5} {p}" for i, p in enumerate([*pts, -1])))  # one untriangulated
    (folder / "images.txt").write_text("\n".join(lines) + "\n")


def write_images_bin(folder):
    folder.mkdir(parents=True, exist_ok=True)
    out = struct.pack("<Q", len(POINTS))
    for k, (name, pts) in enumerate(POINTS.items()):
        out += struct.pack("<i7di", k + 1, *qvec(name), 0.1, 0.2, 0.3, 1) + name.encode() + b"\0"
        pts = [*pts, -1, pts[0]] if pts else [-1]  # a duplicate observation counts once
        out += struct.pack("<Q", len(pts)) + b"".join(struct.pack("<ddq", 1.5, 2.5, p) for p in pts)
    (folder / "images.bin").write_bytes(out)


@pytest.mark.parametrize("writer", [write_images_txt, write_images_bin])
def test_read_and_overlap(tmp_path, writer):
    writer(tmp_path / "m")
    images = read_colmap_images(tmp_path / "m")
    assert [im.name for im in images] == list(POINTS)
    np.testing.assert_array_equal(images[2].point3D_ids, np.arange(4, 12))
    np.testing.assert_allclose(images[1].R_cam_world, Rotation.from_euler("y", 30, degrees=True).as_matrix())
    O = overlap_matrix(images)
    # a sees 4 points, shares {3, 4} with b and {4} with c; c sees 8, shares {4, 5, 6} with b.
    np.testing.assert_allclose(O[0], [1, 2 / 4, 1 / 4, 0])
    np.testing.assert_allclose(O[2], [1 / 8, 3 / 8, 1, 0])
    np.testing.assert_allclose(O[3], [0, 0, 0, 0])


def test_reader_errors(tmp_path):
    with pytest.raises(ColmapModelError, match="no images.bin or images.txt"):
        read_colmap_images(tmp_path)
    (tmp_path / "images.bin").write_bytes(struct.pack("<Q", 3) + b"\x00" * 10)
    with pytest.raises(ColmapModelError, match="truncated"):
        read_colmap_images(tmp_path)


def test_topk_sequences_hand_values():
    O = np.array([[1.0, 0.5, 0.25, 0.0], [0.5, 1, 0.75, -1], [0.125, 0.375, 1, 0], [0, 0, 0, 1]])
    seqs = topk_sequences(O, length=3, num_sequences=6, rng=np.random.default_rng(0))
    anchors = np.random.default_rng(0).integers(4, size=6)  # the same draws
    expected = {0: [0, 1, 2], 1: [1, 2, 0], 2: [2, 1, 0], 3: [3, 0, 1]}  # row 1 excludes image 3 (overlap -1)
    assert seqs == [expected[int(a)] for a in anchors]
    assert topk_sequences(O, length=5, num_sequences=3, rng=np.random.default_rng(0)) == []  # too few candidates


def test_iou_sequences_hand_values(tmp_path):
    write_images_txt(tmp_path)
    images = read_colmap_images(tmp_path)
    # Seed c (8 points). c -> b: iou 3/8, 35 deg; c -> a: iou 1/8, 65 deg; b has the higher score:
    # 3/8 x 4 cos35 (1 - cos35) = 0.2227 vs 1/8 x 4 cos65 (1 - cos65) = 0.1220. Then b -> a: iou 2/4, 30 deg.
    # d sees nothing and is 5 deg from a: never eligible.
    assert iou_sequences(images, min_length=3) == [[2, 1, 0]]
    assert iou_sequences(images, min_length=4) == []
    assert iou_sequences(images, min_length=2, min_angle_deg=36) == [[2, 0]]  # b (35 deg) too close to c


def test_megascenes_cli_and_sequences_source(tmp_path):
    root = tmp_path / "MegaScenes"
    write_images_bin(root / "reconstruct" / "000" / "123" / "colmap" / "0")
    for name in POINTS:
        (root / "images" / "000" / "123").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / "images" / "000" / "123" / name)
    out = tmp_path / "ms.json.gz"
    main(["megascenes", "--root", str(root), "--out", str(out), "--min-length", "3"])
    data = json.loads(gzip.decompress(out.read_bytes()))
    assert data == {"sequences": [[f"images/000/123/{n}" for n in ("c.jpg", "b.jpg", "a.jpg")]]}
    src = build_source(DatasetConfig(name="ms", kind="sequences", root=str(root), sequences_file=str(out)))
    assert src.sequences == [[str(root / p) for p in data["sequences"][0]]]
    with pytest.raises(DataConfigError, match="no sequence of at least 24 frames"):
        build_source(DatasetConfig(kind="sequences", root=str(root), sequences_file=str(out), min_length=24))
    with pytest.raises(DataConfigError, match="is root .* the dataset folder"):
        build_source(DatasetConfig(kind="sequences", root=str(tmp_path), sequences_file=str(out)))


def test_megadepth_cli(tmp_path):
    write_images_txt(tmp_path / "Undistorted_SfM" / "0001" / "sparse-txt")
    for name in ("a.jpg", "b.jpg", "c.jpg"):  # d.jpg is registered but absent on disk: left out
        (tmp_path / "Undistorted_SfM" / "0001" / "images").mkdir(parents=True, exist_ok=True)
        (tmp_path / "Undistorted_SfM" / "0001" / "images" / name).write_bytes(b"")
    out = tmp_path / "md.json.gz"
    main(["megadepth", "--root", str(tmp_path / "Undistorted_SfM"), "--out", str(out), "--length", "3",
          "--per-scene", "4"])  # fmt: skip
    seqs = json.loads(gzip.decompress(out.read_bytes()))["sequences"]
    # Among a, b, c: a -> (b .5, c .25), b -> (c .75, a .5), c -> (b 3/8, a 1/8); anchors drawn from 3 images.
    expected = {0: "abc", 1: "bca", 2: "cba"}
    anchors = np.random.default_rng(0).integers(3, size=4)
    assert seqs == [[f"0001/images/{n}.jpg" for n in expected[int(k)]] for k in anchors]
    with pytest.raises(SystemExit, match="Undistorted_SfM layout"):
        main(["megadepth", "--root", str(tmp_path), "--out", str(out)])


def test_mixture_expression_gives_weighted_datasets(tmp_path):
    from training.common.config import ConfigError, replace_sections
    from training.mum.config import PRESETS, mixture_datasets, resolve_config

    sets = mixture_datasets(
        f"3 @ Sequences(name='megadepth', root='{tmp_path}', sequences_file='md.json.gz', min_length=24)"
        " + Synthetic(synthetic_scenes=2)"
    )
    assert [(d.name, d.kind, d.weight, d.min_length) for d in sets] == [
        ("megadepth", "sequences", 3.0, 24), ("synthetic", "synthetic", 1.0, 2)]  # fmt: skip
    with pytest.raises(ConfigError, match="unknown key.*'colour'"):
        mixture_datasets("Folder(colour=1)")
    with pytest.raises(ConfigError, match="unknown dataset kind 'Nope'"):
        resolve_config("smoke", {"data": {"mixture": "2 @ Nope()"}})
    cfg = replace_sections(PRESETS["smoke"], data={"mixture": "2 @ Synthetic(synthetic_scenes=1, synthetic_views=4)"})
    from training.mum.train import build_batches

    batches = build_batches(cfg, 0)
    assert [s.name for s in batches.sources] == ["synthetic"] and len(batches.sources[0].sequences) == 1
