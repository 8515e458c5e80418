"""Fixtures of the viewer tests: a very small random-weight model, demo photos, a workspace manager."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "demo_data"


def micro_model():
    """A random MASt3R smaller than ``tools.bench.pipeline.tiny_model`` (narrow DPT too), for UI tests on CPU.

    The DPT head needs a 10-block decoder (official assert), so depth stays 10; widths are minimal.
    """
    from recon.model.decoder import DecoderConfig
    from recon.model.heads import HeadConfig
    from recon.model.presets import build_model

    return build_model(
        "mast3r_vitl16",
        backbone_overrides={"embed_dim": 32, "depth": 2, "num_heads": 2},
        decoder=DecoderConfig(embed_dim=32, depth=10, num_heads=2),
        head=HeadConfig(dpt_feature_dim=16, dpt_layer_dims=(8, 16, 32, 64)),
    )


@pytest.fixture(scope="session")
def model():
    import torch

    torch.manual_seed(0)
    model = micro_model()
    # Random weights predict raw confidences near 2, i.e. near 1 in the official sparse scale that Scene.conf uses:
    # below the MASt3R demo's default threshold 1.5, so nothing would be shown. A trained network is confident on
    # most pixels; shift the confidence channel (1 + exp(x), channel 3) to raw values near 5.5 like one.
    with torch.no_grad():
        for head in (model.head1, model.head2):
            head.dpt.head[4].bias[3] += 1.5
    return model


@pytest.fixture(scope="session")
def checkpoint(model, tmp_path_factory) -> Path:
    """The micro model saved in recon's checkpoint format (what `recon app --checkpoint` loads)."""
    from recon.model.loading import save_model

    return save_model(model, tmp_path_factory.mktemp("ckpt") / "micro.pth")


@pytest.fixture(scope="session")
def demo_dir() -> Path:
    return DEMO


@pytest.fixture
def demo_images(demo_dir) -> list[Path]:
    files = sorted((demo_dir / "orbit").glob("*.jpg"))
    if len(files) < 3:
        pytest.fail(f"demo_data/orbit should hold the demo photos (found {len(files)}) at {demo_dir / 'orbit'}")
    return files


@pytest.fixture
def manager(tmp_path):
    from app.workspace import WorkspaceManager

    mgr = WorkspaceManager(tmp_path / "workspaces")
    yield mgr
    mgr.close_all()
