"""The backbone protocol, checked on a tiny instance of every registered family."""

import math

import pytest
import torch

import backbone
from backbone.registry import IMAGENET_MEAN, IMAGENET_STD

TINY = {"embed_dim": 64, "depth": 2, "num_heads": 4}
NAMES = backbone.list()
SHAPES = {"square": (3, 3), "landscape": (2, 4), "portrait": (4, 2)}  # in patches (h, w)


@pytest.fixture(scope="module", params=NAMES)
def tiny(request):
    torch.manual_seed(0)
    return backbone.create(request.param, **TINY).eval()


def test_registry_lists_every_family():
    expected = {"croco_vitl16", "dune_vits14", "dune_vitb14", "mum_vitl16"}
    expected |= {f"dinov2_vit{s}14{r}" for s in "sblg" for r in ("", "_reg")}
    assert set(NAMES) == expected
    with pytest.raises(KeyError, match="unknown backbone 'nope'.*croco_vitl16"):
        backbone.create("nope")
    with pytest.raises(TypeError, match="unknown backbone override.*'depht'"):
        backbone.create("croco_vitl16", depht=2)


@pytest.mark.parametrize("shape", SHAPES)
def test_forward_shapes_and_finite(tiny, shape):
    h, w = SHAPES[shape]
    p = tiny.spec.patch_size
    images = torch.rand(2, 3, h * p, w * p)
    with torch.no_grad():
        feats = tiny.forward_features(images)
        tokens = tiny(images)
    assert isinstance(tiny, backbone.Backbone)
    assert tokens.shape == (2, h * w, 64)
    assert torch.isfinite(tokens).all()
    assert feats["x_prenorm"].shape == (2, tiny.spec.num_prefix_tokens + h * w, 64)
    torch.testing.assert_close(feats["x_norm_patchtokens"], tokens, rtol=0, atol=0)
    if tiny.cls_token is not None:
        assert feats["x_norm_clstoken"].shape == (2, 64)
    if tiny.register_tokens is not None:
        assert feats["x_norm_regtokens"].shape == (2, tiny.register_tokens.shape[1], 64)
    # The patch tokens are the final norm of the pre-norm patch tokens.
    torch.testing.assert_close(tiny.norm(feats["x_prenorm"][:, tiny.spec.num_prefix_tokens :]), tokens)


def test_batch_independence(tiny):
    p = tiny.spec.patch_size
    images = torch.rand(3, 3, 2 * p, 4 * p)
    with torch.no_grad():
        batched = tiny(images)
        for b in range(3):
            torch.testing.assert_close(batched[b : b + 1], tiny(images[b : b + 1]), rtol=1e-5, atol=1e-5)


def test_token_order_is_row_major(tiny):
    # Zeroing image patch (y=1, x=2) changes only the patch-embedding token at row-major index y*w + x.
    p = tiny.spec.patch_size
    images = torch.rand(1, 3, 2 * p, 3 * p)
    moved = images.clone()
    moved[..., 1 * p : 2 * p, 2 * p : 3 * p] = 0.0  # patch (y=1, x=2)
    with torch.no_grad():
        a, _ = tiny.patch_embed(tiny.normalize(images))
        b, _ = tiny.patch_embed(tiny.normalize(moved))
    changed = (a - b).abs().amax(-1) > 0
    assert changed.flatten().nonzero().flatten().tolist() == [1 * 3 + 2]


def test_not_a_multiple_of_the_patch_size(tiny):
    p = tiny.spec.patch_size
    with pytest.raises(ValueError, match=rf"H={2 * p + 1}, W={3 * p}.*patch size {p}"):
        tiny(torch.rand(1, 3, 2 * p + 1, 3 * p))
    with pytest.raises(ValueError, match=r"expected images \[B, 3, H, W\]"):
        tiny(torch.rand(1, 1, p, p))


def test_intermediate_layers(tiny):
    p = tiny.spec.patch_size
    images = torch.rand(1, 3, 2 * p, 3 * p)
    with torch.no_grad():
        layers = tiny.get_intermediate_layers(images, n=2, reshape=True)
        last = tiny.get_intermediate_layers(images, n=[1])[0]
        tokens = tiny(images)
    assert [t.shape for t in layers] == [(1, 64, 2, 3)] * 2
    torch.testing.assert_close(last, tokens)


def test_builds_on_meta(tiny):
    with torch.device("meta"):
        model = backbone.create(tiny.spec.name)
    assert all(t.is_meta for t in model.state_dict().values())


SPECS = {
    # name: (patch, native size, mean, std, prefix tokens) -- from the reference fact sheets
    "croco_vitl16": (16, 512, (0.5,) * 3, (0.5,) * 3, 0),
    "dune_vits14": (14, 448, IMAGENET_MEAN, IMAGENET_STD, 5),
    "dune_vitb14": (14, 448, IMAGENET_MEAN, IMAGENET_STD, 5),
    "mum_vitl16": (16, 224, IMAGENET_MEAN, IMAGENET_STD, 1),
    "dinov2_vitl14": (14, 518, IMAGENET_MEAN, IMAGENET_STD, 1),
    "dinov2_vitl14_reg": (14, 518, IMAGENET_MEAN, IMAGENET_STD, 5),
}


@pytest.mark.parametrize("name", SPECS)
def test_spec(name):
    with torch.device("meta"):
        spec = backbone.create(name).spec
    assert (spec.patch_size, spec.image_size, spec.mean, spec.std, spec.num_prefix_tokens) == SPECS[name]
    assert spec.name == name


def test_normalisation_is_the_specs():
    model = backbone.create("dune_vits14", **TINY)
    images = torch.rand(1, 3, 14, 14)
    expected = (images - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(model.normalize(images), expected)
    croco = backbone.create("croco_vitl16", **TINY)
    torch.testing.assert_close(croco.normalize(torch.full((1, 3, 16, 16), 0.75)), torch.full((1, 3, 16, 16), 0.5))


# Parameter counts of the full-size builds: published figures (timm model cards for DINOv2: 22.06 M, 86.58 M,
# 304.37 M, 1136.48 M; reference/dune_mum.md for DUNE ViT-B/448 86,318,592 / with projectors 109,949,184 and
# MuM ViT-L 303,099,904).
PARAMS = {
    "dinov2_vits14": 22_056_576,
    "dinov2_vitb14": 86_580_480,
    "dinov2_vitl14": 304_368_640,
    "dinov2_vitg14": 1_136_480_768,
    "dune_vitb14": 86_318_592,
    "mum_vitl16": 303_099_904,
}


@pytest.mark.parametrize("name", PARAMS)
def test_full_size_parameter_counts(name):
    with torch.device("meta"):
        model = backbone.create(name)
    count = sum(p.numel() for p in model.parameters())
    assert math.isclose(count, PARAMS[name], rel_tol=1e-4), count


def test_dune_with_projectors_parameter_count():
    with torch.device("meta"):
        model = backbone.create("dune_vitb14", with_projectors=True)
    assert sum(p.numel() for p in model.parameters()) == 109_949_184
