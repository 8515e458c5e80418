"""Handlers without a browser: a run on demo photos, re-export without inference, error paths, sessions."""

from __future__ import annotations

import json
import shutil
import zipfile
from dataclasses import replace

import numpy as np
import pytest
import trimesh
from fixture_files import require_extra

from app.config import AppLimits
from app.handlers import (
    DONE,
    STAGES,
    WARN,
    RunCancelled,
    RunError,
    ViewSettings,
    export_result,
    image_table,
    page_defaults,
    plan_run,
    run_reconstruction,
    stage_counts,
    summary_markdown,
    with_iterations,
)
from app.uploads import ingest
from recon.errors import UserError
from recon.settings import UserPriors

FAST = replace(page_defaults(), image_size=160, subsample=16)


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
        assert counts["load"][1].startswith("2 images used, 0 skipped")
        assert counts["pairs"][1].startswith("scene graph swin-2: 1 pair (2 decoder passes)")
        assert counts["alignment"] == (DONE, counts["alignment"][1])
        assert f"{result.report.registered}/2 cameras registered" in counts["alignment"][1]
        assert summary_markdown(result).startswith("**Done.** 2/2 cameras registered.")

    def test_progress_moves_per_step(self, finished):
        _, result, events = finished
        inner = [(s, f) for s, f, _ in events if 0.0 < f < 1.0]
        # one step per decoder batch (a pair in both orders on a CPU) and per matched unordered pair, in order
        assert [m for s, _, m in events if s == "inference" and m.startswith("decoder pass")] == [
            "decoder pass 2/2 (1 pairs)"
        ]
        matching = [f for s, f in inner if s == "matching"]
        assert matching == sorted(matching) and len(matching) == result.report.n_pairs


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
        "change, priors, message",
        [
            ({"align": "feedforward"}, {}, "alignment must be one of 'sparse', 'dense'"),  # not offered by the page
            ({"image_size": 48}, {}, "between 64 and 1024"),  # the page's budget
            ({"align_config": with_iterations(FAST, 6000).align_config}, {}, "between 1 and 5000"),
            ({"subsample": 0}, {}, "subsample"),  # the pipeline config's own checks
            ({}, {"focal": -3.0}, "focal length must be a number > 0"),
            ({"graph": "zigzag-3"}, {}, "unknown scene graph .zigzag-3.; valid: complete"),
        ],
    )
    def test_bad_settings(self, manager, model, demo_images, change, priors, message):
        ws = manager.create("a")
        ingest(ws, demo_images[:2], AppLimits())
        with pytest.raises(UserError, match=message):
            run_reconstruction(
                ws, model, replace(FAST, **change), AppLimits(), priors=UserPriors(**priors), device="cpu"
            )


def test_video_frames_are_sampled_up_to_the_image_limit(manager, model, demo_images, tmp_path):
    av = require_extra("av")
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
    assert result.scene.paths == [None, None]  # frames have no files of their own
    assert result.exports.colmap_zip.is_file()


class TestHonesty:
    """A failed or meaningless stage is never shown as done."""

    def test_random_weights_never_read_done(self, finished):
        _, result, _ = finished
        import dataclasses

        rnd = dataclasses.replace(result, random_weights=True)
        summary = summary_markdown(rnd)
        assert "Done" not in summary and "random weights" in summary and "meaningless" in summary
        counts = stage_counts(rnd)
        assert counts["alignment"][0] == WARN and "registered" not in counts["alignment"][1]
        assert {row[2] for row in image_table(rnd)} == {"random"}

    def test_unregistered_views_are_named(self, finished):
        _, result, _ = finished
        import copy
        import dataclasses

        scene = copy.copy(result.scene)
        scene.registered = np.array([True, False])
        partial = dataclasses.replace(result, scene=scene)
        assert partial.unregistered == ["0001_view_001.jpg"]
        assert "not registered" in summary_markdown(partial) and "0001_view_001.jpg" in summary_markdown(partial)
        assert stage_counts(partial)["alignment"][0] == WARN
        scene.info = {**scene.info, "unregistered": ["named_by_aligner.jpg"]}  # the aligner's own list counts too
        assert partial.unregistered == ["named_by_aligner.jpg", "0001_view_001.jpg"]

    @pytest.mark.parametrize(
        "change, stage, message",
        [
            ({"registered": 0}, "alignment", "placed 0 of 2 views"),
            ({"mean_conf": float("nan")}, "inference", "not finite"),
            ({"n_matches": 0}, "matching", "no match"),
        ],
    )
    def test_meaningless_outcomes_fail(
        self, finished, monkeypatch, manager, model, demo_images, change, stage, message
    ):
        import recon.pipeline

        real = recon.pipeline.reconstruct

        def tampered(*args, **kwargs):
            scene, report = real(*args, **kwargs)
            for k, v in change.items():
                setattr(report, k, v)
            if change.get("registered") == 0:
                scene.registered = np.zeros(len(scene), bool)
            return scene, report

        monkeypatch.setattr(recon.pipeline, "reconstruct", tampered)
        ws = manager.create("t")
        ingest(ws, demo_images[:2], AppLimits())
        with pytest.raises(RunError, match=message) as err:
            run_reconstruction(ws, model, FAST, AppLimits(), device="cpu")
        assert err.value.stage == stage and ws.result is None
        if stage == "alignment":
            assert "0000_view_000.jpg" in str(err.value)  # the views not placed are named

    def test_cancel_stops_between_steps(self, manager, model, demo_images):
        import threading

        ws = manager.create("c")
        ingest(ws, demo_images[:4], AppLimits())
        cancel = threading.Event()
        seen = []

        def progress(stage, frac, msg):
            seen.append((stage, msg))
            if msg.startswith("decoder pass 2/"):
                cancel.set()  # as the Stop button does, from another thread

        with pytest.raises(RunCancelled) as err:
            run_reconstruction(ws, model, FAST, AppLimits(), device="cpu", progress=progress, cancel=cancel)
        assert err.value.stage == "inference" and ws.result is None
        assert seen[-1] == ("inference", "decoder pass 2/12 (6 pairs)")  # stopped at the very next step


class TestPlan:
    def test_pairs_and_wording(self):
        from app.handlers import UnitCosts, overall_fraction

        assert plan_run(10, page_defaults()).n_pairs == 20  # swin-2: each photo with the next two
        assert plan_run(4, replace(page_defaults(), graph="complete")).n_pairs == 6
        retrieval = plan_run(10, replace(page_defaults(), graph="retrieval-4-3"))  # 4 key images, 3 nearest
        assert not retrieval.exact and retrieval.n_pairs == 10 * 2 + 6
        costs = UnitCosts(encode=0.1, decode=0.5, match=0.25, align=0.001, export=0.1)
        plan = plan_run(10, with_iterations(page_defaults(), 100), costs)
        # 10 encodes + 40 decoder passes; 40 matched passes; 2 phases x 100 iterations x 20 pairs; 10 exports
        assert plan.stage_seconds["inference"] == pytest.approx(1.0 + 20.0)
        assert plan.stage_seconds["matching"] == pytest.approx(10.0)
        assert plan.stage_seconds["alignment"] == pytest.approx(4.0)
        assert plan.message().startswith("Plan: 10 images, scene graph `swin-2`: 20 pairs (40 decoder passes);")
        assert plan.stage_seconds["export"] == pytest.approx(1.0)
        assert "estimated **~36 s**" in plan.message()
        fractions = [overall_fraction(plan, s, f) for s in STAGES for f in (0.0, 0.5, 1.0)]
        assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
        with pytest.raises(UserError, match="unknown scene graph 'zigzag'"):
            plan_run(10, replace(page_defaults(), graph="zigzag"))


@pytest.mark.parametrize(
    ("mode", "fields"),
    [
        ("sparse", ("niter_coarse", "niter_fine")),
        ("dense", ("niter",)),
        ("mast3r-sfm", ("niter1", "niter2")),
        ("dust3r", ("niter",)),
    ],
)
def test_every_alignment_mode_gets_the_page_iterations(mode, fields):
    """The page's iteration count reaches each aligner's own config, the parity modes' official knobs included."""
    from app.handlers import _align_config

    cfg = _align_config(mode, 7)
    assert all(getattr(cfg, f) == 7 for f in fields)


def test_parity_aligners_report_iterations_and_can_be_cancelled():
    """dust3r / mast3r-sfm call ``recon.progress.step`` every iteration, so the bar moves and Stop works."""
    import torch

    from recon.align import align
    from recon.progress import step_hook
    from recon.types import PairPrediction, View

    rng = np.random.default_rng(0)
    H, W = 16, 16
    views = [View(image=torch.rand(3, H, W), idx=k, name=f"v{k}") for k in range(2)]
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    pts = torch.from_numpy(np.stack([(x - W / 2) / 20, (y - H / 2) / 20, np.ones_like(x) * 2], -1))
    desc = torch.nn.functional.normalize(torch.from_numpy(rng.normal(size=(H, W, 8)).astype(np.float32)), dim=-1)
    preds = [
        PairPrediction(
            i=i,
            j=j,
            pts3d_i=pts,
            pts3d_j=pts + torch.tensor([0.1, 0, 0]),
            conf_i=torch.full((H, W), 5.0),
            conf_j=torch.full((H, W), 5.0),
            desc_i=desc,
            desc_j=desc,
            desc_conf_i=torch.full((H, W), 9.0),
            desc_conf_j=torch.full((H, W), 9.0),
        )
        for i, j in ((0, 1), (1, 0))
    ]

    class Stop(Exception):
        pass

    for method, knobs in (("dust3r", {"niter": 50}), ("mast3r-sfm", {"niter1": 50, "niter2": 50})):
        seen = []

        def hook(stage, done, total, detail, seen=seen):
            seen.append((stage, done, total))
            if stage == "alignment" and done == 3:
                raise Stop

        with pytest.raises(Stop), step_hook(hook):
            align(views, preds, method=method, **knobs)
        assert seen[-1] == ("alignment", 3, 50), method


@pytest.mark.slow  # ~12 s quiet: TSDF fusion at full size
def test_tsdf_slider_refines_the_exported_depth(finished):
    """The TSDF threshold (the MASt3R demo's ``TSDF_thresh``) changes the exported geometry; 0 leaves it alone."""
    ws, result, _ = finished
    plain = _glb_vertices(export_result(ws, ViewSettings(conf_thr=0.0, clean_depth=False)).glb)
    again = _glb_vertices(export_result(ws, ViewSettings(conf_thr=0.0, clean_depth=False, tsdf_thresh=0.0)).glb)
    np.testing.assert_array_equal(plain, again)
    extent = float(np.ptp(plain, axis=0).max())
    refined = _glb_vertices(
        export_result(ws, ViewSettings(conf_thr=0.0, clean_depth=False, tsdf_thresh=0.05 * extent)).glb
    )
    assert refined.shape == plain.shape and not np.allclose(refined, plain)
    with pytest.raises(RunError, match="TSDF"):
        export_result(ws, ViewSettings(tsdf_thresh=float("nan")))


def _glb_vertices(path) -> np.ndarray:
    scene = trimesh.load(path)
    return np.concatenate([g.vertices for g in scene.geometry.values() if type(g).__name__ == "PointCloud"])


@pytest.mark.parametrize("fix", [False, True])
def test_fix_focal_checkbox_reaches_the_priors(fix, model, demo_dir, tmp_path, monkeypatch):
    """The page's "hold EXIF focal lengths fixed" is the CLI's --fix-focal (``UserPriors.fix_focal``)."""
    from app.workspace import WorkspaceManager

    seen = {}

    def fake_reconstruct(views, model, config, priors, progress):
        seen["priors"] = priors
        raise RuntimeError("stop here")

    monkeypatch.setattr("recon.pipeline.reconstruct", fake_reconstruct)
    mgr = WorkspaceManager(tmp_path)
    ws = mgr.create("a")
    ingest(ws, sorted((demo_dir / "orbit").glob("*.jpg"))[:2], AppLimits())
    with pytest.raises(Exception, match="stop here"):
        run_reconstruction(ws, model, FAST, AppLimits(), priors=UserPriors(fix_focal=fix), device="cpu")
    mgr.close_all()
    assert seen["priors"].fix_focal is fix and seen["priors"].use_exif
