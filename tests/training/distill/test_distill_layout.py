"""Official DUNE checkpoint layout: key sets vs. the release manifests and the official tiny fixture; stage 2."""

import json
from collections import namedtuple
from pathlib import Path

import pytest
import torch

import backbone
from backbone.checkpoint import CheckpointError, safe_load
from training.distill.config import StudentConfig
from training.distill.student import (
    build_student,
    from_official_state,
    init_from_checkpoint,
    official_checkpoint,
    resize_pos_embed,
)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
MANIFESTS = FIXTURES / "manifests"
FakeTeacher = namedtuple("FakeTeacher", "name dim token_types")
OFFICIAL = ("dino2reg_vitlarge_14", "mast3r_vitlarge_16", "multihmr_vitlarge_14_672")
TOKENS = {
    "dino2reg_vitlarge_14": ("cls", "patch"),
    "mast3r_vitlarge_16": ("patch",),
    "multihmr_vitlarge_14_672": ("patch",),
}


def teachers(dims):
    return [FakeTeacher(n, d, TOKENS[n]) for n, d in zip(OFFICIAL, dims, strict=True)]


@pytest.mark.parametrize("arch, manifest", [("vit_small", "dune_vitsmall14_448"), ("vit_base", "dune_vitbase14_448")])
def test_keys_and_shapes_match_release_manifest(arch, manifest):
    with torch.device("meta"):
        model = build_student(StudentConfig(arch=arch, image_size=448), teachers([1024] * 3))
    ckpt = official_checkpoint(model, 0)
    expected = json.loads((MANIFESTS / f"{manifest}.json").read_text())
    got = {k: list(v.shape) for k, v in ckpt["model"].items()}
    assert got == {k: shape for k, (shape, _dtype) in expected.items()}
    assert len(got) == 232
    assert ckpt["args"].enc_args == {"arch": arch} and ckpt["args"].image_size == 448
    assert ckpt["args"].teachers == list(OFFICIAL)


def test_matches_official_tiny_fixture_and_round_trips():
    fixture = safe_load(FIXTURES / "dune_tiny.pth")
    cfg = StudentConfig(arch="custom", embed_dim=32, depth=2, num_heads=2, image_size=56)
    ours = official_checkpoint(build_student(cfg, teachers([40, 48, 56])), 0)
    assert {k: v.shape for k, v in ours["model"].items()} == {k: v.shape for k, v in fixture["model"].items()}
    for field in ("image_size", "enc_args", "proj_args", "teachers"):
        assert getattr(ours["args"], field) == getattr(fixture["args"], field), field
    # official file -> backbone.load -> our exporter gives the file's tensors back exactly
    again = official_checkpoint(backbone.load(FIXTURES / "dune_tiny.pth"), 1000)
    assert again["model"].keys() == fixture["model"].keys() and again["iter"] == 1000
    for key, value in fixture["model"].items():
        assert torch.equal(again["model"][key], value), key


def test_second_stage_resizes_position_embedding():
    small = build_student(
        StudentConfig(arch="custom", embed_dim=32, depth=1, num_heads=2, image_size=28), teachers([8, 8, 8])
    )
    big = build_student(
        StudentConfig(arch="custom", embed_dim=32, depth=1, num_heads=2, image_size=42), teachers([8, 8, 8])
    )
    src = official_checkpoint(small, 7)
    assert init_from_checkpoint(big, src) == 7
    assert big.pos_embed.shape == (1, 1 + 9, 32)
    torch.testing.assert_close(big.pos_embed, resize_pos_embed(small.pos_embed, 3), rtol=0, atol=0)
    assert torch.equal(big.pos_embed[:, 0], small.pos_embed[:, 0])  # cls row kept
    for key, value in from_official_state(src["model"]).items():
        if key != "pos_embed":
            assert torch.equal(big.state_dict()[key], value), key


def test_second_stage_refuses_other_teachers():
    cfg = StudentConfig(arch="custom", embed_dim=32, depth=1, num_heads=2, image_size=28)
    src = official_checkpoint(build_student(cfg, teachers([8, 8, 8])), 0)
    target = build_student(cfg, teachers([8, 8, 8])[:2])
    with pytest.raises(CheckpointError, match="unexpected keys.*multihmr"):
        init_from_checkpoint(target, src)


def test_resize_is_bicubic_to_size():
    pos = torch.randn(1, 1 + 16, 4)
    out = resize_pos_embed(pos, 6)
    grid = pos[:, 1:].reshape(1, 4, 4, 4).permute(0, 3, 1, 2)
    ref = torch.nn.functional.interpolate(grid, size=(6, 6), mode="bicubic", align_corners=False)
    torch.testing.assert_close(out[:, 1:], ref.permute(0, 2, 3, 1).reshape(1, 36, 4), rtol=1e-6, atol=1e-6)
