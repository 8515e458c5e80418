"""Correspondences of one view pair from the FOUR descriptor maps of its two decoder passes (official
``extract_correspondences`` + ``fast_reciprocal_NNs`` + ``merge_corres``; reference/mast3r.md §7).

The decoder runs on ``(a, b)`` and on ``(b, a)``: ``11`` / ``21`` are views a / b from the first pass, ``22`` /
``12`` views b / a from the second. Reciprocal nearest neighbours are searched 11<->21 and 12<->22, each seeded
from both sides, and the four lists are merged into one unique set sorted by ``(pixel in a, pixel in b)``. A
match keeps the confidence of its FIRST occurrence in the order 11->21, 21->11, 12->22, 22->12:
``sqrt(desc_conf_a * desc_conf_b)`` taken from the maps that found it.

``recon.matching.fast_reciprocal_nn`` walks the same basins but caches and re-tiles its nearest-neighbour
queries and keeps the best confidence of a duplicate, so its matches (and their confidences) can differ in
rare ties from the official ones; here every query is the official ``A[rows] @ B.T`` in the official order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from recon.matching import row_max

# Official ``block_size=2**13``: similarity matrices bigger than this squared are computed tile by tile.
BLOCK = 2**13


@dataclass
class PairMatches:
    """Matches of one unordered pair ``(a, b)``.

    Attributes:
        a, b: view indices.
        xy_a, xy_b: ``[M, 2]`` int64 pixel ``(x, y)`` in views a and b, sorted by linear index in a, then in b.
        conf: ``[M]`` float32 match confidence (geometric mean of descriptor confidences).
    """

    a: int
    b: int
    xy_a: torch.Tensor
    xy_b: torch.Tensor
    conf: torch.Tensor

    def __len__(self) -> int:
        return int(self.conf.shape[0])


def _nearest(queries: torch.Tensor, db: torch.Tensor) -> np.ndarray:
    """Largest inner product in ``db [N, D]`` for each row of ``queries [Q, D]`` -> ``[Q]`` indices.

    Ties go to the smallest index (``torch.max``; across tiles the official keeps the earlier tile).
    """
    if queries.shape[0] * db.shape[0] <= BLOCK**2:
        return row_max(queries @ db.T)[1].numpy()
    best = torch.full((queries.shape[0],), -float("inf"), dtype=queries.dtype)
    idx = torch.zeros(queries.shape[0], dtype=torch.int64)
    for i in range(0, queries.shape[0], BLOCK):
        for j in range(0, db.shape[0], BLOCK):
            val, arg = row_max(queries[i : i + BLOCK] @ db[j : j + BLOCK].T)
            better = val > best[i : i + BLOCK]
            best[i : i + BLOCK][better] = val[better]
            idx[i : i + BLOCK][better] = arg[better] + j
    return idx.numpy()


def unique_pairs(idx1: np.ndarray, idx2: np.ndarray, n2: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique ``(idx1, idx2)`` pairs sorted by ``idx1`` then ``idx2``, and the index of each one's FIRST
    occurrence in the input (official ``merge_corres(..., ret_index=True)``, i.e. ``np.unique``)."""
    key = idx1.astype(np.int64) * n2 + idx2.astype(np.int64)
    uniq, first = np.unique(key, return_index=True)
    return uniq // n2, uniq % n2, first


@torch.no_grad()
def reciprocal_nn(desc1: torch.Tensor, desc2: torch.Tensor, subsample: int = 8, max_iter: int = 10):
    """Official ``fast_reciprocal_NNs(desc1, desc2, subsample, ret_xy=False, dist='dot', block_size=2**13)``.

    Args:
        desc1: ``[H1, W1, D]`` unit-norm descriptors of image 1 (computed in float32).
        desc2: ``[H2, W2, D]`` descriptors of image 2.
        subsample: seed grid stride in image 1 (seeds at ``subsample // 2 :: subsample``).
        max_iter: rounds of the ``1 -> 2 -> 1`` walk; walks still moving afterwards are dropped.

    Returns:
        ``(idx1, idx2)``: ``[M]`` int64 linear pixel indices (``y * W + x``) of mutual nearest neighbours,
        unique and sorted by ``idx1`` then ``idx2``.
    """
    H1, W1, D = desc1.shape
    H2, W2, _ = desc2.shape
    A = desc1.reshape(-1, D).float()
    B = desc2.reshape(-1, D).float()
    ys, xs = np.mgrid[subsample // 2 : H1 : subsample, subsample // 2 : W1 : subsample].reshape(2, -1)
    xy1 = np.unique(xs + W1 * ys).astype(np.int64)
    xy2 = np.full_like(xy1, -1)
    old1, old2 = xy1.copy(), xy2.copy()
    notyet = np.ones(len(xy1), dtype=bool)
    for it in range(max_iter):
        if not notyet.any():
            break
        xy2[notyet] = _nearest(A[xy1[notyet]], B)
        notyet &= old2 != xy2  # the walk stopped in image 2: (xy1, xy2) is already reciprocal
        xy1[notyet] = _nearest(B[xy2[notyet]], A)
        notyet &= old1 != xy1  # came back to where it started: reciprocal
        if it + 1 < max_iter:
            old1[:], old2[:] = xy1, xy2
    done = ~notyet
    i1, i2, _ = unique_pairs(xy1[done], xy2[done], H2 * W2)
    return i1, i2


@torch.no_grad()
def extract_correspondences(
    desc: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    qconf: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    subsample: int = 8,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Merged matches of a pair from its four maps (official ``extract_correspondences``).

    Args:
        desc: ``(d11, d21, d22, d12)``: ``[H_a, W_a, D]``, ``[H_b, W_b, D]``, ``[H_b, W_b, D]``, ``[H_a, W_a, D]``.
        qconf: the matching descriptor confidences ``(q11, q21, q22, q12)``, ``[H, W]`` each.
        subsample: seed stride.

    Returns:
        ``(xy_a [M, 2] int64, xy_b [M, 2] int64, conf [M] float32)``.
    """
    d11, d21, d22, d12 = desc
    q11, q21, q22, q12 = (q.float().reshape(-1) for q in qconf)
    Ha, Wa = d11.shape[:2]
    Hb, Wb = d22.shape[:2]
    if d12.shape[:2] != (Ha, Wa) or d21.shape[:2] != (Hb, Wb):
        raise ValueError(f"descriptor maps of one pair disagree in shape: {d11.shape}, {d21.shape}, {d22.shape}")
    idx_a, idx_b, conf_a, conf_b = [], [], [], []
    for A, B, qa, qb in ((d11, d21, q11, q21), (d12, d22, q12, q22)):
        a1, b1 = reciprocal_nn(A, B, subsample)
        b2, a2 = reciprocal_nn(B, A, subsample)
        ia, ib = np.concatenate([a1, a2]), np.concatenate([b1, b2])
        idx_a.append(ia)
        idx_b.append(ib)
        conf_a.append(qa[torch.from_numpy(ia)])
        conf_b.append(qb[torch.from_numpy(ib)])
    ia, ib, first = unique_pairs(np.concatenate(idx_a), np.concatenate(idx_b), Hb * Wb)
    first_t = torch.from_numpy(first)
    conf = (torch.cat(conf_a)[first_t] * torch.cat(conf_b)[first_t]).sqrt()
    ia_t, ib_t = torch.from_numpy(ia), torch.from_numpy(ib)
    xy_a = torch.stack([ia_t % Wa, ia_t // Wa], dim=1)
    xy_b = torch.stack([ib_t % Wb, ib_t // Wb], dim=1)
    return xy_a, xy_b, conf
