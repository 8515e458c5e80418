"""Decoder + heads alone against the official intermediates (encoder features in, decoder lists, DPT, preds out)."""

from __future__ import annotations

import pytest
import torch

from backbone.checkpoint import load_strict, parse_constructor, safe_load
from recon.model.decoder import BinocularDecoder
from recon.model.formats import DUNE_MAST3R, MAST3R_PTH, configs_from_constructor, convert_state_dict
from recon.model.heads import build_head

from .conftest import ATOL, RTOL, fixture_path


def _parts(ckpt_name: str, keymap):
    ckpt = safe_load(fixture_path(ckpt_name))
    text = ckpt["mast3r_model_str"] if keymap is DUNE_MAST3R else ckpt["args"].model
    decoder_cfg, head_cfg, _, enc = configs_from_constructor(*parse_constructor(text))
    patch = 14 if keymap is DUNE_MAST3R else 16
    dim = enc["enc_embed_dim"]
    decoder = BinocularDecoder(dim, patch, decoder_cfg)
    heads = [build_head(head_cfg, dim, decoder_cfg.embed_dim, decoder_cfg.depth, patch) for _ in range(2)]
    mapped, _ = convert_state_dict(ckpt["model"], keymap)
    for prefix, module in (("decoder.", decoder), ("head1.", heads[0]), ("head2.", heads[1])):
        load_strict(module, {k[len(prefix) :]: v for k, v in mapped.items() if k.startswith(prefix)}, prefix)
    return decoder.eval(), heads


CASES = [
    ("mast3r_tiny.pth", "mast3r", "landscape"),
    ("mast3r_tiny.pth", "mast3r", "mixed"),
    ("dune_mast3r_tiny.pth", "dune", "landscape"),
]


@pytest.mark.parametrize(("ckpt_name", "kind", "case"), CASES)
def test_decoder_and_heads_match_official_intermediates(ckpt_name, kind, case, mast3r_io, dune_mast3r_io):
    io = mast3r_io if kind == "mast3r" else dune_mast3r_io
    decoder, heads = _parts(ckpt_name, MAST3R_PTH if kind == "mast3r" else DUNE_MAST3R)
    shape1 = tuple(io[f"{case}.view1.img"].shape[-2:])
    shape2 = tuple(io[f"{case}.view2.img"].shape[-2:])
    with torch.no_grad():
        dec1, dec2 = decoder(io[f"{case}.enc.feat1"], io[f"{case}.enc.feat2"], shape1, shape2)
        assert len(dec1) == len(dec2) == decoder.config.depth + 1
        for i, (a, b) in enumerate(zip(dec1, dec2, strict=True)):
            torch.testing.assert_close(a, io[f"{case}.dec1.{i:02d}"], rtol=RTOL, atol=ATOL)
            torch.testing.assert_close(b, io[f"{case}.dec2.{i:02d}"], rtol=RTOL, atol=ATOL)
        for v, (head, dec, shape) in enumerate(((heads[0], dec1, shape1), (heads[1], dec2, shape2)), start=1):
            raw = head.forward_raw(dec, shape)
            torch.testing.assert_close(raw[:, :4], io[f"{case}.dpt_raw{v}"], rtol=RTOL, atol=ATOL)
            pred = head.postprocess(raw)
            ref_pts = io[f"{case}.pred{v}.pts3d" if v == 1 else f"{case}.pred2.pts3d_in_other_view"]
            torch.testing.assert_close(pred["pts3d"], ref_pts, rtol=RTOL, atol=ATOL)
            for key in ("conf", "desc", "desc_conf"):
                torch.testing.assert_close(pred[key], io[f"{case}.pred{v}.{key}"], rtol=RTOL, atol=ATOL)
