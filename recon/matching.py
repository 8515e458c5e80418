"""Reciprocal nearest-neighbour matching of MASt3R local descriptors.

``fast_reciprocal_nn`` reproduces the official ``fast_reciprocal_NNs`` (mast3r/fast_nn.py; facts in
reference/mast3r.md §7): seeds on a regular grid of image 1 (every ``subsample`` pixels, offset
``subsample // 2``), then alternating nearest-neighbour rounds ``1 -> 2 -> 1`` ("basin descent"). A seed whose
walk stops moving has reached a pixel pair that are each other's nearest neighbour; seeds still moving after
``max_iter`` rounds are dropped. Unlike the official code it stays in torch end to end, computes in float32
whatever the stored dtype (descriptors are kept in float16), remembers every nearest neighbour it has already
computed, and tiles the similarity matrix so memory stays bounded (a few tens of MB at 512x384).

``match_pair`` turns one decoded pair into ``recon.types.Matches``: it runs the matcher in both directions
(as the official sparse global alignment does), optionally on the reverse pair's descriptors too, scores each
match by the geometric mean of the two descriptor confidences and drops matches under ``conf_thr``.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from recon.threads import intra_op_threads
from recon.types import Matches, PairPrediction

logger = logging.getLogger(__name__)

# 2**18 float32 similarities = 1 MiB per tile (the official GPU code uses 8192**2 = 256 MiB tiles): on CPU the
# [Q, D] x [D, N] product with D = 24 is bound by writing and re-reading the similarities, so a tile that stays in
# cache is ~2x faster than a 16 MiB one (measured at 1 thread; docs/performance.md). Same matches at any size.
DEFAULT_MAX_TILE = 2**18


def _nearest(queries: torch.Tensor, db: torch.Tensor, dist: str, max_tile: int, db_sqnorm: torch.Tensor | None):
    """Index of the nearest ``db`` row for every query row.

    Args:
        queries: ``[Q, D]`` float32.
        db: ``[N, D]`` float32.
        dist: ``"dot"`` (largest inner product; the descriptors are unit-norm) or ``"l2"`` (smallest Euclidean
            distance, ranked by ``2 q.b - |b|^2`` which orders candidates exactly as ``|q - b|``).
        max_tile: most similarities held at once (``q_chunk * n_chunk``).
        db_sqnorm: ``[N]`` squared norms of ``db`` (only for ``"l2"``).

    Returns:
        ``[Q]`` int64 indices into ``db``; ties go to the smallest index, as ``torch.max`` and the official
        blockwise search (strict ``<`` when merging blocks) both do.
    """
    Q, N = queries.shape[0], db.shape[0]
    q_chunk = max(1, min(Q, 1024, math.isqrt(max_tile)))
    n_chunk = max(1, min(N, max_tile // q_chunk))
    out = torch.empty(Q, dtype=torch.int64, device=queries.device)
    for q0 in range(0, Q, q_chunk):
        q = queries[q0 : q0 + q_chunk]
        best = torch.full((q.shape[0],), -float("inf"), device=q.device)
        best_idx = torch.zeros(q.shape[0], dtype=torch.int64, device=q.device)
        for n0 in range(0, N, n_chunk):
            sim = q @ db[n0 : n0 + n_chunk].T  # Qc Nc
            if dist == "l2":
                sim.mul_(2).sub_(db_sqnorm[n0 : n0 + n_chunk])
            val, idx = row_max(sim)
            better = val > best  # strict: an earlier tile keeps a tie
            best = torch.where(better, val, best)
            best_idx = torch.where(better, idx + n0, best_idx)
        out[q0 : q0 + q.shape[0]] = best_idx
    return out


def row_max(sim: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``sim.max(dim=1)`` (values, first index of the maximum). On the CPU through NumPy's ``argmax``, which is
    vectorised along a contiguous row where torch's ``max(dim)`` is not: half the matcher's time at one thread
    (docs/performance.md). Same indices (both take the first maximum), same values (read back from ``sim``)."""
    if sim.device.type != "cpu" or not sim.is_contiguous():
        return sim.max(dim=1)
    a = sim.numpy()
    idx = a.argmax(axis=1)
    val = a[np.arange(a.shape[0]), idx]
    return torch.from_numpy(val), torch.from_numpy(idx)


class _CachedNN:
    """Nearest neighbour in ``db`` of rows of ``src``, each computed at most once."""

    def __init__(self, src: torch.Tensor, db: torch.Tensor, dist: str, max_tile: int):
        self.src, self.db, self.dist, self.max_tile = src, db, dist, max_tile
        self.db_sqnorm = (db * db).sum(-1) if dist == "l2" else None
        self.cache = torch.full((src.shape[0],), -1, dtype=torch.int64, device=src.device)

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        todo = torch.unique(rows[self.cache[rows] < 0])
        if todo.numel():
            self.cache[todo] = _nearest(self.src[todo], self.db, self.dist, self.max_tile, self.db_sqnorm)
        return self.cache[rows]


def seed_grid(H: int, W: int, subsample: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Linear indices ``y * W + x`` of the seed grid ``y, x in subsample//2 :: subsample`` (sorted, ``[S]``)."""
    ys = torch.arange(subsample // 2, H, subsample, device=device)
    xs = torch.arange(subsample // 2, W, subsample, device=device)
    return (ys[:, None] * W + xs[None, :]).reshape(-1)


@torch.no_grad()
def fast_reciprocal_nn(
    desc1: torch.Tensor,
    desc2: torch.Tensor,
    subsample: int = 8,
    *,
    max_iter: int = 10,
    dist: str = "dot",
    max_tile: int = DEFAULT_MAX_TILE,
    threads: int | None = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reciprocal nearest neighbours between two dense descriptor maps, seeded on a grid of image 1.

    Args:
        desc1: ``[H1, W1, D]`` descriptors of image 1 (any float dtype; computed in float32).
        desc2: ``[H2, W2, D]`` descriptors of image 2, on the same device.
        subsample: seed-grid step in image 1 (seeds at ``subsample//2 + k*subsample``).
        max_iter: most ``1 -> 2 -> 1`` rounds; seeds not converged by then are dropped (official: 10).
        dist: ``"dot"`` (official sparse-GA / README setting) or ``"l2"`` (official KD-tree / cdist setting);
            identical rankings for unit-norm descriptors.
        max_tile: most similarity entries held in memory at once.
        threads: torch intra-op threads of the search on CPU (``None``: the process setting); one is the most
            CPU-efficient for these tiles and does not collapse on a busy machine (``recon.threads``).

    Returns:
        ``(xy1, xy2)``: ``[M, 2]`` int64 ``(x, y)`` = (column, row) pixel coordinates of mutually nearest
        pixels, unique and sorted by image-1 linear index ``y1 * W1 + x1`` (as official ``merge_corres``).
    """
    _check(desc1, desc2, subsample, max_iter, dist)
    with intra_op_threads(threads if desc1.device.type == "cpu" else None):
        return _reciprocal_walks(desc1, desc2, subsample, max_iter, dist, max_tile, both=False)[0]


def _check(desc1: torch.Tensor, desc2: torch.Tensor, subsample: int, max_iter: int, dist: str) -> None:
    """The argument checks of ``fast_reciprocal_nn``."""
    if desc1.ndim != 3 or desc2.ndim != 3 or desc1.shape[-1] != desc2.shape[-1]:
        raise ValueError(
            f"expected descriptor maps [H1, W1, D] and [H2, W2, D], got {tuple(desc1.shape)} and {tuple(desc2.shape)}"
        )
    if dist not in ("dot", "l2"):
        raise ValueError(f"unknown dist={dist!r}; use 'dot' or 'l2'")
    if subsample < 1 or max_iter < 1:
        raise ValueError(f"subsample and max_iter must be >= 1, got {subsample} and {max_iter}")


def _reciprocal_walks(desc1, desc2, subsample: int, max_iter: int, dist: str, max_tile: int, both: bool):
    """The walks seeded in image 1 and, with ``both``, in image 2: ``[(xy1, xy2), ...]``, each sorted by its seed
    image's linear index. Both walks share one nearest-neighbour cache per direction (the nearest neighbour of a
    pixel does not depend on which walk asks), so the second walk only searches for pixels the first never
    visited, and the descriptors are converted to float32 once."""
    H1, W1, D = desc1.shape
    H2, W2, _ = desc2.shape
    A = desc1.reshape(-1, D).float()  # H1W1 D
    B = desc2.reshape(-1, D).float()  # H2W2 D
    nn_1to2 = _CachedNN(A, B, dist, max_tile)
    nn_2to1 = _CachedNN(B, A, dist, max_tile)
    out = [_walk(nn_1to2, nn_2to1, (H1, W1), (H2, W2), subsample, max_iter)]
    if both:
        xy2, xy1 = _walk(nn_2to1, nn_1to2, (H2, W2), (H1, W1), subsample, max_iter)
        out.append((xy1, xy2))
    return out


def _walk(nn_ab: _CachedNN, nn_ba: _CachedNN, shape_a, shape_b, subsample: int, max_iter: int):
    """Basin descent seeded on the grid of image a; ``(xy_a, xy_b)`` sorted by image-a linear index."""
    (H1, W1), (H2, W2) = shape_a, shape_b
    idx1 = seed_grid(H1, W1, subsample, nn_ab.src.device)
    idx2 = torch.full_like(idx1, -1)
    old1, old2 = idx1.clone(), idx2.clone()
    notyet = torch.ones_like(idx1, dtype=torch.bool)
    for _ in range(max_iter):
        if not notyet.any():
            break
        rows = notyet.nonzero().squeeze(1)
        idx2[rows] = nn_ab(idx1[rows])
        notyet &= idx2 != old2  # the walk stopped in image b: (idx1, idx2) is already reciprocal
        rows = notyet.nonzero().squeeze(1)
        idx1[rows] = nn_ba(idx2[rows])
        notyet &= idx1 != old1  # came back to where it started: reciprocal
        old1.copy_(idx1)
        old2.copy_(idx2)

    done = ~notyet
    pair_key = torch.unique(idx1[done] * (H2 * W2) + idx2[done])  # sorted by idx1, then idx2
    i1, i2 = pair_key // (H2 * W2), pair_key % (H2 * W2)
    xy1 = torch.stack([i1 % W1, i1 // W1], dim=1)
    xy2 = torch.stack([i2 % W2, i2 // W2], dim=1)
    return xy1, xy2


def _merge(xy_i: list[torch.Tensor], xy_j: list[torch.Tensor], W_i: int, HW_j: int, W_j: int):
    """Unique union of correspondence lists, sorted by image-i linear index; returns ``(xy_i, xy_j)``."""
    a, b = torch.cat(xy_i), torch.cat(xy_j)
    key = torch.unique((a[:, 1] * W_i + a[:, 0]) * HW_j + (b[:, 1] * W_j + b[:, 0]))
    i1, i2 = key // HW_j, key % HW_j
    return torch.stack([i1 % W_i, i1 // W_i], 1), torch.stack([i2 % W_j, i2 // W_j], 1)


@torch.no_grad()
def match_pair(
    pred: PairPrediction,
    subsample: int = 8,
    conf_thr: float = 0.0,
    *,
    reverse: PairPrediction | None = None,
    both_directions: bool = True,
    border: int = 0,
    dist: str = "dot",
    max_iter: int = 10,
    max_tile: int = DEFAULT_MAX_TILE,
    threads: int | None = 1,
) -> Matches:
    """Correspondences between views ``pred.i`` and ``pred.j`` from their descriptor maps.

    Args:
        pred: decoder output for the ordered pair ``(i, j)`` with ``desc_i [H_i, W_i, D]``, ``desc_j [H_j, W_j, D]``
            and (optionally) ``desc_conf_i [H_i, W_i]``, ``desc_conf_j [H_j, W_j]``.
        subsample: seed-grid step of the matcher.
        conf_thr: drop matches whose confidence ``sqrt(desc_conf_i * desc_conf_j)`` is below this.
        reverse: the decoder output for ``(j, i)``; its descriptors are matched too and the results merged, as the
            official sparse global alignment does with its four predictions (11-21 and 12-22).
        both_directions: also seed in image ``j`` (official sparse-GA does both).
        border: drop matches closer than this many pixels to an image border (the official README uses 3).
        dist, max_iter, max_tile, threads: see ``fast_reciprocal_nn``.

    Returns:
        ``Matches`` with ``xy_i``, ``xy_j`` ``[M, 2]`` int64 ``(x, y)`` in network pixels, sorted by image-i linear
        index, and ``conf [M]`` float32 (1 where the head gives no descriptor confidence).

    Raises:
        ValueError: the prediction has no descriptors (DUSt3R heads), or ``reverse`` is not the ``(j, i)`` pair.
    """
    if pred.desc_i is None or pred.desc_j is None:
        raise ValueError(
            f"pair ({pred.i}, {pred.j}) has no descriptors (a DUSt3R head?); descriptor matching needs a MASt3R head"
        )
    maps = [(pred.desc_i, pred.desc_j, pred.desc_conf_i, pred.desc_conf_j)]
    if reverse is not None:
        if (reverse.i, reverse.j) != (pred.j, pred.i) or reverse.desc_i is None or reverse.desc_j is None:
            raise ValueError(f"reverse must be the ({pred.j}, {pred.i}) prediction with descriptors")
        maps.append((reverse.desc_j, reverse.desc_i, reverse.desc_conf_j, reverse.desc_conf_i))
    H_i, W_i = pred.desc_i.shape[:2]
    H_j, W_j = pred.desc_j.shape[:2]
    all_i, all_j, confs = [], [], []
    for d_i, d_j, c_i, c_j in maps:
        d_j = d_j.to(d_i.device)
        _check(d_i, d_j, subsample, max_iter, dist)
        with intra_op_threads(threads if d_i.device.type == "cpu" else None):
            walks = _reciprocal_walks(d_i, d_j, subsample, max_iter, dist, max_tile, both=both_directions)
        xy_i, xy_j = _merge([w[0] for w in walks], [w[1] for w in walks], W_i, H_j * W_j, W_j)
        if c_i is None or c_j is None:
            conf = torch.ones(len(xy_i), device=xy_i.device)
        else:
            q_i = c_i.to(xy_i.device).float()[xy_i[:, 1], xy_i[:, 0]]
            q_j = c_j.to(xy_i.device).float()[xy_j[:, 1], xy_j[:, 0]]
            conf = (q_i * q_j).sqrt()
        all_i.append(xy_i)
        all_j.append(xy_j)
        confs.append(conf)

    xy_i, xy_j, conf = torch.cat(all_i), torch.cat(all_j), torch.cat(confs)
    if len(maps) > 1:
        # the same pixel pair found from both predictions: keep it once, with the confidence of its first
        # occurrence (``pred``'s own maps before ``reverse``'s), as the official merge_corres(ret_index=True)
        key = (xy_i[:, 1] * W_i + xy_i[:, 0]) * (H_j * W_j) + (xy_j[:, 1] * W_j + xy_j[:, 0])
        uniq, inv = torch.unique(key, return_inverse=True)
        pos = torch.arange(len(key), device=key.device)
        first = torch.full((len(uniq),), len(key), device=key.device).scatter_reduce(0, inv, pos, "amin")
        i1, i2 = uniq // (H_j * W_j), uniq % (H_j * W_j)
        xy_i, xy_j, conf = torch.stack([i1 % W_i, i1 // W_i], 1), torch.stack([i2 % W_j, i2 // W_j], 1), conf[first]

    keep = conf >= conf_thr
    if border > 0:
        for xy, (H, W) in ((xy_i, (H_i, W_i)), (xy_j, (H_j, W_j))):
            keep &= (xy[:, 0] >= border) & (xy[:, 0] < W - border) & (xy[:, 1] >= border) & (xy[:, 1] < H - border)
    logger.debug("pair (%d, %d): %d matches, %d kept", pred.i, pred.j, len(conf), int(keep.sum()))
    return Matches(
        i=pred.i,
        j=pred.j,
        xy_i=xy_i[keep].cpu().numpy().astype(np.int64),
        xy_j=xy_j[keep].cpu().numpy().astype(np.int64),
        conf=conf[keep].cpu().numpy().astype(np.float32),
    )
