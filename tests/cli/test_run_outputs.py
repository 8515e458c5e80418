"""``recon run``'s honesty about what it produced: advice, earlier outputs, seeded random models, byte-identical
results, and the temporary spill folder."""

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from cli import main
from cli.run import no_camera_message, retire_previous_output, written_by_recon
from recon.export import GlbOptions, PlyOptions
from recon.types import PairPrediction, Scene

DEMO = Path(__file__).resolve().parents[2] / "demo_data" / "orbit"
README_COMMAND = ["--model", "random:mast3r_tiny", "--align", "dense", "--image-size", "224", "--graph", "swin-1"]


class TestNoCameraAdvice:
    def test_random_weights_are_named_first_and_tried_options_are_not_advised(self):
        text = no_camera_message(
            random_model="random:mast3r_tiny", n_images=10, align="dense", graph="complete", complete=True
        )
        assert text.startswith("no camera could be registered: likely the model has random weights")
        assert "recon run PHOTOS --out scene.glb" in text
        assert "--align dense" not in text and "--graph" not in text

    def test_untried_options_are_advised(self):
        text = no_camera_message(random_model=None, n_images=8, align="sparse", graph="swin-1", complete=False)
        assert "random" not in text
        assert "--align dense" in text and "denser --graph than swin-1" in text and "overlap" in text

    def test_two_images_are_named_as_a_cause(self):
        text = no_camera_message(random_model=None, n_images=2, align="dense", graph="complete", complete=True)
        assert "likely only 2 usable images" in text and "--align" not in text


def tiny_scene(n: int = 2) -> Scene:
    H, W = 6, 8
    K = np.array([[10.0, 0, W / 2], [0, 10.0, H / 2], [0, 0, 1]])
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, 0, 3] = np.arange(n) * 0.1
    return Scene(
        T_world_cam=T,
        K=np.stack([K] * n),
        depth=[np.full((H, W), 2.0, np.float32) for _ in range(n)],
        conf=[np.full((H, W), 3.0, np.float32) for _ in range(n)],
        colors=[np.full((H, W, 3), 128, np.uint8) for _ in range(n)],
        names=[f"v{k}.jpg" for k in range(n)],
    )


class TestEarlierOutputs:
    @pytest.mark.parametrize(
        ("fmt", "options"), [("glb", GlbOptions(conf_thr=0)), ("ply", PlyOptions(conf_thr=0)), ("npz", None)]
    )
    def test_recon_recognises_its_own_files_only(self, tmp_path, fmt, options):
        from recon.export import export

        ours = export(tiny_scene(), tmp_path / f"ours.{fmt}", options)
        assert written_by_recon(ours, fmt)
        foreign = tmp_path / f"foreign.{fmt}"
        if fmt == "glb":
            foreign.write_bytes(trimesh.Scene(trimesh.creation.box()).export(file_type="glb"))
        elif fmt == "npz":
            np.savez(foreign, format=np.array("recon.scene/1 is not here"))
        else:
            foreign.write_bytes(b"ply\nformat ascii 1.0\ncomment written by someone\nend_header\n")
        assert not written_by_recon(foreign, fmt)
        assert not written_by_recon(tmp_path / "absent.glb", fmt)

    def test_own_earlier_output_is_renamed_foreign_file_is_kept(self, tmp_path):
        from recon.export import GlbOptions, export

        ours = export(tiny_scene(), tmp_path / "scene.glb", GlbOptions(conf_thr=0))
        data = ours.read_bytes()
        note = retire_previous_output(ours, "glb")
        assert "renamed scene.previous.glb" in note and not ours.exists()
        assert (tmp_path / "scene.previous.glb").read_bytes() == data

        mine = tmp_path / "mine.glb"
        mine.write_bytes(b"the user's own file")
        assert "was not written by this run" in retire_previous_output(mine, "glb")
        assert mine.read_bytes() == b"the user's own file"

    def test_a_foreign_previous_file_blocks_the_rename(self, tmp_path):
        from recon.export import GlbOptions, export

        ours = export(tiny_scene(), tmp_path / "scene.glb", GlbOptions(conf_thr=0))
        (tmp_path / "scene.previous.glb").write_bytes(b"not recon's")
        assert "not renamed" in retire_previous_output(ours, "glb")
        assert ours.exists() and (tmp_path / "scene.previous.glb").read_bytes() == b"not recon's"

    def test_failed_run_renames_recon_output_and_says_so(self, tmp_path, monkeypatch, capsys):
        from backbone.checkpoint import CheckpointError
        from recon.export import GlbOptions, export

        export(tiny_scene(), tmp_path / "scene.glb", GlbOptions(conf_thr=0))

        def fail(*args, **kwargs):
            raise CheckpointError("weights are broken")

        monkeypatch.setattr("recon.model.loading.load_model", fail)
        assert (
            main(["-q", "run", str(DEMO), "--model", "random:mast3r_tiny", "--out", str(tmp_path / "scene.glb")]) == 2
        )
        err = capsys.readouterr().err
        assert err.startswith("error: weights are broken (the earlier scene.glb was renamed scene.previous.glb")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.previous.glb"]


class TestDeterminism:
    def test_random_models_are_seeded(self):
        from recon.model.loading import load_model, parse_random_name

        assert parse_random_name("random:mast3r_tiny") == ("mast3r_tiny", 0)
        assert parse_random_name("random:mast3r_tiny@7") == ("mast3r_tiny", 7)
        before = torch.random.get_rng_state()
        a, b, c = (load_model(f"random:mast3r_tiny{s}").state_dict() for s in ("", "@0", "@1"))
        assert torch.equal(torch.random.get_rng_state(), before), "building a seeded model leaves the global RNG"
        assert all(torch.equal(a[k], b[k]) for k in a)
        assert not all(torch.equal(a[k], c[k]) for k in a)

    def test_glb_bytes_depend_only_on_the_scene(self, tmp_path):
        from recon.export import GlbOptions, export

        one = export(tiny_scene(3), tmp_path / "a.glb", GlbOptions(conf_thr=0)).read_bytes()
        two = export(tiny_scene(3), tmp_path / "b.glb", GlbOptions(conf_thr=0)).read_bytes()
        assert one == two

    @pytest.mark.slow
    def test_readme_first_command_is_byte_identical_across_runs(self, tmp_path):
        """The README's random-weight install check (on 3 of the 10 demo photos: the same code path) twice."""
        photos = tmp_path / "photos"
        photos.mkdir()
        for src in sorted(DEMO.glob("*.jpg"))[:3]:
            shutil.copy(src, photos)
        outputs = []
        for k in range(2):
            out = tmp_path / f"scene{k}.glb"
            proc = subprocess.run(
                [sys.executable, "-m", "recon", "run", str(photos), *README_COMMAND, "--out", str(out)],
                capture_output=True,
                text=True,
            )
            assert proc.returncode == 0, proc.stderr[-2000:]
            lines = proc.stdout.strip().splitlines()
            assert lines[0].startswith("random:mast3r_tiny: random weights: this checks the install")
            assert "the geometry is meaningless" in lines[-1] and "recon run PHOTOS --out scene.glb" in lines[-1]
            outputs.append(out.read_bytes())
        assert outputs[0] == outputs[1]


class TestSpill:
    @staticmethod
    def pred(i, j):
        g = torch.Generator().manual_seed(10 * i + j)
        t = lambda *s: torch.rand(*s, generator=g).half()  # noqa: E731
        return PairPrediction(i=i, j=j, pts3d_i=t(4, 4, 3), pts3d_j=t(4, 4, 3), conf_i=t(4, 4), conf_j=t(4, 4))

    def test_over_budget_pairs_go_to_a_temporary_folder_removed_on_close(self, tmp_path):
        from recon.inference import PairStore

        preds = [self.pred(i, j) for i, j in [(0, 1), (1, 0), (0, 2), (2, 0)]]
        with PairStore(max_ram_bytes=2 * 256, spill_dir=tmp_path) as store:  # 256 B a pair: room for two of four
            for p in preds:
                store.append(p)
            spilled = list(tmp_path.glob("recon-spill-*/*.safetensors"))
            assert len(spilled) == 2 and store.ram_bytes == 2 * 256
            for p, q in zip(preds, store, strict=True):
                assert (p.i, p.j) == (q.i, q.j) and torch.equal(p.pts3d_i, q.pts3d_i)
        assert list(tmp_path.iterdir()) == []

    def test_within_budget_nothing_is_written(self, tmp_path):
        from recon.inference import PairStore

        with PairStore(max_ram_bytes=1 << 20, spill_dir=tmp_path) as store:
            store.append(self.pred(0, 1))
        assert list(tmp_path.iterdir()) == []

    def test_reconstruct_removes_its_spill_folder(self, tmp_path, monkeypatch):
        # Importing roma (through recon.align) makes torch create its inductor cache folder in gettempdir() once per
        # process; import it before redirecting the temporary folder, so the check below sees only recon's files.
        import recon.align  # noqa: F401
        from recon.pipeline import ReconstructConfig, reconstruct
        from tools.bench.pipeline import synth_views
        from tools.oracle import OracleModel

        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # tempfile.gettempdir() -> tmp_path
        views, gt = synth_views(3, (64, 48))
        config = ReconstructConfig(graph="complete", align="dense", max_ram_gb=0.0, progress=False, device="cpu")
        scene, report = reconstruct(views, OracleModel(gt), config=config)
        assert report.n_pairs == 3
        assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_sigterm_mid_run_removes_the_spill_folder(tmp_path):
    """A run killed with SIGTERM while it decodes unwinds: its temporary spill folder is gone, exit code 143."""
    import os
    import signal
    import time

    photos = tmp_path / "photos"
    photos.mkdir()
    for src in sorted(DEMO.glob("*.jpg"))[:4]:
        shutil.copy(src, photos)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "recon", "-q", "run", str(photos), "--model", "random:mast3r_tiny", "--graph",
         "complete", "--image-size", "64", "--max-ram-gb", "0", "--out", str(tmp_path / "x.glb")],
        env={**os.environ, "TMPDIR": str(tmp)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while not list(tmp.glob("recon-spill-*/*.safetensors")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it spilled anything"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "Traceback" not in err  # 128 + SIGTERM
    assert list(tmp.iterdir()) == []
    assert not (tmp_path / "x.glb").exists()
