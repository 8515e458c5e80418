"""``recon bench model`` runs end to end and prints its figures (on a tiny registered preset)."""

from __future__ import annotations

from cli import main
from recon.model.decoder import DecoderConfig
from recon.model.heads import HeadConfig
from recon.model.presets import PRESETS, Preset
from recon.model.recon_model import ModelConfig


def test_bench_model_prints_figures(monkeypatch, capsys):
    tiny = Preset(
        "dune_vits14",
        ModelConfig(
            decoder=DecoderConfig(embed_dim=32, depth=10, num_heads=2),
            head=HeadConfig(dpt_feature_dim=16, dpt_layer_dims=(8, 16, 24, 32)),
            image_size=56,
            tokens="prenorm",
            adapter_norm_eps=1e-5,
        ),
        backbone_overrides={"embed_dim": 24, "depth": 1, "num_heads": 2, "pos_embed_grid": 4},
        description="tiny",
    )
    monkeypatch.setitem(PRESETS, "tiny_test", tiny)
    assert main(["bench", "model", "--model", "tiny_test", "--iters", "1", "--warmup", "0", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "encoder (2 img)" in out and "decoder+heads" in out and "pairs/s" in out
    rows = [line.split() for line in out.splitlines() if line.startswith(("encoder", "decoder"))]
    gflops = [float(rows[0][5]), float(rows[1][3])]  # GFLOP/pair columns
    assert all(g > 0 for g in gflops)


def test_bench_model_unknown_name(capsys):
    assert main(["bench", "model", "--model", "nope", "--device", "cpu"]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err


def test_flop_count_by_hand():
    import torch
    from torch import nn

    from backbone.layers.attention import Attention
    from recon.model.attention import CrossAttention
    from recon.model.flops import count_flops

    x, y = torch.rand(1, 5, 8), torch.rand(1, 7, 8)
    attn, cross = Attention(8, 2), CrossAttention(8, 2)
    ident = lambda t: t  # noqa: E731  (no rotation)
    assert count_flops(attn, lambda: attn(x, ident)) == 2 * 5 * 8 * 24 + 2 * 5 * 8 * 8 + 2 * 2 * 5 * 5 * 8
    expected_cross = 2 * 5 * 8 * 8 * 2 + 2 * 7 * 8 * 8 * 2 + 2 * 2 * 5 * 7 * 8
    assert count_flops(cross, lambda: cross(x, y, ident, ident)) == expected_cross
    convs = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ConvTranspose2d(4, 2, 2, stride=2))
    assert count_flops(convs, lambda: convs(torch.rand(1, 3, 6, 6))) == 2 * (4 * 36) * 3 * 9 + 2 * (4 * 36) * 2 * 4
