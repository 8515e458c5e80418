"""ASMK scores and the retrieval head (official MASt3R retrieval semantics), on hand-checkable inputs."""

import argparse
import pickle

import numpy as np
import pytest
import torch

from recon.asmk import (
    ASMKParams,
    CodebookError,
    RetrievalHead,
    aggregate,
    asmk_scores,
    codebook_path,
    load_codebook,
    quantize,
    retrieval_similarity,
    similarity_matrix,
)

# Two centroids in 4-D; packed bits are compared over 32 bits (one uint32, as the official packing).
C = np.array([[0, 0, 0, 0], [10, 10, 10, 10]], np.float32)
A = np.array([[1, -1, 1, -1]], np.float32)  # word 0, residual signs + - + -
B = np.array([[2, -1, 3, -2]], np.float32)  # word 0, same signs as A
Cx = np.array([[-1, 1, -1, 1]], np.float32)  # word 0, all 4 signs flipped
D = np.array([[11, 9, 11, 9]], np.float32)  # word 1, residual + - + -


def agg(x, k):
    return aggregate(x, quantize(x, C, k), C)


def test_hand_checked_scores_single_assignment():
    db = [agg(x, 1) for x in (A, B, Cx, D)]
    s = asmk_scores(db, db)
    # A~B: same bits -> 1^3 = 1 (one word each, norm sqrt(1*1))
    assert s[0, 1] == pytest.approx(1.0)
    # A~Cx: 4 of 32 bits differ -> 1 - 2*4/32 = 0.75 -> 0.75^3
    assert s[0, 2] == pytest.approx(0.421875)
    # A~D: no shared word
    assert s[0, 3] == 0.0
    np.testing.assert_allclose(np.diag(s), 1.0)


def test_hand_checked_multiple_assignment_at_query():
    q = agg(A, 2)  # A falls in both words; word 1's residual A - c1 = [-9, -11, -9, -11]: no positive bit
    assert q.words.tolist() == [0, 1]
    s = asmk_scores([q], [agg(A, 1), agg(D, 1)])
    # vs A: word 0 matches exactly (1), word 1 absent -> 1 / sqrt(2 query words * 1)
    assert s[0, 0] == pytest.approx(1 / np.sqrt(2))
    # vs D: word 1, bits 0000 vs 1010 -> 2 of 32 differ -> 1 - 4/32 = 0.875 -> 0.875^3 / sqrt(2)
    assert s[0, 1] == pytest.approx(0.875**3 / np.sqrt(2))


def test_negative_word_similarity_is_dropped_not_cubed():
    c = np.zeros((1, 32), np.float32)
    x = np.where(np.arange(32) % 2 == 0, 1.0, -1.0).astype(np.float32)[None]
    a, b = aggregate(x, np.zeros((1, 1), int), c), aggregate(-x, np.zeros((1, 1), int), c)
    assert asmk_scores([a], [b])[0, 0] == 0.0  # s = -1 is below the threshold 0 (not (-1)^3 = -1)
    assert asmk_scores([a], [b], ASMKParams(similarity_threshold=-1))[0, 0] == pytest.approx(-1.0)


def test_similarity_matrix_is_query_vs_database():
    s = similarity_matrix([A, B, D], C)  # queries with 5 (here: both) words, database with 1
    assert s.shape == (3, 3) and s[0, 1] == pytest.approx(1 / np.sqrt(2))


def _write_codebook(path, obj):
    path.write_bytes(pickle.dumps(obj))
    return path


def test_codebook_loads_plain_arrays_and_refuses_code(tmp_path):
    good = {"type": "Codebook", "params": {"size": 2}, "state": {"centroids": C.astype(np.float64)}}
    np.testing.assert_array_equal(load_codebook(_write_codebook(tmp_path / "a.pkl", good)), C)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(CodebookError, match="only numpy arrays"):
        load_codebook(_write_codebook(tmp_path / "b.pkl", {"state": {"centroids": Evil()}}))
    with pytest.raises(CodebookError, match="centroids"):
        load_codebook(_write_codebook(tmp_path / "c.pkl", {"state": {}}))
    assert codebook_path("/x/m_a_b_retrieval_trainingfree.pth").name == "m_a_b_retrieval_codebook.pkl"


def test_retrieval_head_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    dim, hd = 8, 6
    head = RetrievalHead(dim, [hd, 4], prewhiten=True, postwhiten=True, residual=False, nfeat=3)
    for p in head.parameters():
        p.data = torch.randn_like(p)
    args = argparse.Namespace(
        hdims=f"{hd}_4", prewhiten=0, postwhiten=0, residual=False, featweights="l2norm", nfeat=3, nclusters=2
    )
    ckpt = tmp_path / "tiny_retrieval_trainingfree.pth"
    torch.save({"model": head.state_dict(), "args": args}, ckpt)
    loaded = RetrievalHead.from_checkpoint(ckpt)
    tokens = torch.randn(10, dim)
    out = loaded(tokens)
    # by hand: whiten, Linear-LayerNorm-GELU-Linear, keep the 3 tokens of largest norm, post-whiten
    x = ((tokens.double() - head.prewhiten.m) @ head.prewhiten.p).float()
    proj = head.projector(x)
    keep = proj.norm(dim=-1).topk(3).indices
    want = ((proj[keep].double() - head.postwhiten.m) @ head.postwhiten.p).float()
    torch.testing.assert_close(out, want)
    # and the whole official path from tokens to an [n, n] score matrix
    centroids = np.random.default_rng(0).standard_normal((2, 4))
    pickle_path = _write_codebook(codebook_path(ckpt), {"state": {"centroids": centroids}})
    sim = retrieval_similarity([torch.randn(10, dim) for _ in range(3)], ckpt)
    assert sim.shape == (3, 3) and np.isfinite(sim).all() and pickle_path.exists()
