"""The "Inspect the encoder" tab's handler: feature PCA and attention pictures of uploaded photos."""

from __future__ import annotations

import numpy as np
import pytest

from app.handlers import RunError
from app.inspect import inspect_encoder, query_patch


class TestQueryPatch:
    def test_centre_without_a_click(self):
        assert query_patch(None, np.eye(3), (6, 8), 16) == (3, 4)

    def test_click_in_original_pixels_maps_to_the_network_patch(self):
        # network pixels are the original ones halved and shifted by (10, 4): x_orig = 2 x + 10, y_orig = 2 y + 4
        net_to_orig = np.array([[2.0, 0, 10], [0, 2.0, 4], [0, 0, 1]])
        # original (106, 68) -> network (48, 32) -> patch row 32 // 16 = 2, col 48 // 16 = 3
        assert query_patch((106, 68), net_to_orig, (6, 8), 16) == (2, 3)

    def test_click_outside_is_clamped_to_the_grid(self):
        assert query_patch((-50, 10_000), np.eye(3), (6, 8), 16) == (5, 0)


def test_one_photo_gives_features_and_self_attention(model, demo_images):
    shown = inspect_encoder(model, demo_images[0])
    captions = [c for _, c in shown.pictures]
    assert len(shown.pictures) == 3 and "cross-attention" not in " ".join(captions)
    first = shown.pictures[0][0]
    assert first.dtype == np.uint8 and first.ndim == 3 and first.shape[-1] == 3
    assert all(pic.shape == first.shape for pic, _ in shown.pictures)


def test_two_photos_add_the_decoder_cross_attention(model, demo_images):
    shown = inspect_encoder(model, demo_images[0], demo_images[1], click_xy=(5.0, 5.0))
    assert shown.query == (0, 0)
    assert len(shown.pictures) == 5 and "cross-attention" in shown.pictures[-1][1]


def test_unreadable_photo_is_a_user_error(model, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not an image")
    with pytest.raises(RunError, match="broken.jpg"):
        inspect_encoder(model, bad)


def test_the_tab_is_in_the_app(checkpoint, tmp_path, monkeypatch):
    from app.ui import build_app

    monkeypatch.setenv("RECON_HOME", str(tmp_path / "empty-cache"))
    demo = build_app(str(checkpoint))
    try:
        ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
        assert {"inspect-1", "inspect-2", "inspect-run", "inspect-gallery"} <= ids
    finally:
        demo.recon_workspaces.close_all()
