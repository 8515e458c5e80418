"""recon.viz: PCA pictures, attention weights recomputed on request (checked against the fused blocks), CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from recon import viz
from recon.model import DecoderConfig, HeadConfig, build_model, save_model


def _tiny(name):
    torch.manual_seed(0)
    over = {"embed_dim": 32, "depth": 2, "num_heads": 2}
    if name.startswith("dune"):
        over["pos_embed_grid"] = 4
    return build_model(
        name, backbone_overrides=over, decoder=DecoderConfig(embed_dim=32, depth=10, num_heads=2),
        head=HeadConfig(kind="catmlp+dpt", dpt_feature_dim=16, dpt_layer_dims=(8, 16, 24, 32)),
    ).eval()  # fmt: skip


class TestPca:
    def test_first_channel_follows_the_principal_direction(self):
        rng = np.random.default_rng(0)
        h, w, D = 6, 8, 16
        a = np.linspace(-1, 1, w)[None, :].repeat(h, 0)  # varies along x only
        u = rng.standard_normal(D)
        u /= np.linalg.norm(u)
        feats = a[..., None] * u * 5 + 0.01 * rng.standard_normal((h, w, D)) + 3.0  # offset: PCA must centre
        rgb = viz.pca_rgb(feats)
        assert rgb.shape == (h, w, 3) and rgb.dtype == np.float32
        assert rgb.min() >= 0 and rgb.max() <= 1
        assert abs(np.corrcoef(rgb[..., 0].ravel(), a.ravel())[0, 1]) > 0.99
        # later channels carry only the noise: uncorrelated with a
        assert abs(np.corrcoef(rgb[..., 1].ravel(), a.ravel())[0, 1]) < 0.5

    def test_shared_basis_for_two_views_and_tiny_inputs(self):
        feats = np.random.default_rng(1).standard_normal((2, 3, 4, 8))
        assert viz.pca_rgb(feats).shape == (2, 3, 4, 3)
        assert viz.pca_rgb(np.array([[0.0, 1.0], [1.0, 0.0]])).shape == (2, 3)  # 2 dims: third channel padded
        with pytest.raises(ValueError, match="at least two"):
            viz.pca_rgb(np.ones((1, 4)))


@pytest.mark.parametrize("name", ["mast3r_vitl16", "dune_vits14"])  # CroCo (RoPE) and DUNE (registers, abs pos)
def test_encoder_attention_reproduces_the_fused_block(name):
    backbone = _tiny(name).backbone
    p = backbone.spec.patch_size
    img = torch.rand(1, 3, 3 * p, 4 * p)
    weights = viz.encoder_attention(backbone, img)
    P = backbone.num_prefix_tokens
    assert weights.shape == (1, 2, P + 12, P + 12)
    torch.testing.assert_close(weights.sum(-1), torch.ones(1, 2, P + 12))
    # weights @ v through proj must give what the fused block's attention gives on the same input
    blk = backbone.blocks[-1]
    args, kwargs = viz._capture_inputs(blk, lambda: backbone(img))
    x, rope = blk.norm1(args[0]), kwargs.get("rope")
    B, N, D = x.shape
    v = blk.attn.qkv(x).reshape(B, N, 3, 2, D // 2).permute(2, 0, 3, 1, 4)[2]
    mine = blk.attn.proj((weights @ v).transpose(1, 2).reshape(B, N, D))
    torch.testing.assert_close(mine, blk.attn(x, rope=rope), atol=1e-5, rtol=1e-5)
    m = viz.query_map(weights[0], P + 5, (3, 4), P)
    assert m.shape == (3, 4) and 0 < m.sum() <= 1 + 1e-6


def test_decoder_cross_attention_reproduces_the_fused_block():
    model = _tiny("mast3r_vitl16")
    img1, img2 = torch.rand(1, 3, 32, 48), torch.rand(1, 3, 48, 32)  # 2x3 and 3x2 grids
    cross = viz.decoder_cross_attention(model, img1, img2)
    assert cross.shape == (2, 6, 6)
    torch.testing.assert_close(cross.sum(-1), torch.ones(2, 6))
    blk = model.decoder.dec_blocks[-1]
    args, _ = viz._capture_inputs(blk, lambda: model(img1, img2))
    x, y, rx, ry = args[:4]
    x1 = x + blk.attn(blk.norm1(x), rx)
    ca, y_ = blk.cross_attn, blk.norm_y(y)
    v = ca._heads(ca.projv(y_))
    mine = ca.proj((cross[None] @ v).transpose(1, 2).reshape(1, 6, 32))
    torch.testing.assert_close(mine, ca(blk.norm2(x1), y_, rx, ry), atol=1e-5, rtol=1e-5)


def test_cross_attention_peaks_at_the_matching_patch():
    """An oracle-like block: q = k = the token (identity projections, no self-attention update), view 2 holds
    view 1's tokens in another order, so each query must attend to where its own token went."""
    from recon.model.decoder import DecoderBlock

    torch.manual_seed(0)
    C, N = 32, 12
    blk = DecoderBlock(C, 2, 4.0, 1e-6)
    with torch.no_grad():
        blk.attn.proj.weight.zero_()
        blk.attn.proj.bias.zero_()
        for lin in (blk.cross_attn.projq, blk.cross_attn.projk):
            lin.weight.copy_(3.0 * torch.eye(C))
            lin.bias.zero_()
    x = torch.randn(1, N, C)
    perm = torch.randperm(N)
    y = x[:, perm]  # y[m] = x[perm[m]]
    ident = lambda t: t  # noqa: E731  (no positional rotation: the content alone must decide)
    w = viz.cross_attention_weights(blk, x, y, ident, ident)[0].mean(0)  # N x N
    expected = torch.argsort(perm)  # x[n] sits at y[argsort(perm)[n]]
    assert torch.equal(w.argmax(-1), expected)
    assert (w.max(-1).values > 0.5).all()


def test_colormap_and_marks():
    heat = viz.colormap(np.array([[0.0, 1.0]]))
    assert heat.dtype == np.uint8 and heat.shape == (1, 2, 3)
    assert heat[0, 1].sum() > heat[0, 0].sum()  # bright at the maximum
    up = viz.upsample(heat, 4)
    assert up.shape == (4, 8, 3)
    marked = viz.mark_patch(np.zeros((8, 8, 3), np.uint8), 1, 0, 4)
    assert (marked[4, 0:4] == [0, 255, 255]).all() and marked[0, 0].sum() == 0


def test_cli_writes_pictures_and_refuses_to_overwrite(tmp_path, capsys):
    from cli import main

    ckpt = save_model(_tiny("mast3r_vitl16"), tmp_path / "tiny.pth")
    rng = np.random.default_rng(0)
    for k in range(2):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(tmp_path / f"im{k}.png")
    ims = [str(tmp_path / "im0.png"), str(tmp_path / "im1.png")]
    common = ["--checkpoint", str(ckpt), "--image-size", "64", "--device", "cpu", "--out", str(tmp_path / "o")]
    assert main(["-q", "viz", "features", *ims, *common]) == 0
    assert main(["-q", "viz", "attention", *ims, *common, "--query", "1,2"]) == 0
    for name in ("features_0.png", "features_1.png", "query.png", "attention_self.png", "attention_cross.png"):
        with Image.open(tmp_path / "o" / name) as im:
            assert im.size == (64, 48)
    capsys.readouterr()
    assert main(["-q", "viz", "features", *ims, *common]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["-q", "viz", "attention", *ims, *common, "--query", "9,9", "--overwrite"]) == 2
    assert "outside view 1's 3x4 patch grid" in capsys.readouterr().err


def test_cli_with_a_bare_encoder(tmp_path, capsys):
    import backbone
    from cli import main

    torch.manual_seed(0)
    enc = backbone.create("dune_vits14", embed_dim=24, depth=1, num_heads=2, pos_embed_grid=4)
    path = backbone.save(enc, tmp_path / "enc.pth")
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (42, 56, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    common = ["--encoder", str(path), "--image-size", "56", "--device", "cpu", "--out", str(tmp_path / "o")]
    assert main(["-q", "viz", "features", str(tmp_path / "a.png"), *common]) == 0
    with Image.open(tmp_path / "o" / "features_0.png") as im:
        assert im.size == (56, 42)
    assert main(["-q", "viz", "attention", str(tmp_path / "a.png"), *common]) == 0  # self-attention only
    assert main(["-q", "viz", "attention", str(tmp_path / "a.png"), str(tmp_path / "a.png"), *common]) == 2
    assert "needs a model with a decoder" in capsys.readouterr().err


def test_picture_functions_and_their_errors():
    model = _tiny("mast3r_vitl16")
    im1, im2 = torch.rand(3, 32, 48), torch.rand(3, 48, 32)
    pics = viz.attention_pictures(model, im1, im2, (1, 2))
    assert pics.query.shape == pics.self_attention.shape == (32, 48, 3)
    assert pics.cross_attention.shape == (48, 32, 3) and 0 <= pics.peak[0] < 3 and 0 <= pics.peak[1] < 2
    assert [f.shape for f in viz.feature_pictures(model, [im1, im2])] == [(32, 48, 3), (48, 32, 3)]
    with pytest.raises(ValueError, match="outside the encoder's 2 blocks"):
        viz.attention_pictures(model, im1, None, (0, 0), block=2)
    with pytest.raises(ValueError, match="outside view 1's 2x3 patch grid"):
        viz.attention_pictures(model, im1, None, (2, 0))
