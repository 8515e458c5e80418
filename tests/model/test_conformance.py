"""End to end against the official outputs: ``recon.load_model`` on the official tiny checkpoints.

The fixture inputs are MASt3R-normalised ([-1, 1]); our API takes [0, 1] images, so we feed ``img * 0.5 + 0.5``.
Tolerances: see ``conftest.RTOL`` / ``ATOL`` (justified there from tolerance_report.json).
"""

from __future__ import annotations

import pytest
import torch

import recon

from .conftest import ATOL, RTOL, fixture_path

PRED_KEYS = ("pts3d", "conf", "desc", "desc_conf")


@pytest.fixture(scope="module")
def mast3r():
    return recon.load_model(fixture_path("mast3r_tiny.pth"))


@pytest.fixture(scope="module")
def dune_mast3r():
    return recon.load_model(fixture_path("dune_mast3r_tiny.pth"), backbone=fixture_path("dune_tiny.pth"))


def _inputs(io, case):
    return io[f"{case}.view1.img"] * 0.5 + 0.5, io[f"{case}.view2.img"] * 0.5 + 0.5


def _check_preds(io, case, pred1, pred2):
    assert set(pred1) == set(pred2) == set(PRED_KEYS)
    for key in PRED_KEYS:
        torch.testing.assert_close(pred1[key], io[f"{case}.pred1.{key}"], rtol=RTOL, atol=ATOL)
        ref2 = io["{}.pred2.{}".format(case, "pts3d_in_other_view" if key == "pts3d" else key)]
        torch.testing.assert_close(pred2[key], ref2, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("case", ["landscape", "portrait", "square", "mixed"])
def test_mast3r_matches_official(mast3r, mast3r_io, case):
    img1, img2 = _inputs(mast3r_io, case)
    with torch.no_grad():
        pred1, pred2 = mast3r(img1, img2)
    _check_preds(mast3r_io, case, pred1, pred2)


@pytest.mark.parametrize("case", ["landscape", "mixed"])
def test_mast3r_split_api_and_encoder_features(mast3r, mast3r_io, case):
    img1, img2 = _inputs(mast3r_io, case)
    with torch.no_grad():
        feat1, feat2 = mast3r.encode(img1), mast3r.encode(img2)
        torch.testing.assert_close(feat1, mast3r_io[f"{case}.enc.feat1"], rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(feat2, mast3r_io[f"{case}.enc.feat2"], rtol=RTOL, atol=ATOL)
        pred1, pred2 = mast3r.decode(feat1, feat2, tuple(img1.shape[-2:]), tuple(img2.shape[-2:]))
    _check_preds(mast3r_io, case, pred1, pred2)


@pytest.mark.parametrize("case", ["landscape", "square"])
def test_dune_mast3r_matches_official(dune_mast3r, dune_mast3r_io, case):
    img1, img2 = _inputs(dune_mast3r_io, case)
    with torch.no_grad():
        pred1, pred2 = dune_mast3r(img1, img2)
    _check_preds(dune_mast3r_io, case, pred1, pred2)


def test_dune_mast3r_encoder_features(dune_mast3r, dune_mast3r_io):
    io = dune_mast3r_io
    img1, img2 = _inputs(io, "landscape")
    with torch.no_grad():
        prefix = dune_mast3r.backbone.spec.num_prefix_tokens
        raw = dune_mast3r.backbone.forward_features(img1)["x_prenorm"][:, prefix:]
        torch.testing.assert_close(raw, io["landscape.enc.backbone_feat1"], rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(dune_mast3r.encode(img2), io["landscape.enc.feat2"], rtol=RTOL, atol=ATOL)


def test_native_sizes(mast3r, dune_mast3r):
    assert (mast3r.patch_size, mast3r.image_size) == (16, 512)
    # DUNE-MASt3R runs at the img_size of its inner MASt3R string (518, as the releases and official demo).
    assert (dune_mast3r.patch_size, dune_mast3r.image_size) == (14, 518)  # the inner string's img_size, as released
    assert dune_mast3r.head1.dpt.upsample_factor == 1.75
