"""Scene graphs: counts, official semantics, edge cases, retrieval on planted structure, determinism."""

import logging
from itertools import combinations

import numpy as np
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
from recon.retrieval import fps_pairs


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
        assert make_pairs(4, "retrieval-0-10", tokens=tokens) == make_pairs(4, "complete")
        assert make_pairs(4, "retrieval-10-0", tokens=tokens) == make_pairs(4, "complete")
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
            (4, "retrieval-0-0", {}, "cannot both be 0"),
            (4, "retrieval-2-3", {}, "needs the images' patch tokens"),
            (4, "retrieval-10", {}, r"ambiguous: write retrieval-Na-k .* e\.g\. retrieval-20-11"),
            (4, "complete", {"tokens": [torch.randn(3, 4)] * 3}, "3 token tensors for 4 images"),
        ],
    )
    def test_errors(self, n, graph, kw, msg):
        with pytest.raises(ValueError, match=msg):
            make_pairs(n, graph, **kw)

    def test_parse(self):
        assert parse_graph("swin-4-noncyclic") == GraphSpec("swin", k=4, cyclic=False)
        assert parse_graph("retrieval-7-3") == GraphSpec("retrieval", k=3, m=7)  # official order: Na, then k
        assert parse_graph(" Retrieval-7-3 ").name == "retrieval-7-3"
        assert parse_graph("retrieval") == GraphSpec("retrieval")
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
        pairs, keys = retrieval_pairs(tokens, n_key=4, k=5, seed=0)  # k counts the image itself
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
        pairs = make_pairs(len(tokens), "retrieval-5-3", tokens=tokens)
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
        # the start is np.random.default_rng(seed).integers(n): reproducible, where the official one is not
        assert retrieval_pairs(tokens, 3, 3, seed=7)[1][0] == np.random.default_rng(7).integers(18)
        assert len(starts) > 1, "the seed chooses the farthest-point start"

    def test_demo_defaults(self):
        tokens, _ = planted_tokens(n_clusters=2, per_cluster=5, seed=2)
        # "retrieval" alone: the MASt3R demo's Na = min(20, n) key images, k = min(n - 1, 10): complete for n <= 20
        pairs, keys = retrieval_pairs(tokens)
        assert sorted(keys) == list(range(10)) and pairs == make_pairs(10, "complete")
        assert make_pairs(10, "retrieval", tokens=tokens) == pairs

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
    def test_complete_while_it_fits(self):
        # no image-count cap any more: 100 images stay complete when their 4950 pairs fit the budget
        assert choose_graph(100, memory_bytes=4950 * 2 * 2**20, bytes_per_pair=2**20)[0] == "complete"
        name, why = choose_graph(100, has_tokens=True, memory_bytes=4950 * 2**20, bytes_per_pair=2**20)
        assert name.startswith("retrieval-") and "exceeds" in why and "\n" not in why

    def test_small_set_is_complete(self, caplog):
        with caplog.at_level(logging.INFO, logger="recon.pairs"):
            pairs = make_pairs(6, "auto", memory_bytes=64 * 2**30)
        assert pairs == make_pairs(6, "complete")
        assert "auto -> complete" in caplog.text and "6 images" in caplog.text

    def test_large_set_uses_tokens_when_given(self, caplog):
        tokens, _ = planted_tokens(n_clusters=10, per_cluster=4, seed=5)
        with caplog.at_level(logging.INFO, logger="recon.pairs"):
            pairs = make_pairs(40, "auto", tokens=tokens, memory_bytes=400 * 2**20, bytes_per_pair=2**20)
        assert "auto -> retrieval-12-3" in caplog.text and "40 images" in caplog.text
        assert pairs == make_pairs(40, "retrieval-12-3", tokens=tokens) and len(pairs) <= 200

    def test_large_set_without_tokens_uses_logwin(self):
        name, why = choose_graph(100, memory_bytes=2 * 2**30, bytes_per_pair=2**20)
        assert name == "logwin-5" and "no tokens" in why

    def test_memory_limits_the_graph(self):
        per_pair = 10 * 2**20
        # 12 images = 66 pairs = 660 MiB: does not fit in half of 1 GiB, fits in half of 2 GiB
        assert choose_graph(12, memory_bytes=2**30, bytes_per_pair=per_pair)[0] != "complete"
        assert choose_graph(12, memory_bytes=2 * 2**30, bytes_per_pair=per_pair)[0] == "complete"
        tokens, _ = planted_tokens(n_clusters=20, per_cluster=10, seed=6)
        for gib in (2, 4, 8, 64):
            budget = gib * 2**30 // 2 // per_pair  # pairs that fit
            name, _ = choose_graph(200, has_tokens=True, memory_bytes=gib * 2**30, bytes_per_pair=per_pair)
            spec = parse_graph(name)
            assert 2 <= spec.k <= 11 and 1 <= spec.m <= 20
            assert len(make_pairs(200, name, tokens=tokens)) <= max(budget, 2 * 200)

    def test_describe(self):
        line = describe_graph(8, "swin-2", make_pairs(8, "swin-2"))
        assert line.startswith("swin-2 over 8 images") and "16 pairs, 32 decoder passes" in line
        assert "wrapping" not in describe_graph(8, "logwin-2-noncyclic")


class TestOfficialRetrievalGraph:
    """``retrieval-Na-k`` against the official ``make_pairs_fps`` logic on a fixed similarity matrix.

    Two groups {0, 1, 2} and {3, 4, 5}; ``dist = 1 - sim``:

    ====  ====  ====  ====  ====  ====  ====
          0     1     2     3     4     5
    0     0     .10   .20   .90   .80   .85
    1     .10   0     .15   .70   .95   .75
    2     .20   .15   0     .65   .88   .78
    3     .90   .70   .65   0     .30   .40
    4     .80   .95   .88   .30   0     .05
    5     .85   .75   .78   .40   .05   0
    ====  ====  ====  ====  ====  ====  ====

    The expected sets below were worked out by hand from the official rules (reference/mast3r.md §5).
    """

    DIST = np.array(
        [
            [0, 0.10, 0.20, 0.90, 0.80, 0.85],
            [0.10, 0, 0.15, 0.70, 0.95, 0.75],
            [0.20, 0.15, 0, 0.65, 0.88, 0.78],
            [0.90, 0.70, 0.65, 0, 0.30, 0.40],
            [0.80, 0.95, 0.88, 0.30, 0, 0.05],
            [0.85, 0.75, 0.78, 0.40, 0.05, 0],
        ]
    )

    def pairs(self, graph, start):
        spec = parse_graph(graph)
        return fps_pairs(1 - self.DIST, spec.m, spec.k, start=start)

    def test_two_keys_two_neighbours_from_0(self):
        # FPS from 0: farthest is 3. Keys {0, 3}: (0,3). Non-keys to the nearest key: 1->0, 2->0, 4->3, 5->3.
        # 2 nearest counting itself: 0->1, 1->0, 2->1, 3->4, 4->5, 5->4.
        pairs, keys = self.pairs("retrieval-2-2", start=0)
        assert keys == [0, 3]
        assert set(pairs) == {(0, 3), (0, 1), (0, 2), (3, 4), (3, 5), (1, 2), (4, 5)}

    def test_two_keys_two_neighbours_from_4(self):
        # FPS from 4: farthest is 1. Keys {4, 1}: (1,4). Non-keys: 0->1, 2->1, 3->4, 5->4. k-NN as above.
        pairs, keys = self.pairs("retrieval-2-2", start=4)
        assert keys == [4, 1]
        assert set(pairs) == {(1, 4), (0, 1), (1, 2), (3, 4), (4, 5)}

    def test_three_keys_and_k1_adds_nothing(self):
        # FPS from 0: 3, then min(d0, d3) = [0, .1, .2, 0, .3, .4] -> 5. Keys {0, 3, 5} complete.
        # Non-keys: 1->0, 2->0, 4->5. k = 1 is the image itself: no pair.
        pairs, keys = self.pairs("retrieval-3-1", start=0)
        assert keys == [0, 3, 5]
        assert set(pairs) == {(0, 3), (0, 5), (3, 5), (0, 1), (0, 2), (4, 5)}

    def test_no_keys_is_knn_only(self):
        # Na = 0: only the 3 nearest counting itself, i.e. two cliques, not connected to each other
        pairs, keys = self.pairs("retrieval-0-3", start=0)
        assert keys == [] and set(pairs) == {(0, 1), (0, 2), (1, 2), (3, 4), (3, 5), (4, 5)}

    def test_more_keys_than_images_is_complete(self):
        pairs, keys = self.pairs("retrieval-10-1", start=2)
        assert sorted(keys) == list(range(6)) and pairs == make_pairs(6, "complete")

    def test_make_pairs_takes_a_similarity_matrix(self):
        sim = 1 - self.DIST
        seed = next(s for s in range(100) if np.random.default_rng(s).integers(6) == 0)  # a seed that starts at 0
        assert set(make_pairs(6, "retrieval-2-2", sim=sim, seed=seed)) == set(self.pairs("retrieval-2-2", 0)[0])
        with pytest.raises(ValueError, match=r"sim must be \[6, 6\]"):
            make_pairs(6, "retrieval-2-2", sim=sim[:5, :5])
