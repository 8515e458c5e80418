"""One unique match set per unordered pair, merged from both decoding orders (official extract_correspondences)."""

import numpy as np
import torch
import torch.nn.functional as F

from recon.correspondences import match_unordered_pairs
from recon.inference import PairStore
from recon.matching import match_pair
from recon.types import PairPrediction

H, W = 48, 64


def _field(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randn(1, 16, H // 6 + 2, W // 6 + 2, generator=g)
    return F.normalize(F.interpolate(coarse, size=(H, W), mode="bicubic")[0].permute(1, 2, 0), dim=-1)


def _pred(i, j, desc_i, desc_j, qconf_i, qconf_j) -> PairPrediction:
    z = torch.ones(H, W)
    pts = torch.zeros(H, W, 3)
    return PairPrediction(i, j, pts, pts, z * 2, z * 2, desc_i, desc_j, qconf_i, qconf_j)


def _set(m):
    return {tuple(a) + tuple(b) for a, b in zip(m.xy_i.tolist(), m.xy_j.tolist(), strict=True)}


def test_both_directions_agree_gives_each_pixel_pair_once():
    A = _field(0)
    B = torch.roll(A, shifts=(2, 3), dims=(0, 1))  # view 1 = view 0 shifted: both directions find the same pairs
    q0, q1 = torch.rand(H, W) + 1, torch.rand(H, W) + 1
    fwd = _pred(0, 1, A, B, q0, q1)
    # the reverse decoding sees the same descriptors but other descriptor confidences
    rev = _pred(1, 0, B, A, q1 * 3, q0 * 3)
    one_direction = match_pair(fwd)
    assert len(one_direction) > 20

    for preds in ([fwd, rev], PairStore()):
        if isinstance(preds, PairStore):
            preds.append(fwd)
            preds.append(rev)
        out = match_unordered_pairs(preds)
        assert len(out) == 1 and (out[0].i, out[0].j) == (0, 1)
        m = out[0]
        # the old pipeline handed match_pair(fwd) AND match_pair(rev) to the aligner: every pair twice
        assert _set(m) == _set(one_direction) and len(_set(m)) == len(m)
        # the confidence is the first occurrence's (from (0, 1)'s own maps), as official merge_corres
        np.testing.assert_allclose(m.conf, one_direction.conf, rtol=1e-6)


def test_union_when_directions_differ_and_single_order_pairs():
    A, B, C = _field(1), _field(2), _field(3)
    q = torch.ones(H, W)
    fwd = _pred(0, 1, A, B, q, q)
    rev = _pred(1, 0, C, A, q, q)  # another descriptor map for view 1 in the reverse decoding
    lone = _pred(2, 0, C, A, q, q)  # only one order decoded
    out = match_unordered_pairs([fwd, rev, lone])
    assert [(m.i, m.j) for m in out] == [(0, 1), (2, 0)]
    union = _set(match_pair(fwd)) | {(a, b, c, d) for c, d, a, b in _set(match_pair(rev))}
    assert _set(out[0]) == union and len(out[0]) == len(union)
    assert _set(out[1]) == _set(match_pair(lone))
