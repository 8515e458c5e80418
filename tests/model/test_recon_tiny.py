"""recon-tiny, the model shipped inside the package: loadable by name offline, the default when no release is
cached, and its cameras on demo_data within the tolerance docs/recon-tiny.md states (measured there, with margin)."""

import os
from pathlib import Path

import numpy as np
import pytest

import recon
from backbone import hub
from backbone.fileio import sha256_file
from recon import weights
from recon.pipeline import ReconstructConfig, load_views, prepare_model, reconstruct
from tools.eval.metrics import pair_errors
from tools.synth.folder import read_folder

DEMO = Path(__file__).resolve().parents[2] / "demo_data"
# Median relative rotation / translation-direction error over all 45 view pairs of demo_data/room, degrees: the
# shipped file measured 10.9 / 27.6 (docs/recon-tiny.md); the bounds leave margin for other CPUs and libraries and
# still fail for a model that does not reconstruct (uniformly random cameras: medians 132 and 90). demo_data/orbit is
# not tested for accuracy: recon-tiny fails on its 360-degree orbit (median rotation error 98), as documented.
TOLERANCE_DEG = {"room": (20.0, 45.0)}


@pytest.fixture
def no_releases(tmp_path, monkeypatch):
    """An empty weights cache and no network: only the embedded model is available."""
    monkeypatch.setenv("RECON_HOME", str(tmp_path))

    def no_download(*args, **kwargs):
        raise AssertionError("recon-tiny must not be downloaded")

    monkeypatch.setattr(hub, "download_url", no_download)


def test_the_shipped_file_is_the_embedded_table_entry_and_fits_10_mb():
    entry = hub.find("recon-tiny")
    path = hub.target_path("recon-tiny")
    assert entry.embedded == "recon/weights/recon-tiny.safetensors" and entry.url is None
    assert path == Path(weights.__file__).with_name("recon-tiny.safetensors")
    assert entry.size == path.stat().st_size <= 10 * 2**20
    assert entry.sha256 == sha256_file(path)


def test_recon_tiny_loads_by_name_offline(no_releases):
    model = recon.load_model("recon-tiny")
    assert model.image_size == hub.find("recon-tiny").image_size == 112
    assert model.patch_size == 14
    assert 3e6 < sum(p.numel() for p in model.parameters()) < 6e6


def test_a_corrupt_embedded_file_is_refused(tmp_path, monkeypatch):
    bad = tmp_path / "recon" / "weights" / "recon-tiny.safetensors"
    bad.parent.mkdir(parents=True)
    data = hub.target_path("recon-tiny").read_bytes()
    bad.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    monkeypatch.setattr(hub, "PACKAGES_ROOT", tmp_path)
    with pytest.raises(hub.WeightsIntegrityError, match="sha256"):
        recon.load_model("recon-tiny")


def test_the_default_is_recon_tiny_without_a_cached_release_and_a_cached_release_otherwise(no_releases, monkeypatch):
    assert weights.default_model() == "recon-tiny"
    first = hub.list_weights(kind="model")[0].name
    monkeypatch.setattr(hub, "cached_path", lambda name: Path("/cached") if name == first else None)
    assert weights.default_model() == first


@pytest.mark.slow
@pytest.mark.parametrize("scene", sorted(TOLERANCE_DEG))
def test_the_default_model_reconstructs_demo_data_within_the_stated_tolerance(scene, no_releases):
    folder = DEMO / scene
    truth = {Path(v.name).stem: v.T_world_cam for v in read_folder(folder, load_images=False, load_depth=False)}
    config = ReconstructConfig(device="cpu", progress=False)
    model = prepare_model(None, config)  # the default: recon-tiny, no release being cached
    result, _ = reconstruct(load_views(folder, model, config), model, config)
    assert len(result.names) == len(truth) == 10
    T_gt = np.stack([truth[Path(n).stem] for n in result.names])
    rot, trans = pair_errors(T_gt, result.T_world_cam)
    max_rot, max_trans = TOLERANCE_DEG[scene]
    print(f"{scene}: median rotation error {np.median(rot):.1f} deg, translation direction {np.median(trans):.1f} deg")
    assert np.median(rot) <= max_rot, (np.median(rot), rot)
    assert np.median(trans) <= max_trans, (np.median(trans), trans)


def test_recon_run_without_a_model_uses_recon_tiny_and_says_what_it_is(tmp_path, no_releases):
    import subprocess
    import sys

    photos = tmp_path / "photos"
    photos.mkdir()
    for src in sorted((DEMO / "orbit").glob("*.jpg"))[:2]:
        (photos / src.name).write_bytes(src.read_bytes())
    env = {**os.environ, "RECON_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "recon", "run", str(photos), "--out", str(tmp_path / "scene.glb")],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines()[0].startswith("model recon-tiny: a small model trained on synthetic scenes")
    assert (tmp_path / "scene.glb").is_file()
