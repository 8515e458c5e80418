"""Kinematic tree of the relative camera poses (official ``sparse_global_alignment`` kinematic modes and
``compute_min_spanning_tree``; reference/mast3r.md §8.5).

Each camera's pose is parametrised relative to its parent in a spanning tree, so a change near the root moves
whole branches rigidly. ``"mst"`` takes the maximum spanning tree of the match counts. ``"hclust-<linkage>"``
clusters views hierarchically on ``1 - min(1, n_matches / (3 * min(n_anchors_i, n_anchors_j)))`` (2 where a pair
has no match) and links the representatives of every merge; the representative of a merged cluster is the member
with the larger summed affinity, whose affinity row becomes the element-wise max of both. The root is the node
farthest from any leaf.
"""

from __future__ import annotations

import numpy as np
import scipy.cluster.hierarchy as sch
from scipy import sparse
from scipy.sparse import csgraph


def _bfs_ranks(tree, start: int) -> np.ndarray:
    order, _ = csgraph.breadth_first_order(tree, start, directed=False)
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(len(order))
    return ranks


def spanning_tree(scores: np.ndarray) -> tuple[int, list[tuple[int, int]]]:
    """Maximum spanning tree of ``scores`` rooted at the node farthest from any leaf.

    Args:
        scores: ``[N, N]`` symmetric non-negative edge weights (0 = no edge); the graph must be connected.

    Returns:
        ``(root, edges)``: ``edges`` are ``(parent, child)`` in breadth-first order from ``root`` (N - 1 of them).
    """
    n = len(scores)
    graph = sparse.dok_array((n, n))
    for i, j in zip(*np.nonzero(scores), strict=True):
        graph[i, j] = -float(scores[i, j])
    mst = csgraph.minimum_spanning_tree(graph)
    # Three BFS passes (official): from 0, from the farthest node found, and back; the node whose smaller rank
    # is the largest sits in the middle of the longest path.
    ranks1 = _bfs_ranks(mst, 0)
    ranks2 = _bfs_ranks(mst, int(ranks1.argmax()))
    ranks1 = _bfs_ranks(mst, int(ranks2.argmax()))
    root = int(np.minimum(ranks1, ranks2).argmax())
    order, pred = csgraph.breadth_first_order(mst, root, directed=False)
    if len(order) != n:
        raise ValueError(f"the pair graph is not connected ({len(order)} of {n} views reachable)")
    return root, [(int(pred[k]), int(k)) for k in order[1:]]


def hclust_tree(n_matches: np.ndarray, n_anchors: np.ndarray, linkage: str = "ward") -> np.ndarray:
    """The 0/1 adjacency ``[N, N]`` (ones on the diagonal) of the official hierarchical-clustering tree.

    Args:
        n_matches: ``[N, N]`` symmetric match counts per pair (0 = no pair).
        n_anchors: ``[N]`` anchors per view (``(W // s) * (H // s)``).
        linkage: scipy linkage method.
    """
    n = len(n_matches)
    cap = 3 * np.minimum(n_anchors[:, None], n_anchors[None, :]).astype(np.float32)
    pws = np.minimum(n_matches.astype(np.float32) / cap, 1)
    np.fill_diagonal(pws, 1)
    dist = np.where(pws != 0, 1 - pws, 2)
    Z = sch.linkage(sch.distance.squareform(dist), method=linkage)
    tree = np.eye(n)
    rep = {i: i for i in range(n)}
    for k, (a, b) in enumerate(Z[:, :2].astype(int)):
        a, b = rep[a], rep[b]
        tree[a, b] = tree[b, a] = 1
        best = a if pws[a].sum() > pws[b].sum() else b
        rep[n + k] = best
        pws[best] = np.maximum(pws[a], pws[b])
    return tree


def kinematic_tree(
    n_matches: np.ndarray, n_anchors: np.ndarray, mode: str = "hclust-ward"
) -> tuple[int, list[tuple[int, int]]]:
    """``(root, [(parent, child), ...])`` for kinematic mode ``"mst"`` or ``"hclust-<linkage>"``."""
    if mode == "mst":
        return spanning_tree(n_matches)
    if mode.startswith("hclust-"):
        return spanning_tree(hclust_tree(n_matches, n_anchors, mode.split("-", 1)[1]))
    raise ValueError(f"bad kinematic_mode {mode!r}")
