"""``hub.verify``: tiny checkpoints in each official layout, wrong layouts, hashes, and a refused pickle payload."""

from __future__ import annotations

import argparse
import hashlib
import os

import pytest
import torch

from backbone import hub

MAST3R_STR = (
    "AsymmetricMASt3R(img_size=(512, 512), enc_depth=2, dec_depth=1, head_type='catmlp+dpt', "
    "depth_mode=('exp', -inf, inf), two_confs=True)"
)
EVIL_STR = "__import__('os').system('true')"  # parsed, never run: it is not a plain ``Name(...)`` call
DUST3R_STR = "AsymmetricCroCo3DStereo(enc_depth=2, dec_depth=1, head_type='dpt', conf_mode=('exp', 1, inf))"


def _sd(prefix: str = "") -> dict[str, torch.Tensor]:
    return {f"{prefix}patch_embed.proj.weight": torch.randn(4, 3, 2, 2), f"{prefix}norm.weight": torch.ones(4)}


def _layouts() -> dict[str, object]:
    return {
        "mast3r": {"model": _sd(), "args": argparse.Namespace(model=MAST3R_STR), "epoch": 3},
        "dust3r": {"model": _sd(), "args": argparse.Namespace(model=DUST3R_STR)},
        "dune": {"model": _sd("encoder."), "args": argparse.Namespace(image_size=448, enc_args={"arch": "vit_base"})},
        "dune_mast3r": {
            "dune_backbone_name": "dune_vitbase_14_448_paper_encoder",
            "mast3r_model_str": MAST3R_STR,
            "model": {"norm.weight": torch.ones(4)},
        },
        "state_dict": _sd(),
        "recon": {"arch": "croco_vitl16", "config": {"depth": 2}, "format": 1, "model": _sd()},
    }


# One table entry per official layout.
ENTRY_OF_FORMAT = {
    "mast3r": "mast3r_vitl16_512",
    "dust3r": "dust3r_vitl16_512_dpt",
    "dune": "dune_vitb14_448",
    "dune_mast3r": "dune_mast3r_vitb14_448",
    "state_dict": "mum_vitl16",
}


def _place(name: str, obj) -> os.PathLike:
    path = hub.target_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("fmt", list(ENTRY_OF_FORMAT))
def test_verify_cached_tiny_checkpoint_by_name(fmt):
    name = ENTRY_OF_FORMAT[fmt]
    path = _place(name, _layouts()[fmt])
    result = hub.verify(name)
    assert result.path == path and result.name == name and result.format == fmt
    assert result.size == path.stat().st_size
    assert result.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("fmt", list(hub.FORMATS))
def test_format_of_a_file_outside_the_table_is_detected(fmt, tmp_path):
    path = tmp_path / "mine.pth"
    torch.save(_layouts()[fmt], path)
    result = hub.verify(path)
    assert result.name is None and result.format == fmt


def test_official_file_name_outside_the_cache_uses_its_entry(tmp_path):
    # A --checkpoint file under an official name is checked against that release's layout.
    path = tmp_path / hub.WEIGHTS["mast3r_vitl16_512"].filename
    torch.save(_layouts()["dust3r"], path)
    with pytest.raises(hub.WeightsIntegrityError, match="builds AsymmetricCroCo3DStereo, expected AsymmetricMASt3R"):
        hub.verify(path)


@pytest.mark.parametrize(
    ("name", "obj", "message"),
    [
        ("mast3r_vitl16_512", {"model": _sd()}, r"lacks the top-level keys \['args'\]"),
        ("mast3r_vitl16_512", {"model": _sd(), "args": argparse.Namespace(model=EVIL_STR)}, "must be a call"),
        ("dune_vitb14_448", {"model": _sd(), "args": argparse.Namespace(image_size=448)}, "'args' has no 'enc_args'"),
        ("dune_mast3r_vits14_448", {"model": _sd(), "mast3r_model_str": MAST3R_STR}, "dune_backbone_name"),
        ("mum_vitl16", {"model": _sd()}, "not a flat"),
        ("dinov2_vitl14_reg", {"norm.weight": torch.ones(2)}, "patch_embed.proj.weight"),
        ("dust3r_vitl16_224_linear", {"model": {"w": [1, 2]}, "args": argparse.Namespace(model=DUST3R_STR)}, "state"),
        (
            "dust3r_vitl16_224_linear",
            {"model": _sd(), "args": argparse.Namespace(model=DUST3R_STR.replace("(", "(img_size=(512, 512), ", 1))},
            r"declares img_size=\(512, 512\), expected 224",
        ),
        (
            "dune_vitb14_336",
            {"model": _sd(), "args": argparse.Namespace(image_size=448, enc_args={"arch": "vit_base"})},
            "'args.image_size' is 448, expected 336",
        ),
    ],
)
def test_wrong_layout_is_named(name, obj, message):
    _place(name, obj)
    with pytest.raises(hub.WeightsIntegrityError, match=message):
        hub.verify(name)


def test_unknown_layout_outside_the_table(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"weights": _sd()}, path)
    with pytest.raises(hub.WeightsIntegrityError, match="matches no known checkpoint format"):
        hub.verify(path)


def test_safetensors_state_dict(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    save_file(_sd(), str(path))
    assert hub.verify(path).format == "state_dict"


class _Payload:
    """Pickles to a call of ``os.mkdir(marker)``: what an attacker's checkpoint would do on a plain torch.load."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def test_pickle_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload_ran"
    path = _place("mast3r_vitl16_512", {"model": _sd(), "args": _Payload(str(marker))})
    with pytest.raises(hub.WeightsIntegrityError, match="refusing to load") as info:
        hub.verify("mast3r_vitl16_512")
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_known_hash_mismatch(tiny_entry):
    tiny_entry(sha256="ab" * 32)
    _place("tiny", _sd())
    with pytest.raises(hub.WeightsIntegrityError, match="expected abab"):
        hub.verify("tiny")


def test_known_hash_and_size_match(tiny_entry):
    path = hub.target_path("mum_vitl16").with_name("tiny.bin")
    path.parent.mkdir(parents=True)
    torch.save(_sd(), path)
    data = path.read_bytes()
    tiny_entry(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    assert hub.verify("tiny").format == "state_dict"


def test_not_cached(isolated_cache):
    with pytest.raises(hub.WeightsUnavailableError, match="recon weights download mum_vitl16"):
        hub.verify("mum_vitl16")


def test_missing_path_and_unknown_name(tmp_path):
    with pytest.raises(hub.WeightsUnavailableError, match="no such file"):
        hub.verify(tmp_path / "nothing.pth")
    with pytest.raises(hub.UnknownWeightsError):
        hub.verify("nothing")
