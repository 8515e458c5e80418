"""Scene graphs: counts, official semantics, edge cases, retrieval on planted structure, determinism."""

import logging
import math
from itertools import combinations

import pytest
import torch

from recon.pairs import (
    GraphSpec,
    choose_graph,
    describe_graph,
    global_descriptors,
    make_pairs,
    parse_graph,
    retrieval_pairs,
)


def check_canonical(pairs, n):
    assert pairs == sorted(set(pairs)), "sorted, no duplicates"
    assert all(0 <= i < j < n for i, j in pairs), "i < j, in range, no self-pairs"


def cyclic_distance(i, j, n):
    return min(abs(i - j), n - abs(i - j))


class TestCounts:
    @pytest.mark.parametrize("n", [2, 3, 7, 12])
    def test_complete(self, n):
        pairs = make_pairs(n, "complete")
        check_canonical(pairs, n)
        assert pairs == list(combinations(range(n), 2)) and len(pairs) == n * (n - 1) // 2

    @pytest.mark.parametrize(("graph", "count"), [("swin-2", 16), ("swin-2-noncyclic", 13)])
    def test_swin_official_counts(self, graph, count):
        # reference/mast3r.md §5: N=8, k=2 gives 16 pairs cyclic, 13 noncyclic
        assert len(make_pairs(8, graph)) == count

    @pytest.mark.parametrize(("graph", "count"), [("logwin-3", 20), ("logwin-3-noncyclic", 17)])
    def test_logwin_official_counts(self, graph, count):
        assert len(make_pairs(8, graph)) == count

    @pytest.mark.parametrize("n", [5, 9, 16])
    @pytest.mark.parametrize("k", [1, 2, 3])
    def test_swin_semantics(self, n, k):
        cyc = make_pairs(n, f"swin-{k}")
        non = make_pairs(n, f"swin-{k}-noncyclic")
        check_canonical(cyc, n)
        check_canonical(non, n)
        assert set(cyc) == {(i, j) for i, j in combinations(range(n), 2) if cyclic_distance(i, j, n) <= k}
        assert set(non) == {(i, j) for i, j in combinations(range(n), 2) if j - i <= k}

    @pytest.mark.parametrize("n", [6, 11, 20])
    def test_logwin_semantics(self, n):
        offsets = {1, 2, 4}
        assert set(make_pairs(n, "logwin-3")) == {
            (i, j) for i, j in combinations(range(n), 2) if cyclic_distance(i, j, n) in offsets
        }
        assert set(make_pairs(n, "logwin-3-noncyclic")) == {
            (i, j) for i, j in combinations(range(n), 2) if j - i in offsets
        }

    def test_oneref(self):
        assert make_pairs(5, "oneref-2") == [(0, 2), (1, 2), (2, 3), (2, 4)]
        assert make_pairs(4, "oneref") == [(0, 1), (0, 2), (0, 3)]

    def test_defaults_follow_official(self):
        assert make_pairs(10, "swin") == make_pairs(10, "swin-3")
        assert make_pairs(10, "logwin") == make_pairs(10, "logwin-3")
        assert make_pairs(10, "SWIN-3") == make_pairs(10, "swin-3")


class TestEdgeCases:
    @pytest.mark.parametrize("graph", ["complete", "swin-1", "swin-5", "logwin-4", "oneref-1", "swin-3-noncyclic"])
    def test_two_images(self, graph):
        assert make_pairs(2, graph) == [(0, 1)]

    @pytest.mark.parametrize("graph", ["swin-10", "logwin-6", "swin-10-noncyclic"])
    def test_large_k_is_complete_without_self_pairs(self, graph):
        assert make_pairs(5, graph) == make_pairs(5, "complete")

    def test_retrieval_k_at_least_n(self):
        tokens = [torch.randn(6, 8) for _ in range(4)]
        assert make_pairs(4, "retrieval-10", tokens=tokens) == make_pairs(4, "complete")
        assert make_pairs(2, "retrieval-3-5", tokens=tokens[:2]) == [(0, 1)]

    @pytest.mark.parametrize("graph", ["star", "swin-x", "retrieval-a", "complete-3", "", "swin--2"])
    def test_unknown_names_list_valid_ones(self, graph):
        with pytest.raises(ValueError, match="valid: complete, swin-k"):
            make_pairs(5, graph)

    @pytest.mark.parametrize(
        ("n", "graph", "kw", "msg"),
        [
            (1, "complete", {}, "at least 2 images"),
            (4, "oneref-4", {}, "out of range"),
            (4, "swin-0", {}, "window size must be >= 1"),
            (4, "retrieval-0", {}, "must be >= 1"),
            (4, "retrieval-2", {}, "needs the images' patch tokens"),
            (4, "complete", {"tokens": [torch.randn(3, 4)] * 3}, "3 token tensors for 4 images"),
        ],
    )
    def test_errors(self, n, graph, kw, msg):
        with pytest.raises(ValueError, match=msg):
            make_pairs(n, graph, **kw)

    def test_parse(self):
        assert parse_graph("swin-4-noncyclic") == GraphSpec("swin", k=4, cyclic=False)
        assert parse_graph("retrieval-7-3") == GraphSpec("retrieval", k=7, m=3)
        assert parse_graph(" Retrieval-7 ").name == "retrieval-7"
        assert parse_graph("logwin-2-noncyclic").name == "logwin-2-noncyclic"


def planted_tokens(n_clusters=4, per_cluster=5, dim=32, seed=0, shuffle=True):
    """Token sets whose images form ``n_clusters`` groups; returns ``(tokens, cluster_of_image)``."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_clusters, dim, generator=g) * 3
    common = torch.randn(dim, generator=g) * 5  # a component shared by all images, as ViT tokens have
    labels = [c for c in range(n_clusters) for _ in range(per_cluster)]
    if shuffle:
        labels = [labels[i] for i in torch.randperm(len(labels), generator=g).tolist()]
    tokens = []
    for c in labels:
        n_tok = int(torch.randint(6, 20, (1,), generator=g))  # images of different sizes
        tokens.append(common + centres[c] + torch.randn(n_tok, dim, generator=g))
    return tokens, labels


class TestRetrieval:
    def test_recovers_planted_neighbourhoods(self):
        tokens, labels = planted_tokens()
        n = len(tokens)
        pairs, keys = retrieval_pairs(tokens, k=4, m=4, seed=0)
        check_canonical(pairs, n)
        # the 4 key images land in 4 different clusters (farthest-point sampling)
        assert sorted(labels[i] for i in keys) == [0, 1, 2, 3]
        # every non-key edge joins images of the same cluster; the key images are linked together
        for i, j in pairs:
            assert labels[i] == labels[j] or (i in keys and j in keys)
        # each image is linked to all 4 other members of its cluster
        for i in range(n):
            mates = {j for j in range(n) if labels[j] == labels[i] and j != i}
            linked = {b if a == i else a for a, b in pairs if i in (a, b)}
            assert mates <= linked

    def test_graph_is_connected(self):
        tokens, _ = planted_tokens(n_clusters=5, per_cluster=4, seed=3)
        pairs = make_pairs(len(tokens), "retrieval-2", tokens=tokens)
        seen, todo = {0}, [0]
        while todo:
            a = todo.pop()
            for i, j in pairs:
                for u, v in ((i, j), (j, i)):
                    if u == a and v not in seen:
                        seen.add(v)
                        todo.append(v)
        assert seen == set(range(len(tokens)))

    def test_deterministic_from_seed(self):
        tokens, _ = planted_tokens(n_clusters=3, per_cluster=6, seed=1)
        a = make_pairs(18, "retrieval-3-3", tokens=tokens, seed=7)
        b = make_pairs(18, "retrieval-3-3", tokens=[t.clone() for t in tokens], seed=7)
        assert a == b
        starts = {retrieval_pairs(tokens, 3, 3, seed=s)[1][0] for s in range(10)}
        assert len(starts) > 1, "the seed chooses the farthest-point start"

    def test_default_key_count(self):
        tokens, _ = planted_tokens(n_clusters=2, per_cluster=5, seed=2)
        _, keys = retrieval_pairs(tokens, k=2)
        assert len(keys) == math.ceil(math.sqrt(10)) and len(set(keys)) == len(keys)

    def test_global_descriptors(self):
        tokens, labels = planted_tokens(seed=4)
        g = global_descriptors(tokens)
        assert g.shape == (20, 32)
        torch.testing.assert_close(g.norm(dim=1), torch.ones(20), rtol=0, atol=1e-5)
        sim = g @ g.T
        same = torch.tensor([[a == b for b in labels] for a in labels])
        assert sim[same].min() > sim[~same].max()
        with pytest.raises(ValueError, match="one D"):
            global_descriptors([torch.randn(4, 8), torch.randn(4, 6)])


class TestAuto:
    def test_small_set_is_complete(self, caplog):
        with caplog.at_level(logging.INFO, logger="recon.pairs"):
            pairs = make_pairs(6, "auto", memory_bytes=64 * 2**30)
        assert pairs == make_pairs(6, "complete")
        assert "auto -> complete" in caplog.text and "6 images" in caplog.text

    def test_large_set_uses_tokens_when_given(self, caplog):
        tokens, _ = planted_tokens(n_clusters=10, per_cluster=4, seed=5)
        with caplog.at_level(logging.INFO, logger="recon.pairs"):
            pairs = make_pairs(40, "auto", tokens=tokens, memory_bytes=64 * 2**30)
        assert "auto -> retrieval-10" in caplog.text and "40 images" in caplog.text
        assert pairs == make_pairs(40, "retrieval-10", tokens=tokens)

    def test_large_set_without_tokens_uses_logwin(self):
        name, why = choose_graph(100, memory_bytes=64 * 2**30)
        assert name == "logwin-5" and "no tokens" in why

    def test_memory_limits_the_graph(self):
        per_pair = 10 * 2**20
        # 12 images = 66 pairs = 660 MiB: does not fit in half of 1 GiB, fits in half of 2 GiB
        assert choose_graph(12, memory_bytes=2**30, bytes_per_pair=per_pair)[0] != "complete"
        assert choose_graph(12, memory_bytes=2 * 2**30, bytes_per_pair=per_pair)[0] == "complete"
        name, _ = choose_graph(200, has_tokens=True, memory_bytes=2**30, bytes_per_pair=per_pair)
        k = parse_graph(name).k
        assert 1 <= k < 10 and 200 * k * per_pair <= 2**30 // 2 + 200 * per_pair

    def test_describe(self):
        line = describe_graph(8, "swin-2", make_pairs(8, "swin-2"))
        assert line.startswith("swin-2 over 8 images") and "16 pairs, 32 decoder passes" in line
        assert "wrapping" not in describe_graph(8, "logwin-2-noncyclic")
