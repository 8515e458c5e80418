"""``plan_pairs``: the pair count of a graph in closed form, equal to ``make_pairs`` and bounded for huge k."""

import pytest
import torch

from recon.errors import UserError
from recon.pairs import GraphError, make_pairs, plan_pairs

GRAPHS = ["complete", "swin-1", "swin-3", "swin-7-noncyclic", "swin-40", "logwin-1", "logwin-3", "logwin-9",
          "logwin-4-noncyclic", "oneref-0", "oneref-1"]  # fmt: skip


@pytest.mark.parametrize("n", [2, 3, 4, 5, 8, 11, 16, 33])
@pytest.mark.parametrize("graph", GRAPHS)
def test_count_equals_make_pairs(graph, n):
    plan = plan_pairs(graph, n)
    assert plan.exact
    assert plan.n_pairs == len(make_pairs(n, graph))
    assert plan.n_decodes == 2 * plan.n_pairs


@pytest.mark.parametrize("n", [3, 9, 20])
@pytest.mark.parametrize("graph", ["retrieval", "retrieval-2-3", "retrieval-3-2", "retrieval-1-50", "retrieval-0-4"])
def test_retrieval_is_an_upper_bound(graph, n):
    gen = torch.Generator().manual_seed(n)
    tokens = [torch.randn(5, 8, generator=gen) for _ in range(n)]
    plan = plan_pairs(graph, n)
    got = len(make_pairs(n, graph, tokens=tokens))
    assert got <= plan.n_pairs
    if plan.exact:
        assert got == plan.n_pairs


@pytest.mark.parametrize("graph", ["swin-1000000000", "swin-1000000000-noncyclic"])
def test_huge_window_is_bounded_and_complete(graph):
    assert plan_pairs(graph, 6).n_pairs == 15
    assert make_pairs(6, graph) == make_pairs(6, "complete")  # returns at once: offsets are clamped to n - 1
    assert plan_pairs(graph, 10**6).n_pairs == 10**6 * (10**6 - 1) // 2  # closed form: no enumeration


def test_huge_logwin_keeps_offsets_below_n():
    # offsets 1, 2, 4 (8 and beyond would wrap onto them): cyclic distances {1, 2}
    assert make_pairs(6, "logwin-1000000000") == make_pairs(6, "logwin-3")
    assert plan_pairs("logwin-1000000000", 6).n_pairs == 12


def test_auto_names_what_it_picks():
    plan = plan_pairs("auto", 5, memory_bytes=1 << 40)
    assert plan.graph == "auto -> complete" and plan.n_pairs == 10


@pytest.mark.parametrize(
    ("graph", "n", "msg"),
    [
        ("swin-0", 5, "window size must be >= 1"),
        ("star", 5, "valid: complete"),
        ("swin-" + "9" * 5000, 5, "is not a graph name"),  # bounded before int() parses it
        ("oneref-7", 5, "out of range for 5 images"),
        ("complete", 1, "at least 2 images"),
    ],
)
def test_bad_graphs_are_user_errors(graph, n, msg):
    with pytest.raises(GraphError, match=msg) as info:
        plan_pairs(graph, n)
    assert isinstance(info.value, UserError) and isinstance(info.value, ValueError)
