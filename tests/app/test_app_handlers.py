"""Handlers without a browser: a run on demo photos, re-export without inference, error paths, sessions."""

from __future__ import annotations

import json
import shutil
import zipfile

import numpy as np
import pytest
import trimesh

from app.config import AppLimits
from app.handlers import (
    STAGES,
    RunError,
    RunSettings,
    ViewSettings,
    export_result,
    image_table,
    run_reconstruction,
    stage_counts,
)
from app.uploads import ingest

FAST = RunSettings(image_size=160, subsample=16)


@pytest.fixture(scope="module")
def finished(model, demo_dir, tmp_path_factory):
    """One reconstruction of two demo photos, shared by the tests that only read or re-export it."""
    from app.workspace import WorkspaceManager

    mgr = WorkspaceManager(tmp_path_factory.mktemp("ws"))
    ws = mgr.create("shared")
    ingest(ws, sorted((demo_dir / "orbit").glob("*.jpg"))[:2], AppLimits())
    events = []
    result = run_reconstruction(
        ws, model, FAST, AppLimits(), device="cpu", progress=lambda s, f, m: events.append((s, f, m))
    )
    yield ws, result, events
    mgr.close_all()


def _glb_points(path) -> int:
    scene = trimesh.load(path)
    return sum(len(g.vertices) for g in scene.geometry.values() if isinstance(g, trimesh.PointCloud))


class TestRun:
    def test_stages_reported_in_order(self, finished):
        _, _, events = finished
        starts = [s for s, f, _ in events if f == 0.0]
        ends = [s for s, f, _ in events if f == 1.0]
        assert starts == list(STAGES) and ends == list(STAGES)

    def test_result_and_downloads(self, finished):
        ws, result, _ = finished
        ex = result.exports
        assert ws.result is result
        assert [p.name for p in ex.downloads] == ["scene.glb", "scene.ply", "colmap.zip", "transforms.json"]
        for p in ex.downloads:
            assert p.is_file() and p.stat().st_size > 0 and ws.root in p.parents
        assert _glb_points(ex.glb) == ex.n_points > 0
        with zipfile.ZipFile(ex.colmap_zip) as zf:
            members = set(zf.namelist())
        assert {"sparse/0/cameras.bin", "sparse/0/images.bin", "sparse/0/points3D.bin"} <= members
        # the photos travel with the model, under their (generated) view names
        registered = [n for n, r in zip(result.scene.names, result.scene.registered, strict=True) if r]
        assert {f"images/{n}" for n in registered} <= members
        frames = json.loads(ex.transforms.read_text())["frames"]
        assert len(frames) == int(np.sum(result.scene.registered))

    def test_table_and_counts(self, finished):
        _, result, _ = finished
        rows = image_table(result)
        assert [r[0] for r in rows] == [0, 1]
        assert [r[1] for r in rows] == ["0000_view_000.jpg", "0001_view_001.jpg"]
        scene = result.scene
        for row, reg, K, conf in zip(rows, scene.registered, scene.K_orig, scene.conf, strict=True):
            assert row[2] == ("yes" if reg else "no")
            if reg:
                assert float(row[3]) == pytest.approx(np.sqrt(K[0, 0] * K[1, 1]), abs=0.05)
                assert float(row[4]) == pytest.approx(conf[conf > 0].mean(), abs=5e-4)
            assert row[5] == "512x384"
        counts = stage_counts(result)
        assert set(counts) == set(STAGES)
        assert counts["load"].startswith("2 images used, 0 skipped")
        assert counts["pairs"].startswith("1 pair ")
        assert f"{result.report.registered}/2 cameras registered" in counts["alignment"]


class TestReexport:
    def test_threshold_reexports_without_inference(self, finished, model, monkeypatch):
        ws, result, _ = finished

        def no_inference(*args, **kwargs):
            raise AssertionError("re-export must not run the network")

        monkeypatch.setattr(model, "forward", no_inference)
        monkeypatch.setattr("recon.pipeline.reconstruct", no_inference)
        conf = np.concatenate([c[c > 0] for c in result.scene.conf])
        thr = float(np.quantile(conf, 0.5))
        low = export_result(ws, ViewSettings(conf_thr=1.0, clean_depth=False))
        low_glb = low.glb
        high = export_result(ws, ViewSettings(conf_thr=thr, clean_depth=False))
        assert high.glb != low_glb and not low_glb.exists()  # one export folder at a time
        assert _glb_points(high.glb) == high.n_points
        expected = sum(int(((c > thr) & (c > 0)).sum()) for c in result.scene.conf)
        assert high.n_points == expected < low.n_points

    def test_clean_mesh_and_cameras_options(self, finished):
        ws, result, _ = finished
        cleaned = export_result(ws, ViewSettings(conf_thr=1.0, clean_depth=True))
        raw_points = sum(int((c > 1.0).sum()) for c in result.scene.conf)
        assert cleaned.n_points <= raw_points
        meshed = export_result(ws, ViewSettings(conf_thr=1.0, as_mesh=True, show_cameras=False))
        scene = trimesh.load(meshed.glb)
        kinds = {type(g).__name__ for g in scene.geometry.values()}
        assert "Trimesh" in kinds and "PointCloud" not in kinds

    def test_negative_threshold(self, finished):
        ws, _, _ = finished
        with pytest.raises(RunError, match=">= 0"):
            export_result(ws, ViewSettings(conf_thr=-1.0))


class TestErrors:
    def test_run_without_upload(self, manager, model):
        ws = manager.create("a")
        with pytest.raises(RunError, match="upload photos"):
            run_reconstruction(ws, model, FAST, AppLimits(), device="cpu")

    def test_export_before_run(self, manager):
        with pytest.raises(RunError, match="run one first"):
            export_result(manager.create("a"), ViewSettings())

    def test_one_usable_image(self, manager, model, demo_images, tmp_path):
        ws = manager.create("a")
        dup = tmp_path / "copy.jpg"
        shutil.copyfile(demo_images[0], dup)
        ingest(ws, [demo_images[0], dup], AppLimits())  # same bytes twice: the loader skips the duplicate
        with pytest.raises(RunError, match="need at least 2 usable images, got 1.*duplicate"):
            run_reconstruction(ws, model, FAST, AppLimits(), device="cpu")

    def test_undecodable_video(self, manager, model, tmp_path):
        ws = manager.create("a")
        clip = tmp_path / "clip.mp4"
        clip.write_bytes(b"\x00" * 4096)
        ingest(ws, [clip], AppLimits())
        with pytest.raises(RunError, match="need at least 2 usable images|PyAV"):
            run_reconstruction(ws, model, FAST, AppLimits(), device="cpu")

    @pytest.mark.parametrize(
        "settings, message",
        [
            (RunSettings(align="bundle"), "'sparse' or 'dense'"),
            (RunSettings(image_size=10), "between 64 and 1024"),
            (RunSettings(subsample=0), ">= 1"),
            (RunSettings(focal=-3.0), "positive number of pixels"),
            (RunSettings(graph="zigzag-3", image_size=160), "cannot run with these settings"),
        ],
    )
    def test_bad_settings(self, manager, model, demo_images, settings, message):
        ws = manager.create("a")
        ingest(ws, demo_images[:2], AppLimits())
        with pytest.raises(RunError, match=message):
            run_reconstruction(ws, model, settings, AppLimits(), device="cpu")


def test_video_frames_are_sampled_up_to_the_image_limit(manager, model, demo_images, tmp_path):
    av = pytest.importorskip("av", reason="video input needs PyAV")
    from PIL import Image

    clip = tmp_path / "clip.mp4"
    with av.open(str(clip), "w") as out:
        stream = out.add_stream("mpeg4", rate=1)
        stream.width, stream.height, stream.pix_fmt = 512, 384, "yuv420p"
        for p in demo_images[:3]:  # three distinct one-second frames
            frame = av.VideoFrame.from_ndarray(np.asarray(Image.open(p).convert("RGB")), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    ws = manager.create("video")
    assert ingest(ws, [clip], AppLimits()).video == "clip.mp4"
    result = run_reconstruction(ws, model, FAST, AppLimits(max_images=2, video_fps=1.0), device="cpu")
    assert result.report.n_images == 2
    assert result.scene.names == ["frame_000000", "frame_000001"]  # sampling stops at the limit
    assert result.image_paths == [None, None]  # frames have no files of their own
    assert result.exports.colmap_zip.is_file()
