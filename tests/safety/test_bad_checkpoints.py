"""Bad checkpoints are refused with one clear line, before any tensor is allocated, and leave files untouched.

Every case is a tiny generated checkpoint: an official MASt3R release layout (``tests/fixtures/mast3r_tiny.pth``)
with an edited constructor string or edited weights, recon's own format with an edited config (digest recomputed
so that the config check, not the digest, is what is tested), corrupt bytes, or a DUNE-MASt3R decoder naming an
unknown encoder. Without the bounds, ``enc_depth=100000`` spends minutes building modules, ``img_size=1e9``
resizes photos to a billion pixels, ``dec_num_heads=0`` raises ZeroDivisionError, ``depth_mode='exp'`` is read
letter by letter, ``pos_embed='RoPEnan'`` gives NaN outputs.
"""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch

import recon
from backbone.checkpoint import CheckpointError, safe_load, state_digest
from recon.model.decoder import DecoderConfig
from recon.model.heads import HeadConfig
from recon.model.loading import save_model
from recon.model.presets import build_model

from .helpers import fixture_path, one_line, tree_digest

OFFICIAL = "mast3r_tiny.pth"


@pytest.fixture(scope="module")
def official():
    return safe_load(fixture_path(OFFICIAL))


def _with_string(tmp_path, official, **edits) -> object:
    """The official tiny checkpoint with constructor keywords replaced (values written as Python literals)."""
    text = official["args"].model
    for key, literal in edits.items():
        if f"{key}=" in text:
            start = text.index(f"{key}=")
            depth, end = 0, start
            while end < len(text):  # the literal ends at the first ',' or ')' outside brackets
                ch = text[end]
                depth += ch in "(["
                if ch in ")]" and depth == 0 or ch == "," and depth == 0:
                    break
                depth -= ch in ")]"
                end += 1
            text = text[:start] + f"{key}={literal}" + text[end:]
        else:
            text = text[:-1] + f", {key}={literal})"
    path = tmp_path / "edited.pth"
    torch.save({"model": official["model"], "args": argparse.Namespace(model=text)}, path)
    return path


def _refused(path, match: str, **kw) -> str:
    before = tree_digest(path.parent)
    with pytest.raises(CheckpointError, match=match) as info:
        recon.load_model(path, **kw)
    assert tree_digest(path.parent) == before  # loading never changes a file
    return one_line(info.value)


CONSTRUCTOR_CASES = [
    ("enc_depth", "100000", r"enc_depth=100000 is out of range"),
    ("dec_depth", "100000", r"dec_depth=100000 is out of range"),
    ("img_size", "1000000000", r"img_size=1000000000 is out of range"),
    ("img_size", "(512, 1e9)", r"img_size=1000000000.0 must be an integer"),
    ("dec_num_heads", "0", r"dec_num_heads=0 is out of range"),
    ("enc_num_heads", "3", r"enc_embed_dim=64 is not divisible by enc_num_heads=3"),
    ("dec_num_heads", "8", r"dec_embed_dim / dec_num_heads = 6 must be divisible by 4"),
    ("depth_mode", "'exp'", r"depth_mode='exp' must be a tuple \(name, vmin, vmax\)"),
    ("conf_mode", "('exp', nan, inf)", r"conf_mode=.*vmin and vmax must be numbers"),
    ("conf_mode", "('exp', 5, 1)", r"conf_mode=.*needs vmin < vmax"),
    ("pos_embed", "'RoPEnan'", r"pos_embed='RoPEnan' is not supported"),
    ("pos_embed", "'RoPE-5'", r"pos_embed='RoPE-5' is not supported"),
    ("enc_depth", "'24'", r"enc_depth='24' must be an integer"),
    ("dec_depth", "12.5", r"dec_depth=12.5 must be an integer"),
    ("dec_embed_dim", "True", r"dec_embed_dim=True must be an integer"),
    ("mlp_ratio", "inf", r"mlp_ratio=inf is out of range"),
    ("two_confs", "'yes'", r"two_confs='yes' must be True or False"),
    ("output_mode", "'pts3d+descX'", r"output_mode='pts3d\+descX' is not supported"),
    ("output_mode", "'pts3d+desc100000'", r"descriptor width=100000 is out of range"),
    ("head_type", "'linear'", r"head_type='linear' is not supported"),
    ("desc_mode", "'sqrt'", r"desc_mode='sqrt' is not supported"),
    ("dec_depth", "4", r"dec_depth=4 is out of range: must be in \[10,"),
]


@pytest.mark.parametrize(
    ("key", "literal", "match"), CONSTRUCTOR_CASES, ids=[f"{k}={v}" for k, v, _ in CONSTRUCTOR_CASES]
)
def test_bad_constructor_values_are_refused(tmp_path, official, key, literal, match):
    _refused(_with_string(tmp_path, official, **{key: literal}), match)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("EvilNet(enc_depth=2)", r"unsupported model class 'EvilNet'"),
        ("AsymmetricMASt3R(enc_depth=__import__('os').getpid())", r"unsupported expression"),
        ("AsymmetricMASt3R(" + "(" * 500 + ")" * 500 + ")", r"cannot parse constructor string"),
        ("AsymmetricMASt3R(enc_depth=2" + ", x=1" * 5000 + ")", r"must be a short string"),
        ("AsymmetricMASt3R(**{'enc_depth': 2})", r"\*\*kwargs"),
    ],
    ids=["unknown-factory", "code", "nesting", "huge-string", "starstar"],
)
def test_constructor_strings_that_are_not_plain_calls(tmp_path, official, text, match):
    path = tmp_path / "bad.pth"
    torch.save({"model": official["model"], "args": argparse.Namespace(model=text)}, path)
    _refused(path, match)


@pytest.mark.parametrize(
    ("value", "match"),
    [(math.nan, r"holds NaN values"), (math.inf, r"holds \|value\| inf"), (3e5, r"holds \|value\| 3e\+05 > 10000")],
    ids=["nan", "inf", "absurd"],
)
def test_bad_weight_values_are_refused_naming_the_tensor(tmp_path, official, value, match):
    state = dict(official["model"])
    key = "dec_blocks.3.mlp.fc1.weight"
    state[key] = state[key].clone()
    state[key][0, 0] = value
    path = tmp_path / "bad_weights.pth"
    torch.save({"model": state, "args": official["args"]}, path)
    assert key in _refused(path, match)


def test_bad_encoder_weight_is_named_too(tmp_path, official):
    state = dict(official["model"])
    key = "enc_blocks.1.attn.qkv.weight"
    state[key] = torch.full_like(state[key], math.nan)
    path = tmp_path / "bad_encoder.pth"
    torch.save({"model": state, "args": official["args"]}, path)
    assert key in _refused(path, r"holds NaN values")


# ---------------------------------------------------------------------------------------------- recon's own format
@pytest.fixture(scope="module")
def tiny_recon(tmp_path_factory):
    """A small recon-format checkpoint (.pth) and its loaded dict."""
    model = build_model(
        "mast3r_tiny",
        backbone_overrides={"embed_dim": 32, "depth": 1, "num_heads": 2},
        decoder=DecoderConfig(embed_dim=32, depth=10, num_heads=2),
        head=HeadConfig(dpt_feature_dim=16, dpt_layer_dims=(8, 8, 8, 8)),
    )
    path = save_model(model, tmp_path_factory.mktemp("recon") / "tiny.pth")
    return path, safe_load(path)


def _recon_with(tmp_path, ckpt, edit) -> object:
    """Edit a copy of the config and store it with a recomputed digest (so the config check is what fails)."""
    from recon.model.loading import _digest_text

    config = json.loads(json.dumps(ckpt["config"]))
    edit(config)
    path = tmp_path / "edited_recon.pth"
    digest = state_digest(ckpt["model"], _digest_text(config))
    torch.save({**ckpt, "config": config, "digest": digest}, path)
    return path


RECON_CASES = {
    "decoder-depth": (lambda c: c["decoder"].update(depth=100000), r"decoder.depth=100000 is out of range"),
    "image-size": (lambda c: c.update(image_size=10**9), r"image_size=1000000000 is out of range"),
    "heads-zero": (lambda c: c["decoder"].update(num_heads=0), r"decoder.num_heads=0 is out of range"),
    "heads-indivisible": (lambda c: c["decoder"].update(num_heads=3), r"decoder.embed_dim=32 is not divisible"),
    "depth-mode-string": (lambda c: c["head"].update(depth_mode="exp"), r"head.depth_mode='exp' must be a tuple"),
    "rope-nan": (lambda c: c["decoder"].update(rope_base=math.nan), r"decoder.rope_base=nan is out of range"),
    "unknown-factory": (
        lambda c: c["backbone"].update(factory="evil_vit"),
        r"unknown backbone factory 'evil_vit'",
    ),
    "backbone-depth": (lambda c: c["backbone"]["config"].update(depth=100000), r"depth=100000 is out of range"),
    "backbone-depth-string": (lambda c: c["backbone"]["config"].update(depth="12"), r"depth='12' must be an integer"),
    "backbone-unknown-field": (
        lambda c: c["backbone"]["config"].update(evil=1),
        r"invalid backbone config: .*unexpected keyword argument 'evil'",
    ),
    "backbone-heads": (lambda c: c["backbone"]["config"].update(num_heads=5), r"embed_dim=32 is not divisible"),
    "unknown-field": (lambda c: c.update(evil=1), r"invalid config: .*unexpected keyword argument 'evil'"),
    "desc-dim": (lambda c: c["head"].update(desc_dim=-1), r"head.desc_dim=-1 is out of range"),
}


@pytest.mark.parametrize("case", list(RECON_CASES))
def test_bad_recon_configs_are_refused(tmp_path, tiny_recon, case):
    edit, match = RECON_CASES[case]
    _refused(_recon_with(tmp_path, tiny_recon[1], edit), match)


def test_recon_checkpoint_round_trips_with_its_digest(tiny_recon):
    path, ckpt = tiny_recon
    assert isinstance(ckpt["digest"], str) and len(ckpt["digest"]) == 64
    assert recon.load_model(path).config.decoder.depth == 10


def _flip_bit_in(path, needle: bytes) -> None:
    data = bytearray(path.read_bytes())
    at = data.find(needle)
    assert at >= 0, "tensor bytes not found in the file"
    data[at + 1] ^= 0x01  # the low bit of a mantissa byte: still a small, finite float
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_bit_flipped_recon_checkpoint_is_refused(tmp_path, tiny_recon, suffix):
    model = recon.load_model(tiny_recon[0])
    path = save_model(model, tmp_path / f"flipped{suffix}")
    weight = model.state_dict()["decoder.dec_blocks.0.mlp.fc1.weight"]
    _flip_bit_in(path, weight.numpy().tobytes()[:64])
    _refused(path, r"content digest mismatch")


def test_edited_recon_config_without_new_digest_is_refused(tmp_path, tiny_recon):
    _, ckpt = tiny_recon
    config = json.loads(json.dumps(ckpt["config"]))
    config["head"]["conf_mode"] = ["exp", 2, math.inf]  # plausible, but not what recon wrote
    path = tmp_path / "edited.pth"
    torch.save({**ckpt, "config": config}, path)
    _refused(path, r"content digest mismatch")


def test_recon_checkpoint_without_digest_still_loads(tmp_path, tiny_recon):
    """Files written before digests existed load as before (nothing to verify)."""
    _, ckpt = tiny_recon
    path = tmp_path / "old.pth"
    torch.save({k: v for k, v in ckpt.items() if k != "digest"}, path)
    assert recon.load_model(path).config.decoder.depth == 10


# ---------------------------------------------------------------------------------------------- corrupt files
def test_corrupt_safetensors_header(tmp_path, tiny_recon):
    path = save_model(recon.load_model(tiny_recon[0]), tmp_path / "model.safetensors")
    data = bytearray(path.read_bytes())
    data[:8] = (2**62).to_bytes(8, "little")  # header length far beyond the file
    path.write_bytes(bytes(data))
    _refused(path, r"corrupt safetensors header")


def test_garbage_in_safetensors_header(tmp_path, tiny_recon):
    path = save_model(recon.load_model(tiny_recon[0]), tmp_path / "model.safetensors")
    data = bytearray(path.read_bytes())
    data[8:40] = b"\xff" * 32  # the JSON header no longer parses
    path.write_bytes(bytes(data))
    _refused(path, r"corrupt safetensors header")


def test_bad_json_metadata(tmp_path, tiny_recon):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    meta = {"format": "recon.model/1", "arch": "ReconModel", "config": "{not json"}
    save_file({"x": torch.zeros(1)}, str(path), metadata=meta)
    _refused(path, r"'config' is not valid JSON")


def test_truncated_pth(tmp_path, tiny_recon):
    path = tmp_path / "truncated.pth"
    data = tiny_recon[0].read_bytes()
    path.write_bytes(data[: len(data) // 2])
    msg = _refused(path, r"cannot read .*truncated\.pth: the file is truncated or corrupt")
    assert "refusing" not in msg  # not mistaken for a malicious file


def test_hf_config_that_is_not_an_object(tmp_path, tiny_recon):
    from safetensors.torch import save_file

    save_file({"x": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text("[1, 2, 3]")
    _refused(tmp_path / "model.safetensors", r"must hold a JSON object")


def test_dune_mast3r_decoder_naming_an_unknown_encoder(tmp_path):
    ckpt = safe_load(fixture_path("dune_mast3r_tiny.pth"))
    path = tmp_path / "decoder.pth"
    torch.save({**ckpt, "dune_backbone_name": "evil_encoder_that_does_not_exist"}, path)
    msg = _refused(path, r"names its encoder 'evil_encoder_that_does_not_exist', which is not in the weights table")
    assert "--backbone" in msg


# ---------------------------------------------------------------------------------------------- training resume
def test_resume_skips_a_truncated_newest_checkpoint_and_names_both(tmp_path, caplog):
    """Before: a crash mid-copy left the newest checkpoint cut short and resume failed with 'refusing to load ...
    not a plain-data checkpoint', as if the file were malicious, without naming the good older one."""
    from torch import nn

    from training.common.checkpoint import CheckpointManager

    mgr = CheckpointManager(tmp_path, keep=0)
    model = nn.Linear(3, 2)
    mgr.save(100, model=model)
    mgr.save(200, model=model)
    newest = mgr.path_for(200)
    newest.write_bytes(newest.read_bytes()[:300])
    before = tree_digest(tmp_path)
    with caplog.at_level("WARNING"):
        ckpt = mgr.resume(model=nn.Linear(3, 2))
    assert ckpt["iter"] == 100
    assert "checkpoint_00000200.pth cannot be read" in caplog.text and "checkpoint_00000100.pth" in caplog.text
    assert tree_digest(tmp_path) == before  # the broken file is reported, not deleted


def test_resume_with_no_readable_checkpoint_is_one_clear_line(tmp_path):
    from torch import nn

    from training.common.checkpoint import CheckpointManager

    mgr = CheckpointManager(tmp_path, keep=0)
    mgr.save(100, model=nn.Linear(3, 2))
    mgr.path_for(100).write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"no checkpoint in .* can be read .*truncated or corrupt") as info:
        mgr.resume(model=nn.Linear(3, 2))
    one_line(info.value)


# ---------------------------------------------------------------------------------------------- backbone.load
def _backbone_refused(tmp_path, obj, match: str) -> str:
    import backbone

    path = tmp_path / "backbone.pth"
    torch.save(obj, path)
    before = tree_digest(tmp_path)
    with pytest.raises(CheckpointError, match=match) as info:
        backbone.load(path)
    assert tree_digest(tmp_path) == before
    return one_line(info.value)


def _renamed(state, old: str, new: str) -> dict:
    return {(new + k[len(old) :] if k.startswith(old) else k): v for k, v in state.items()}


def test_dune_with_a_huge_block_index(tmp_path):
    ckpt = safe_load(fixture_path("dune_tiny.pth"))
    state = _renamed(ckpt["model"], "encoder.blocks.0.0.", "encoder.blocks.0.99999.")
    _backbone_refused(tmp_path, {**ckpt, "model": state}, r"number of blocks\.\* blocks=100000 is out of range")


def test_dune_with_a_mistyped_head_count(tmp_path):
    ckpt = safe_load(fixture_path("dune_tiny.pth"))
    args = argparse.Namespace(**{**vars(ckpt["args"]), "enc_args": {"num_heads": "2"}})
    _backbone_refused(tmp_path, {**ckpt, "args": args}, r"num_heads='2' must be an integer")


def test_mum_with_no_rope_periods(tmp_path):
    state = dict(safe_load(fixture_path("mum_tiny_vitl16.pth")))
    state["rope_embed.periods"] = torch.zeros(0)
    _backbone_refused(tmp_path, state, r"num_heads=0 is out of range")


def test_mum_with_a_nan_weight(tmp_path):
    state = dict(safe_load(fixture_path("mum_tiny_vitl16.pth")))
    state["blocks.0.norm1.weight"] = torch.full_like(state["blocks.0.norm1.weight"], math.nan)
    assert "blocks.0.norm1.weight" in _backbone_refused(tmp_path, state, r"holds NaN values")


def test_malformed_block_key(tmp_path):
    state = _renamed(dict(safe_load(fixture_path("mum_tiny_vitl16.pth"))), "blocks.0.", "blocks.x.")
    _backbone_refused(tmp_path, state, r"malformed block key 'blocks\.x\.")


@pytest.fixture(scope="module")
def recon_backbone(tmp_path_factory):
    import backbone

    path = tmp_path_factory.mktemp("bb") / "bb.pth"
    backbone.save(backbone.create("dune_vits14", embed_dim=32, depth=1, num_heads=2, pos_embed_grid=4), path)
    return path


def test_recon_backbone_round_trips_and_bit_flips_are_refused(tmp_path, recon_backbone):
    import backbone

    assert backbone.load(recon_backbone).config.embed_dim == 32
    ckpt = safe_load(recon_backbone)
    path = tmp_path / "flipped.pth"
    path.write_bytes(recon_backbone.read_bytes())
    _flip_bit_in(path, ckpt["model"]["blocks.0.attn.qkv.weight"].numpy().tobytes()[:64])
    before = tree_digest(tmp_path)
    with pytest.raises(CheckpointError, match="content digest mismatch") as info:
        backbone.load(path)
    one_line(info.value)
    assert tree_digest(tmp_path) == before


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda c: c["config"].update(depth=100000), r"depth=100000 is out of range"),
        (lambda c: c["config"].update(num_heads=0), r"num_heads=0 is out of range"),
        (lambda c: c["config"].update(image_size=10**9), r"image_size=1000000000 is out of range"),
        (lambda c: c["config"].update(evil=1), r"invalid config: .*'evil'"),
        (lambda c: c.update(family_args={"teachers": {"x": 10**9}}), r"teachers\['x'\]=1000000000 is out of range"),
        (lambda c: c.update({"class": "EvilNet"}), r"unknown class 'EvilNet'"),
    ],
    ids=["depth", "heads", "image-size", "unknown-field", "teacher-width", "class"],
)
def test_bad_recon_backbone_configs(tmp_path, recon_backbone, edit, match):
    from backbone.formats import _digest_text

    ckpt = safe_load(recon_backbone)
    ckpt = {**ckpt, "config": dict(ckpt["config"])}
    edit(ckpt)
    ckpt["digest"] = state_digest(ckpt["model"], _digest_text(ckpt))  # so the config check is what is tested
    _backbone_refused(tmp_path, ckpt, match)
