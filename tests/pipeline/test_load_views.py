"""``prepare_model -> load_views -> reconstruct``: what loading skips is reported, and ``Scene.paths`` is set.

The model is ``recon.oracle.OracleModel`` (ground-truth predictions of a rendered scene), so every step around the
network runs on photos decoded from files.
"""

import shutil
from pathlib import Path

import pytest

from recon.pipeline import (
    ReconstructConfig,
    ReconstructionError,
    Views,
    load_views,
    prepare_model,
    reconstruct,
)
from tools.oracle import OracleModel
from tools.synth import render_scene
from tools.synth.folder import write_folder

W, H = 96, 64
CFG = ReconstructConfig(graph="complete", align="dense", progress=False)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    gt = render_scene("orbit", n_views=3, size=(W, H), seed=5)
    folder = tmp_path_factory.mktemp("orbit") / "photos"
    write_folder(gt, folder, image_format="png")  # the photos and cameras.json (a sidecar, not an image)
    return gt, folder


@pytest.fixture
def photos(rendered, tmp_path):
    """The rendered photos plus an empty and a corrupt file (sorted after them)."""
    _, folder = rendered
    out = tmp_path / "photos"
    shutil.copytree(folder, out)
    (out / "zz_empty.png").write_bytes(b"")
    (out / "zz_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n but not a PNG" * 8)
    return out


def test_bad_images_are_skipped_with_their_reason(rendered, photos):
    gt, _ = rendered
    views = load_views(photos, OracleModel(gt), CFG)
    assert isinstance(views, Views) and [v.name for v in views] == [f"{v.name}.png" for v in gt]
    assert [v.path for v in views] == [str(photos / f"{v.name}.png") for v in gt]
    reasons = {Path(path).name: reason for path, reason in views.skipped}
    assert sorted(reasons) == ["zz_corrupt.png", "zz_empty.png"]
    assert reasons["zz_empty.png"] == "empty file (0 bytes)"
    assert reasons["zz_corrupt.png"]  # the decoder's own words, non-empty
    assert views.seconds > 0


def test_reconstruct_reports_the_skipped_images_and_sets_scene_paths(rendered, photos):
    gt, _ = rendered
    model = OracleModel(gt)
    views = load_views(photos, model, CFG)
    scene, report = reconstruct(views, model, CFG)
    assert report.skipped == [(str(path), str(reason)) for path, reason in views.skipped]
    assert report.n_images == 3 and report.registered == 3
    summary = report.summary()
    assert "images used: 3, skipped: 2" in summary
    assert "zz_empty.png: empty file (0 bytes)" in summary
    assert report.stage_seconds["load"] >= views.seconds  # the decoding counts in the load stage
    assert scene.paths == [v.path for v in views]
    assert scene.names == [v.name for v in views]


def test_plain_view_list_reports_nothing_skipped(rendered, photos):
    gt, _ = rendered
    model = OracleModel(gt)
    views = list(load_views(photos, model, CFG))  # a plain list: no loading record
    scene, report = reconstruct(views, model, CFG)
    assert report.skipped == [] and scene.paths == [v.path for v in views]


def test_fewer_than_two_usable_images_fails_before_the_model_runs(rendered, tmp_path):
    gt, folder = rendered
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(sorted(folder.glob("*.png"))[0], one / "a.png")
    (one / "b.png").write_bytes(b"")
    model = OracleModel(gt)
    with pytest.raises(ReconstructionError, match=r"need at least 2 usable images, got 1 \(.*b\.png: empty file"):
        load_views(one, model, CFG)
    assert model.encoded_images == 0


def test_image_size_comes_from_the_config_else_the_model(rendered, photos):
    gt, _ = rendered
    model = OracleModel(gt)
    assert max(load_views(photos, model, CFG)[0].true_shape) == model.image_size == W
    small = ReconstructConfig(graph="complete", align="dense", progress=False, image_size=48)
    assert max(load_views(photos, model, small)[0].true_shape) == 48


def test_max_images_reports_the_rest_as_skipped(rendered, photos):
    gt, _ = rendered
    views = load_views(photos, OracleModel(gt), CFG, max_images=2)
    assert len(views) == 2
    assert sum("beyond max_images=2" in reason for _, reason in views.skipped) == 3


def test_prepare_model(rendered):
    gt, _ = rendered
    model = OracleModel(gt).train()
    assert prepare_model(model, CFG) is model and not model.training
    with pytest.raises(ReconstructionError, match="--align feedforward needs --checkpoint"):
        prepare_model(None, ReconstructConfig(align="feedforward", device="cpu"))


def test_reconstruct_takes_a_loaded_model(rendered, photos):
    gt, _ = rendered
    views = load_views(photos, OracleModel(gt), CFG)
    with pytest.raises(TypeError, match="prepare_model"):
        reconstruct(views, "mast3r_vitl16_512", CFG)
