"""The retrieval scene graph ``retrieval-Na-k``, with the official meaning (MASt3R ``make_pairs_fps``).

Given an ``[n, n]`` image similarity matrix (ASMK scores of the released retrieval model, ``recon.asmk``, or recon's
pooled patch tokens when the backbone has no retrieval head, ``recon.pairs.global_descriptors``) and
``dist = 1 - sim`` (reference/mast3r.md §5):

1. ``Na`` key images by farthest-point sampling: start at one image, then repeatedly take the image farthest from
   those already chosen (``argmax`` of the min distance; ties to the lowest index);
2. a complete graph among the key images;
3. every other image linked to its nearest key image;
4. every image linked to the ``k`` first entries of ``argsort(dist[i])``, which include the image itself when its
   self-distance is the smallest (so ``k`` counts itself, and ``k = 1`` usually adds nothing);
5. self-pairs dropped, pairs kept once as ``(min, max)``.

One deliberate difference: the official start of the farthest-point sampling is ``np.random.choice`` with no seed,
so the same images give different graphs from run to run; recon draws it from ``seed`` (the run's ``--seed``), and
sorts ``dist`` rows with a stable sort (numpy's default quicksort orders ties arbitrarily).
"""

from __future__ import annotations

import numpy as np

# MASt3R demo defaults: "Num. key images" min(20, N), "Num neighbors" min(N - 1, 10).
DEMO_KEY_IMAGES = 20
DEMO_NEIGHBOURS = 10


def farthest_point_sampling(dist: np.ndarray, n_key: int, start: int) -> list[int]:
    """``n_key`` distinct indices (at most ``len(dist)``), each the farthest from those already chosen.

    Args:
        dist: ``[n, n]`` distances.
        n_key: how many to choose.
        start: the first index.
    """
    chosen = [int(start)]
    d_min = np.asarray(dist[start], np.float64).copy()
    for _ in range(min(n_key, len(dist)) - 1):
        nxt = int(np.argmax(d_min))  # ties: lowest index, as numpy's argmax in the official code
        if nxt in chosen:  # every remaining image is at distance <= 0: nothing farther to add
            break
        chosen.append(nxt)
        d_min = np.minimum(d_min, dist[nxt])
    return chosen


def fps_pairs(
    sim: np.ndarray, n_key: int, k: int, seed: int = 0, start: int | None = None
) -> tuple[list[tuple[int, int]], list[int]]:
    """The official retrieval graph of a similarity matrix (module docstring).

    Args:
        sim: ``[n, n]`` similarities (higher = more alike); not necessarily symmetric.
        n_key: ``Na``, number of key images (0: none, then only the k-NN links).
        k: neighbours per image from ``argsort(1 - sim[i])``, the image itself included (0: none).
        seed: picks the farthest-point start, ``np.random.default_rng(seed).integers(n)``.
        start: the farthest-point start itself (overrides ``seed``).

    Returns:
        ``(pairs, key_images)``: sorted unique ``(i, j)`` with ``i < j``, and the key images in sampling order.
    """
    sim = np.asarray(sim, np.float64)
    n = len(sim)
    if sim.shape != (n, n) or n < 2:
        raise ValueError(f"sim must be a square [n, n] matrix with n >= 2, got {sim.shape}")
    if n_key < 0 or k < 0:
        raise ValueError(f"Na and k must be >= 0, got {n_key} and {k}")
    dist = 1.0 - sim
    pairs: set[tuple[int, int]] = set()
    keys: list[int] = []
    if n_key > 0:
        first = int(np.random.default_rng(seed).integers(n)) if start is None else int(start)
        keys = farthest_point_sampling(dist, n_key, first)
        pairs |= {(min(a, b), max(a, b)) for a in keys for b in keys}
        key_arr = np.asarray(keys)
        for i in range(n):
            if i not in keys:
                j = int(key_arr[np.argmin(dist[i, key_arr])])
                pairs.add((min(i, j), max(i, j)))
    for i in range(n):
        for j in np.argsort(dist[i], kind="stable")[:k]:
            pairs.add((min(i, int(j)), max(i, int(j))))
    return sorted(p for p in pairs if p[0] != p[1]), keys
