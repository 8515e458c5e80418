"""Distillation image lists in the release layouts: only image files, depth PNGs beside them never listed."""

import numpy as np
import pytest
from PIL import Image

from training.datasets.images import RELEASE_LAYOUTS, bedlam_loader, release_files
from training.datasets.io import LayoutError
from training.distill.config import DataConfig, DatasetRoot
from training.distill.datasets import PAPER_DATASETS, DataConfigError, build_train_dataset, dataset_files


def touch_image(path, size=(6, 4), value=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


def test_every_paper_dataset_has_a_layout():
    assert set(RELEASE_LAYOUTS) == set(PAPER_DATASETS)


def test_gldv2_and_arkitscenes_release_layouts(tmp_path):
    touch_image(tmp_path / "gld" / "train" / "0" / "0" / "a" / "00a1.jpg")
    touch_image(tmp_path / "gld" / "train" / "f" / "3" / "2" / "f32b.jpg")
    touch_image(tmp_path / "gld" / "test" / "0" / "0" / "0" / "000c.jpg")  # not the training split
    assert [p.name for p in release_files("gldv2", tmp_path / "gld")] == ["00a1.jpg", "f32b.jpg"]
    (tmp_path / "gld" / "train.csv").write_text("id,url,landmark_id\nf32b,http://x,1\n00a1,http://y,2\n")
    assert release_files("gldv2", tmp_path / "gld") == [
        tmp_path / "gld" / "train" / "f" / "3" / "2" / "f32b.jpg",
        tmp_path / "gld" / "train" / "0" / "0" / "a" / "00a1.jpg",
    ]
    scene = tmp_path / "ark" / "Training" / "4102"
    touch_image(scene / "vga_wide" / "4102_1.0.jpg")
    Image.fromarray(np.zeros((4, 6), np.uint16)).save(scene.parent / "x.png")
    (scene / "lowres_depth").mkdir()
    Image.fromarray(np.zeros((4, 6), np.uint16)).save(scene / "lowres_depth" / "4102_1.0.png")
    assert release_files("ARKitScenesV2", tmp_path / "ark") == [scene / "vga_wide" / "4102_1.0.jpg"]


def test_blendedmvs_skips_depth_and_cameras(tmp_path):
    seq = tmp_path / "5a3ca9cb270f0d0000000011"
    touch_image(seq / "00000003.jpg")
    (seq / "00000003.exr").write_bytes(b"depth")
    np.savez(seq / "00000003.npz", intrinsics=np.eye(3))
    assert release_files("BlendedMVS", tmp_path) == [seq / "00000003.jpg"]


def test_wrong_root_names_the_layout(tmp_path):
    touch_image(tmp_path / "flat.jpg")
    with pytest.raises(LayoutError, match=r"gldv2: no image under .*; expected train/<a>/<b>/<c>/<id>.jpg"):
        release_files("gldv2", tmp_path)
    with pytest.raises(DataConfigError, match="expected train/<a>"):
        dataset_files("gldv2", {"root": str(tmp_path)})
    assert dataset_files("gldv2", {"root": str(tmp_path), "layout": "folder"}) == [tmp_path / "flat.jpg"]
    with pytest.raises(DataConfigError, match="no release layout known"):
        dataset_files("mine", {"root": str(tmp_path), "layout": "release"})


def test_bedlam_closeup_rotation(tmp_path):
    img = np.zeros((2, 3, 3), np.uint8)
    img[0, 0] = 255  # top-left pixel of a 3 x 2 (W x H) image
    for name in ("20221010_3_1000_batch01hand_6fps/png/seq_000000/seq_000000_0000.png",
                 "20221019_3-8_250_highbmihand_closeup_suburb_c/png/seq_000001/seq_000001_0000.png"):  # fmt: skip
        (tmp_path / "training" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(tmp_path / "training" / name)
    files = release_files("bedlam", tmp_path)
    assert len(files) == 2
    plain, turned = (np.asarray(bedlam_loader(str(f))) for f in files)  # sorted by scene name
    assert "closeup" in str(tmp_path)  # the test's own folder: only the scene folder's name may count
    assert plain.shape == (2, 3, 3) and turned.shape == (3, 2, 3)
    # -90 degrees = clockwise: the top-left pixel moves to the top-right corner.
    assert turned[0, 1, 0] == 255 and turned[..., 0].sum() == 255


def test_distill_dataset_from_release_roots(tmp_path):
    touch_image(tmp_path / "cuffs" / "c1.jpg", (40, 30), 50)
    touch_image(tmp_path / "wild" / "cup" / "s0" / "rgb" / "00001.jpg", (40, 30), 90)
    Image.fromarray(np.zeros((30, 40), np.uint16)).save(tmp_path / "wild" / "cup" / "s0" / "00001_depth.png")
    roots = {"cuffs": DatasetRoot(str(tmp_path / "cuffs")), "WildRgb": DatasetRoot(str(tmp_path / "wild"))}
    ds = build_train_dataset(DataConfig(datasets=("cuffs", "WildRgb"), roots=roots, num_workers=0), 28)
    assert [(d.domain, len(d)) for d in ds.domains] == [("mast3r", 1), ("multihmr", 1)]  # the depth PNG is not listed
