"""Multi-view depth protocol: readers in each set's ground-truth encoding, fusion, alignment, metrics, and an
end-to-end run on a synthetic scene where the oracle must score near-perfectly and a random model must not."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from recon.datasets.data import DatasetError
from tools.eval.mvdepth import (
    MvdReader,
    align_depth,
    depth_metrics,
    fuse_depths,
    read_depth,
    run_mvdepth,
    summarize_mvdepth,
    to_original_pixels,
)

from .helpers import tiny_model


def _write_pfm(path, depth):
    H, W = depth.shape
    with open(path, "wb") as f:
        f.write(b"Pf\n%d %d\n-1.0\n" % (W, H))
        f.write(np.flipud(depth).astype("<f4").tobytes())


def write_layout(root, views, dataset, key=0):
    """A one-sample set in the layout ``MvdReader`` documents, ground truth in ``dataset``'s own encoding."""
    root.mkdir(parents=True, exist_ok=True)
    recs = []
    for k, v in enumerate(views):
        Image.fromarray(v.rgb).save(root / f"img{k}.png")
        rec = {"image": f"img{k}.png", "K": v.K.tolist(), "T_world_cam": v.T_world_cam.tolist()}
        if k == key:
            d = np.asarray(v.depth, np.float32)
            if dataset == "kitti":
                Image.fromarray(np.rint(d * 256).astype(np.uint16)).save(root / f"depth{k}.png")
                rec["depth"] = f"depth{k}.png"
            elif dataset == "scannet":  # millimetres, at half the colour image's size (640x480 vs 1296x968)
                Image.fromarray(np.rint(d[::2, ::2] * 1000).astype(np.uint16)).save(root / f"depth{k}.png")
                rec["depth"] = f"depth{k}.png"
            elif dataset == "eth3d":
                d.tofile(root / f"depth{k}.JPG")  # ETH3D: headerless float32 of the image size, named as the image
                rec["depth"] = f"depth{k}.JPG"
            elif dataset == "dtu":
                _write_pfm(root / f"depth{k}.pfm", d * 1000)  # rmvd's DTU: PFM in millimetres
                rec["depth"] = f"depth{k}.pfm"
            else:
                np.savez(root / f"depth{k}.npz", d)  # Tanks and Temples: arr_0
                rec["depth"] = f"depth{k}.npz"
        recs.append(rec)
    (root / "samples.json").write_text(json.dumps({"dataset": dataset, "samples": [
        {"name": "s0", "keyview": key, "views": recs}]}))  # fmt: skip


@pytest.fixture(scope="module")
def scene():
    from tools.synth import render_scene

    return render_scene("orbit", n_views=3, size=(64, 48), seed=3)


class TestReaders:
    @pytest.mark.parametrize("dataset", ["kitti", "scannet", "eth3d", "dtu", "tanks"])
    def test_round_trip_in_each_encoding(self, tmp_path, scene, dataset):
        write_layout(tmp_path, scene, dataset)
        reader = MvdReader(tmp_path, dataset)
        (s,) = reader.samples
        assert s.keyview == 0 and s.sources == [1, 2]
        np.testing.assert_allclose(s.views[1].K, scene[1].K)
        gt = reader.gt_depth(s)
        # 16-bit PNGs quantise: KITTI to 1/256, ScanNet to 1 mm
        atol = {"kitti": 0.5 / 256, "scannet": 0.5 / 1000}.get(dataset, 1e-5)
        want = scene[0].depth[::2, ::2] if dataset == "scannet" else scene[0].depth
        np.testing.assert_allclose(gt, want, atol=atol)

    def test_non_finite_is_invalid(self, tmp_path):
        d = np.array([[1.0, np.nan], [np.inf, -2.0]], np.float32)
        d.tofile(tmp_path / "d.bin")
        np.testing.assert_array_equal(read_depth(tmp_path / "d.bin", raw_shape=(2, 2)), [[1, 0], [0, 0]])
        np.savez(tmp_path / "d.npz", d * 1000)
        np.testing.assert_array_equal(read_depth(tmp_path / "d.npz", divisor=1000), [[1, 0], [0, 0]])

    def test_errors_name_the_problem(self, tmp_path, scene):
        with pytest.raises(DatasetError, match="does not exist"):
            MvdReader(tmp_path, "dtu")
        write_layout(tmp_path, scene, "dtu")
        with pytest.raises(DatasetError, match="lists 'dtu' samples"):
            MvdReader(tmp_path, "kitti")
        np.zeros(5, np.float32).tofile(tmp_path / "bad.bin")
        with pytest.raises(DatasetError, match="expected 2x3"):
            read_depth(tmp_path / "bad.bin", raw_shape=(2, 3))
        with pytest.raises(DatasetError, match="unknown depth format"):
            read_depth(tmp_path / "bad.bin")
        data = json.loads((tmp_path / "samples.json").read_text())
        data["samples"][0]["keyview"] = 7
        (tmp_path / "samples.json").write_text(json.dumps(data))
        with pytest.raises(DatasetError, match="keyview 7"):
            MvdReader(tmp_path, "dtu")


class TestMetrics:
    def test_hand_worked_values(self):
        gt = np.array([[1.0, 2.0], [4.0, 0.0]])
        pred = np.array([[1.02, 2.2], [3.0, 9.0]])
        m = depth_metrics(pred, gt)
        # rel: (0.02/1 + 0.2/2 + 1/4) / 3 = 0.37 / 3; tau: only 1.02 < 1.03 -> 1 of 3 (the gt=0 pixel is ignored)
        assert m["rel"] == pytest.approx(100 * 0.37 / 3)
        assert m["tau"] == pytest.approx(100 / 3)
        assert m["pixels"] == 3

    def test_zero_prediction_is_an_outlier(self):
        m = depth_metrics(np.array([0.0, 1.0]), np.array([1.0, 1.0]))
        assert m["tau"] == pytest.approx(50.0) and m["rel"] == pytest.approx(50.0)

    def test_median_alignment_and_clip(self):
        gt = np.array([2.0, 4.0, 6.0, 0.0])
        pred, s = align_depth(np.array([1.0, 2.0, 3.0, 500.0]), gt, "median")
        assert s == pytest.approx(2.0)  # median(gt valid)=4, median(pred on the same pixels)=2
        np.testing.assert_allclose(pred, [2, 4, 6, 100])  # clipped to rmvd's [0.1, 100]
        pred, s = align_depth(np.array([1.0, 2.0, 3.0, 0.0]), gt, "none")
        assert s == 1.0 and pred[3] == pytest.approx(0.1)


class TestFusion:
    def test_rescales_then_weights_by_confidence(self):
        truth = np.array([[1.0, 2.0], [3.0, 4.0]])
        d1 = truth.copy()
        d2 = 3.0 * truth * np.array([[1.0, 1.0], [1.0, 1.1]])  # other scale, one pixel off by 10 %
        c1 = np.ones_like(truth)
        c2 = np.array([[1.0, 1.0], [1.0, 3.0]])
        fused, _ = fuse_depths(np.stack([d1, d2]), np.stack([c1, c2]))
        # median ratio d1/d2 = 1/3 on 3 of 4 pixels, so d2 is rescaled exactly; the off pixel: (4 + 3*4.4)/4
        np.testing.assert_allclose(fused, [[1, 2], [3, (4 + 3 * 4.4) / 4]])

    def test_invalid_maps_do_not_vote(self):
        d = np.stack([np.full((2, 2), 2.0), np.zeros((2, 2))])
        fused, _ = fuse_depths(d, np.ones_like(d))
        np.testing.assert_allclose(fused, 2.0)


def test_resample_to_original_pixels():
    net = np.arange(6, dtype=float).reshape(2, 3)
    A = np.array([[2.0, 0, 0.5], [0, 2.0, 0.5], [0, 0, 1]])  # network pixel x -> 2x + 0.5 (2x down-scaling)
    out, inside = to_original_pixels(net, A, (4, 6))
    assert inside.all()
    assert out[0, 0] == 0 and out[3, 5] == 5 and out[2, 1] == 3
    crop = np.array([[1.0, 0, 2], [0, 1.0, 0], [0, 0, 1]])  # a centred crop: network x -> original x + 2
    out, inside = to_original_pixels(net, crop, (2, 7))
    np.testing.assert_array_equal(inside[0], [False, False, True, True, True, False, False])
    np.testing.assert_array_equal(out[1, 2:5], [3, 4, 5])


@pytest.mark.parametrize("dataset, alignment", [("scannet", "median"), ("kitti", "translation")])
def test_oracle_scores_near_perfect_with_each_alignment(tmp_path, scene, dataset, alignment):
    """ScanNet: depth on a smaller grid than the image; translation: the oracle's pairs have other scales, so
    the baseline must be recovered from the pair similarity to come out exact."""
    from tools.oracle import OracleModel

    write_layout(tmp_path / "data", scene, dataset)
    reader = MvdReader(tmp_path / "data", dataset)
    run_mvdepth(OracleModel(scene), reader, tmp_path / "o", label="oracle", alignment=alignment)
    row = summarize_mvdepth(tmp_path / "o")["sets"][dataset]
    assert row["rel"] < 0.1 and row["tau"] > 99.9  # PNG quantisation only


def test_oracle_scores_near_perfect_and_a_random_model_does_not(tmp_path, scene):
    from tools.oracle import OracleModel

    write_layout(tmp_path / "data", scene, "dtu")
    reader = MvdReader(tmp_path / "data", "dtu")
    oracle = OracleModel(scene)
    assert run_mvdepth(oracle, reader, tmp_path / "oracle", label="oracle") == (1, 0)
    good = summarize_mvdepth(tmp_path / "oracle")["sets"]["dtu"]
    assert good["rel"] < 0.1 and good["tau"] > 99.9
    assert run_mvdepth(oracle, reader, tmp_path / "oracle", label="oracle") == (0, 1)  # resumed: nothing to do

    random = tiny_model("dune_vits14")  # patch 14: the 64x48 image is cropped to 56x42, scoring maps back
    run_mvdepth(random, reader, tmp_path / "random", label="random", image_size=64)
    bad = summarize_mvdepth(tmp_path / "random")["sets"]["dtu"]
    assert bad["rel"] > 10 * good["rel"] + 5 and bad["tau"] < good["tau"] - 30


def test_cli_runs_resumes_and_reports_user_errors(tmp_path, scene, capsys):
    from cli import main
    from recon.model import save_model

    write_layout(tmp_path / "data", scene, "kitti")
    ckpt = save_model(tiny_model("mast3r_vitl16"), tmp_path / "tiny.pth")
    args = ["-q", "eval", "mvdepth", "--dataset", "kitti", "--root", str(tmp_path / "data"), "--checkpoint",
            str(ckpt), "--image-size", "64", "--device", "cpu", "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(args) == 0
    assert "| model |" in capsys.readouterr().out
    assert len((tmp_path / "out" / "kitti" / "results.jsonl").read_text().splitlines()) == 1
    assert main(args) == 0  # resumes: the sample is not evaluated again
    assert "0 samples evaluated, 1 already done" in capsys.readouterr().err
    assert main([*args[:-1], str(tmp_path / "out"), "--alignment", "none"]) == 2  # another run into the same OUT
    assert "different run" in capsys.readouterr().err
    assert main([*args[:6], str(tmp_path / "missing"), *args[7:]]) == 2
    assert "samples.json does not exist" in capsys.readouterr().err


def test_a_failing_sample_is_recorded_and_the_run_goes_on(tmp_path, scene):
    from tools.oracle import OracleModel

    write_layout(tmp_path / "data", scene, "dtu")
    data = json.loads((tmp_path / "data" / "samples.json").read_text())
    broken = json.loads(json.dumps(data["samples"][0]))
    broken["name"], broken["views"][1]["image"] = "broken", "missing.png"
    data["samples"].insert(0, broken)
    (tmp_path / "data" / "samples.json").write_text(json.dumps(data))
    reader = MvdReader(tmp_path / "data", "dtu")
    with pytest.raises(DatasetError):
        run_mvdepth(OracleModel(scene), reader, tmp_path / "ff", label="oracle", fail_fast=True)
    assert run_mvdepth(OracleModel(scene), reader, tmp_path / "o", label="oracle") == (2, 0)
    summary = summarize_mvdepth(tmp_path / "o")
    assert summary["sets"]["dtu"]["samples"] == 1 and summary["sets"]["dtu"]["failed"] == 1
    assert "1 samples failed" in (tmp_path / "o" / "summary.md").read_text()
