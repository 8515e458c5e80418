"""Feed-forward inference into a ``Scene``: ``predict`` + ``align(method="feedforward")``, exports, CLI recipe."""

import numpy as np
import pytest
import torch

import backbone
from recon.align import align
from recon.feedforward import FeedForwardPrediction, build_model, load_feedforward, predict, save_feedforward
from recon.scene import check_scene, load_scene, save_scene
from recon.types import View


def views(n=3, hw=(28, 42)):
    g = torch.Generator().manual_seed(0)
    return [View(torch.rand(3, *hw, generator=g), i, f"v{i}") for i in range(n)]


def tiny_model():
    torch.manual_seed(0)
    return build_model(backbone.create("dune_vits14", depth=1, embed_dim=32, num_heads=2), "small")


class TestPredict:
    def test_scene_from_one_pass(self, tmp_path):
        vs = views()
        pred = predict(vs, tiny_model())
        scene = align(vs, pred, method="feedforward")
        check_scene(scene)
        assert len(scene) == 3 and scene.depth[0].shape == (28, 42)
        np.testing.assert_allclose(scene.T_world_cam[:, 3], np.tile([0, 0, 0, 1.0], (3, 1)))
        np.testing.assert_allclose(scene.K[:, :2, 2], np.tile([20.5, 13.5], (3, 1)))
        assert all((c > 1).all() for c in scene.conf)
        np.testing.assert_array_equal(scene.colors[1], (vs[1].image.permute(1, 2, 0).numpy() * 255).round())
        back = load_scene(save_scene(scene, tmp_path / "scene.npz"))
        np.testing.assert_allclose(back.T_world_cam, scene.T_world_cam)

    def test_mixed_aspect_refused(self):
        vs = views(2) + [View(torch.rand(3, 42, 28), 2, "portrait")]
        with pytest.raises(ValueError, match=r"all views at one size \(one aspect ratio\); got 28x42, 42x28"):
            predict(vs, tiny_model())

    def test_align_checks_the_prediction_type(self):
        with pytest.raises(TypeError, match="takes a FeedForwardPrediction, got list"):
            align(views(), [], method="feedforward")

    def test_prediction_must_match_views(self):
        p = FeedForwardPrediction(np.eye(4)[None], np.eye(3)[None], np.ones((1, 28, 42), np.float32),
                                  np.ones((1, 28, 42), np.float32))  # fmt: skip
        with pytest.raises(ValueError, match="prediction holds 1 views, 3 given"):
            align(views(), p, method="feedforward")


class TestCheckpoint:
    def test_round_trip(self, tmp_path):
        m = tiny_model().eval()
        path = save_feedforward(m, tmp_path / "ff.pth")
        assert (tmp_path / "ff_encoder.pth").is_file()
        back = load_feedforward(path)
        x = torch.rand(1, 2, 3, 28, 28)
        torch.testing.assert_close(back(x).pose_enc[-1], m(x).pose_enc[-1])

    def test_encoder_name_cannot_leave_the_folder(self, tmp_path):
        from backbone.checkpoint import CheckpointError

        path = save_feedforward(tiny_model(), tmp_path / "ff.pth")
        ckpt = torch.load(path, weights_only=True)
        ckpt["encoder"] = "../elsewhere.pth"
        torch.save(ckpt, path)
        with pytest.raises(CheckpointError, match="must be a file name beside it"):
            load_feedforward(path)


def test_recipe_command_line(tmp_path, capsys):
    from training.feedforward.cli import main

    code = main(["--preset", "small", "--output-dir", str(tmp_path), "--set", "train.iterations=2",
                 "--set", "train.warmup=1", "--set", 'data.datasets=[{"scenes": 1, "views": 3, "size": [28, 28]}]',
                 "--set", "data.frame_budget=3", "--set", "data.views=[2, 3]"])  # fmt: skip
    assert code == 0
    assert "2 iterations" in capsys.readouterr().out
    assert (tmp_path / "feedforward_final.pth").is_file() and (tmp_path / "encoder.pth").is_file()


def test_recon_run_align_feedforward(tmp_path):
    """``recon run --align feedforward --checkpoint ff.pth`` writes a scene with one camera per photo."""
    import subprocess
    import sys

    from tools.synth import render_scene, write_folder

    write_folder(render_scene("orbit", 3, (56, 42), seed=2), tmp_path / "photos", image_format="png")
    model = save_feedforward(tiny_model(), tmp_path / "ff.pth")
    out = tmp_path / "scene.npz"
    cmd = [sys.executable, "-m", "recon", "run", str(tmp_path / "photos"), "--align", "feedforward",
           "--checkpoint", str(model), "--image-size", "56", "--device", "cpu", "--out", str(out)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    scene = load_scene(out)
    assert len(scene) == 3 and scene.depth[0].shape == (42, 56)


def test_pipeline_needs_a_feedforward_model():
    from recon.pipeline import ReconstructConfig, ReconstructionError, reconstruct

    with pytest.raises(ReconstructionError, match="needs --checkpoint FILE"):
        reconstruct(views(), None, config=ReconstructConfig(align="feedforward", device="cpu"))


class TestPriors:
    """``apply_priors``: known K / focal replace the prediction, known poses move it; the rest is reported."""

    def prediction(self):
        T = np.tile(np.eye(4), (3, 1, 1))
        T[1, :3, 3], T[2, :3, 3] = [1, 0, 0], [2, 0, 0]
        K = np.tile(np.array([[50.0, 0, 20.5], [0, 60.0, 13.5], [0, 0, 1]]), (3, 1, 1))
        return FeedForwardPrediction(T, K, np.ones((3, 28, 42), np.float32), np.full((3, 28, 42), 2, np.float32))

    def test_known_intrinsics_and_focal(self):
        from recon.feedforward.priors import apply_priors
        from recon.types import Priors

        K0 = np.array([[70.0, 0, 21], [0, 70, 14], [0, 0, 1]])
        out, notes = apply_priors(self.prediction(), Priors(K=[K0, None, None], focal=[None, 40.0, None]))
        np.testing.assert_array_equal(out.K[0], K0)
        assert out.K[1, 0, 0] == out.K[1, 1, 1] == 40.0 and out.K[1, 0, 2] == 20.5
        assert out.K[2, 0, 0] == 50.0 and notes == []

    def test_two_known_poses_set_frame_and_scale(self):
        from recon.feedforward.priors import apply_priors
        from recon.types import Priors

        A, B = np.eye(4), np.eye(4)
        A[:3, 3], B[:3, 3] = [5, 5, 5], [5, 5, 11]  # predicted 0 -> 1 is 1 along x; known: 6 along z
        A[:3, :3] = B[:3, :3] = [[0, 0, -1], [0, 1, 0], [1, 0, 0]]  # a 90 degree turn about y: x -> z
        out, notes = apply_priors(self.prediction(), Priors(T_world_cam={0: A}))
        np.testing.assert_allclose(out.T_world_cam[0], A, atol=1e-12)
        assert any("do not correct the other cameras" in n for n in notes)
        out, _ = apply_priors(self.prediction(), Priors(T_world_cam={0: A, 2: B}))
        # Scale: predicted centres 2 apart, known 6 apart -> x3; depth follows; camera 1 lands half-way.
        np.testing.assert_allclose(out.depth, 3.0)
        np.testing.assert_allclose(out.T_world_cam[1, :3, 3], [5, 5, 8], atol=1e-9)

    def test_exif_start_focals_are_reported_ignored(self):
        from recon.feedforward.priors import apply_priors
        from recon.types import Priors

        out, notes = apply_priors(self.prediction(), Priors(focal_init=[30.0, None, None]))
        assert out.K[0, 0, 0] == 50.0 and notes == [
            "feed-forward: start focals (EXIF) are ignored; the predicted focal is kept"
        ]
