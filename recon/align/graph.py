"""The pair graph: maximum spanning tree, connected components and a breadth-first order from a central root."""

from __future__ import annotations

import logging
from collections import deque

import numpy as np
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components, minimum_spanning_tree

logger = logging.getLogger(__name__)


def maximum_spanning_tree(scores: np.ndarray) -> list[tuple[int, int]]:
    """Undirected edges of a maximum spanning forest of a symmetric score matrix.

    Args:
        scores: ``[N, N]`` non-negative pair scores; 0 means "no edge".

    Returns:
        ``[(a, b)]`` with ``a < b``, ``N - (#components)`` edges.
    """
    S = np.maximum(scores, scores.T)
    np.fill_diagonal(S, 0)
    # scipy minimises and treats 0 as "no edge", so map every existing score into a strictly positive cost
    # that decreases with the score.
    cost = np.where(S > 0, S.max() + 1.0 - S, 0.0)
    T = minimum_spanning_tree(csr_matrix(cost)).tocoo()
    return sorted((min(a, b), max(a, b)) for a, b in zip(T.row.tolist(), T.col.tolist(), strict=True))


def components(scores: np.ndarray) -> np.ndarray:
    """``[N]`` component label of every view in the graph of positive scores."""
    S = np.maximum(scores, scores.T) > 0
    return connected_components(csr_matrix(S), directed=False)[1]


def _bfs(adj: list[list[int]], root: int) -> dict[int, int]:
    dist = {root: 0}
    q = deque([root])
    while q:
        a = q.popleft()
        for b in adj[a]:
            if b not in dist:
                dist[b] = dist[a] + 1
                q.append(b)
    return dist


def tree_order(n: int, edges: list[tuple[int, int]], nodes: list[int], root: int | None = None):
    """Orient a tree from its centre (or a given root) and list its edges parent-first.

    The centre (smallest eccentricity, ties to the lowest index) keeps chains of registrations short, which
    limits the drift of a chained initialisation.

    Args:
        n: number of views.
        edges: undirected tree edges.
        nodes: the views of this tree (one connected component).
        root: force the root, else the tree centre.

    Returns:
        ``(root, [(parent, child)])`` in breadth-first order.
    """
    adj: list[list[int]] = [[] for _ in range(n)]
    for a, b in edges:
        adj[a].append(b)
        adj[b].append(a)
    if root is None:
        ecc = {v: max(_bfs(adj, v).values()) for v in nodes}
        root = min(nodes, key=lambda v: (ecc[v], v))
    order: list[tuple[int, int]] = []
    seen = {root}
    q = deque([root])
    while q:
        a = q.popleft()
        for b in sorted(adj[a]):
            if b not in seen:
                seen.add(b)
                order.append((a, b))
                q.append(b)
    return root, order
