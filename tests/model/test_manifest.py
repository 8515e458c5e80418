"""The full-size official MASt3R key set maps completely onto our modules, with equal shapes (meta device).

The manifest lists every state-dict key of ``MASt3R_ViTLarge_BaseDecoder_512_catmlpdpt_metric`` with its shape;
we build meta tensors from it and run the real loader on them (nothing is allocated).
"""

from __future__ import annotations

import json
import math

import torch

from backbone.checkpoint import parse_constructor
from recon.model.formats import MAST3R_HF, MAST3R_PTH
from recon.model.loading import _load_mast3r

# The release string as the official load_model prints it (naver/mast3r issue #19), before its rewriting.
RELEASE = (
    "AsymmetricMASt3R(enc_depth=24, dec_depth=12, enc_embed_dim=1024, dec_embed_dim=768, enc_num_heads=16, "
    "dec_num_heads=12, pos_embed='RoPE100',img_size=(512, 512), head_type='catmlp+dpt', "
    "output_mode='pts3d+desc24', depth_mode=('exp', -inf, inf), conf_mode=('exp', 1, inf), "
    "patch_embed_cls='PatchEmbedDust3R', two_confs=True, desc_conf_mode=('exp', 0, inf), landscape_only=False)"
)


def _meta_state(manifest):
    state = {k: torch.empty(shape, dtype=getattr(torch, dt), device="meta") for k, (shape, dt) in manifest.items()}
    for head in (1, 2):  # the .pth aliases are the same tensor object as their originals
        for i in range(4):
            state[f"downstream_head{head}.dpt.scratch.layer_rn.{i}.weight"] = state[
                f"downstream_head{head}.dpt.scratch.layer{i + 1}_rn.weight"
            ]
    return state


def _param_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_release_pth_key_set_maps_completely(mast3r_manifest):
    assert len(mast3r_manifest) == 1017
    model = _load_mast3r(_meta_state(mast3r_manifest), parse_constructor(RELEASE), MAST3R_PTH)
    ours = model.state_dict()
    # Every weight of ours came from the file with its shape (load_strict checked names and shapes); count them.
    assert all(v.is_meta for v in ours.values())
    dropped = {k for k in mast3r_manifest if k == "mask_token" or "layer_rn." in k or "refinenet4.resConfUnit1" in k}
    assert len(dropped) == 1 + 8 + 8
    assert len(ours) == len(mast3r_manifest) - len(dropped)
    # 688,638,856 unique official parameters (reference §3.7) minus the unused mask token and refinenet4 RCU1s.
    unused = 768 + 2 * (2 * (256 * 256 * 9 + 256))
    assert _param_count(model) == 688_638_856 - unused
    assert (model.patch_size, model.image_size) == (16, 512)


def test_hf_key_set_without_aliases_maps_completely(mast3r_manifest):
    state = {k: v for k, v in _meta_state(mast3r_manifest).items() if "scratch.layer_rn." not in k}
    _, kwargs = parse_constructor(RELEASE)
    config = json.loads(json.dumps({**kwargs, "desc_mode": "norm"}))  # as config.json stores it (lists, Infinity)
    assert config["depth_mode"] == ["exp", -math.inf, math.inf]
    model = _load_mast3r(state, config, MAST3R_HF)
    assert len(model.state_dict()) == 1017 - 17
    assert model.config.head.desc_dim == 24 and model.config.head.two_confs
