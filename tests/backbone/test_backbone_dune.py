"""DUNE: conformance with the official encoder and projector outputs, checkpoint variants, negative loads."""

import json

import pytest
import torch
from safetensors.torch import load_file

import backbone
from backbone.checkpoint import CheckpointError, safe_load
from backbone.dune import DUNE_TEACHERS, load_dune, map_dune_keys, strip_wrapper_prefixes

# Tolerance: the conformance study finds DUNE outputs bit-identical across thread counts and within 3.8e-6 of a
# float64 run (atol at rtol=1e-4: 1.0e-6); the README suggests rtol=atol=1e-4 for a float32 reimplementation.
RTOL, ATOL = 1e-4, 1e-4
CASES = ("w70h56", "w56h56")  # 4x5 patches (pos-embed resampled) and 4x4 (the stored grid)


@pytest.fixture
def ckpt(conformance_file):
    return safe_load(conformance_file("dune_tiny.pth"))


@pytest.fixture
def io(conformance_file):
    return load_file(conformance_file("dune_tiny_io.safetensors"))


def _close(actual, expected):
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=ATOL)


def test_full_checkpoint_matches_official(ckpt, io):
    model = load_dune(ckpt)
    assert sorted(model.projectors) == sorted(DUNE_TEACHERS)
    assert {t: tuple(n.normalizers) for t, n in model.teacher_norms.items()} == {
        "dino2reg_vitlarge_14": ("cls", "patch"),
        "mast3r_vitlarge_16": ("patch",),
        "multihmr_vitlarge_14_672": ("patch",),
    }
    for case in CASES:
        img01 = io[f"{case}.img01"]
        h, w = img01.shape[-2] // 14, img01.shape[-1] // 14
        with torch.no_grad():
            feats = model.forward_features(img01)
            preds = model.forward_projectors(img01)
        # Encoder with the final norm (the official encoder-only entry point).
        for key in ("x_norm_clstoken", "x_norm_regtokens", "x_norm_patchtokens", "x_prenorm"):
            _close(feats[key], io[f"{case}.encoder.{key}"])
        # The full model's view: un-normed tokens, [cls, patches] fed to the projectors.
        prenorm = feats["x_prenorm"]
        _close(prenorm[:, 0], io[f"{case}.dune.encoder_noapplynorm.x_norm_clstoken"])
        _close(prenorm[:, 1:5], io[f"{case}.dune.encoder_noapplynorm.x_norm_regtokens"])
        _close(prenorm[:, 5:], io[f"{case}.dune.encoder_noapplynorm.x_norm_patchtokens"])
        _close(model.projector_input(feats), io[f"{case}.dune.enc_out"])
        for teacher, pred in preds.items():
            _close(pred, io[f"{case}.dune.proj.{teacher}"])
            _close(pred[:, 0], io[f"{case}.dune.proj.{teacher}.cls"])
            grid = pred[:, 1:].transpose(1, 2).reshape(1, -1, h, w)  # B D_t h w
            _close(grid, io[f"{case}.dune.proj.{teacher}.patch_grid"])


def test_forward_is_normed_patch_tokens(ckpt, io):
    model = load_dune(ckpt)
    with torch.no_grad():
        _close(model(io["w70h56.img01"]), io["w70h56.encoder.x_norm_patchtokens"])


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
def test_wrapper_prefixes_load(ckpt, io, prefix):
    wrapped = {**ckpt, "model": {prefix + k: v for k, v in ckpt["model"].items()}}
    model = load_dune(wrapped)
    with torch.no_grad():
        _close(model.forward_features(io["w56h56.img01"])["x_prenorm"], io["w56h56.encoder.x_prenorm"])


def test_encoder_only_state_dict(ckpt, io):
    # What the hub '*_encoder' entries hold: encoder keys without 'encoder.', no args (heads given explicitly).
    encoder_only = {k[len("encoder.") :]: v for k, v in ckpt["model"].items() if k.startswith("encoder.")}
    model = load_dune(encoder_only, num_heads=2)
    assert len(model.projectors) == 0 and len(model.teacher_norms) == 0
    with torch.no_grad():
        _close(model.forward_features(io["w70h56.img01"])["x_prenorm"], io["w70h56.encoder.x_prenorm"])


def test_path_loading_and_encoder_only_option(conformance_file):
    model = load_dune(conformance_file("dune_tiny.pth"), with_projectors=False)
    assert model.spec.embed_dim == 32 and model.spec.num_prefix_tokens == 5 and model.spec.image_size == 56
    assert len(model.projectors) == 0


def test_missing_key_is_named(ckpt):
    state = dict(ckpt["model"])
    del state["projectors.mast3r_vitlarge_16.blocks.0.ls2.gamma"]
    with pytest.raises(CheckpointError, match=r"missing keys.*projectors\.mast3r_vitlarge_16\.blocks\.0\.ls2\.gamma"):
        load_dune({**ckpt, "model": state})


def test_unmapped_key_is_named(ckpt):
    state = {**ckpt["model"], "encoder.head.weight": torch.zeros(3)}
    with pytest.raises(CheckpointError, match=r"no mapping: encoder\.head\.weight"):
        load_dune({**ckpt, "model": state})


def test_extra_block_is_named(ckpt):
    # A key that the key map accepts but the model does not have.
    state = {**ckpt["model"], "projectors.mast3r_vitlarge_16.blocks.0.extra.weight": torch.zeros(3)}
    with pytest.raises(CheckpointError, match=r"unexpected keys.*projectors\.mast3r_vitlarge_16\.blocks\.0\.extra"):
        load_dune({**ckpt, "model": state})


@pytest.mark.parametrize(
    ("manifest", "name", "full"),
    [
        ("dune_vitsmall14_448.json", "dune_vits14", True),
        ("dune_vitsmall14_448_encoder.json", "dune_vits14", False),
        ("dune_vitbase14_448.json", "dune_vitb14", True),
        ("dune_vitbase14_448_encoder.json", "dune_vitb14", False),
    ],
)
def test_full_size_manifest_maps_onto_our_modules(conformance_file, manifest, name, full):
    official = json.loads(conformance_file(f"manifests/{manifest}").read_text())
    mapped = map_dune_keys(
        strip_wrapper_prefixes({k: torch.empty(shape, device="meta") for k, (shape, _) in official.items()})
    )
    with torch.device("meta"):
        model = backbone.create(name, with_projectors=full)
    ours = model.state_dict()
    assert set(mapped) == set(ours)
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {k: tuple(v.shape) for k, v in ours.items()}


def test_prenorm_patch_tokens_are_what_dune_mast3r_consumes(ckpt, conformance_file):
    # DUNE-MASt3R feeds its decoder the pre-norm patch tokens x_prenorm[:, 1 + 4:] of images in [-1, 1].
    io = load_file(conformance_file("dune_mast3r_tiny_io.safetensors"))
    model = load_dune(ckpt)
    for view in ("1", "2"):
        with torch.no_grad():
            feats = model.forward_features(io[f"landscape.view{view}.img"] * 0.5 + 0.5)
        _close(feats["x_prenorm"][:, 1 + 4 :], io[f"landscape.enc.backbone_feat{view}"])
