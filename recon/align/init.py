"""Initialisation shared by both alignments: chain similarity registrations along a maximum spanning tree.

Each view ``k`` gets a pose ``T_world_cam[k]`` and a scale ``s[k]`` such that ``T_world_cam[k] · (s[k] · canon[k])``
places its canonical point map in the world. For a tree edge (parent ``p``, child ``c``) the pair's two point
maps share one frame: registering the parent's pair points onto the parent's (already placed) world points gives
the pair-to-world similarity; the child's pair points mapped through it are then the target of a second
registration, from the child's canonical point map, which yields the child's pose and scale.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from recon.align.graph import components, maximum_spanning_tree, tree_order
from recon.align.problem import Problem
from recon.geometry import average_rotations, umeyama

logger = logging.getLogger(__name__)


@dataclass
class Init:
    """Result of the initialisation (float64)."""

    T_world_cam: np.ndarray  # [N,4,4]; identity where unregistered
    scale: np.ndarray  # [N] factor applied to the canonical point map / depth
    registered: np.ndarray  # [N] bool
    root: int
    tree: list[tuple[int, int]]  # (parent, child) edges in BFS order


def _weights(conf: np.ndarray) -> np.ndarray:
    return np.log(np.clip(conf, 1.0, None))


def _sample(conf: np.ndarray, rng: np.random.Generator, max_points: int) -> np.ndarray:
    idx = np.flatnonzero(conf.reshape(-1) > 1.0)
    if len(idx) > max_points:
        idx = np.sort(rng.choice(idx, max_points, replace=False))
    return idx


def chain_init(prob: Problem, scores: np.ndarray, seed: int = 0, max_points: int = 4096) -> Init:
    """Place every view of the largest connected component by chaining registrations along the MST.

    Args:
        prob: the problem (canonical point maps and pairs).
        scores: ``[N, N]`` pair scores (0 = unusable pair).
        seed: seed of the point sub-sampling.
        max_points: points per registration.

    Returns:
        An ``Init``; views outside the chosen component (or without a canonical point map) are unregistered.
        The chosen component is the one holding the most known poses, then the largest.
    """
    n = prob.n
    rng = np.random.default_rng(seed)
    usable = np.array([c is not None for c in prob.canon])
    S = np.where(usable[:, None] & usable[None, :], np.maximum(scores, scores.T), 0.0)
    np.fill_diagonal(S, 0)
    label = components(S)
    has_edge = (S > 0).any(1)
    # A lone view is a reconstruction only when it is the only view; otherwise nothing ties it to the rest.
    cand = [c for c in np.unique(label[usable]) if has_edge[label == c].any() or n == 1]
    T = np.tile(np.eye(4), (n, 1, 1))
    scale = np.ones(n)
    registered = np.zeros(n, bool)
    if not cand:
        return Init(T, scale, registered, -1, [])

    def _key(c):
        members = np.flatnonzero(label == c)
        return (sum(int(m) in prob.known_poses for m in members), len(members), -members[0])

    comp = max(cand, key=_key)
    nodes = np.flatnonzero((label == comp) & usable).tolist()
    edges = [e for e in maximum_spanning_tree(S) if e[0] in nodes]
    root, order = tree_order(n, edges, nodes)
    idx = {k: _sample(prob.canon_conf[k], rng, max_points) for k in nodes}
    registered[root] = True
    for p, c in order:
        pair = prob.best_pair(p, c)
        if pair.i == p:
            A, wA, B, wB = pair.pts_i, pair.conf_i, pair.pts_j, pair.conf_j
        else:
            A, wA, B, wB = pair.pts_j, pair.conf_j, pair.pts_i, pair.conf_i
        ip, ic = idx[p], idx[c]
        Xp = prob.canon[p].reshape(-1, 3)[ip]
        world_p = scale[p] * Xp @ T[p, :3, :3].T + T[p, :3, 3]
        w1 = _weights(wA.reshape(-1)[ip]) * _weights(prob.canon_conf[p].reshape(-1)[ip])
        w2 = _weights(wB.reshape(-1)[ic]) * _weights(prob.canon_conf[c].reshape(-1)[ic])
        try:
            s1, R1, t1 = umeyama(A.reshape(-1, 3)[ip], world_p, w1)
            target = s1 * B.reshape(-1, 3)[ic] @ R1.T + t1
            s2, R2, t2 = umeyama(prob.canon[c].reshape(-1, 3)[ic], target, w2)
        except ValueError as err:
            logger.warning("could not register view %d from view %d (%s); leaving it unregistered", c, p, err)
            continue
        if not (np.isfinite(s2) and s2 > 0 and registered[p]):
            continue
        T[c, :3, :3], T[c, :3, 3], scale[c] = R2, t2, s2
        registered[c] = True
    return Init(T, scale, registered, root, order)


def gauge_from_known_poses(init: Init, known: dict[int, np.ndarray]) -> int:
    """Move the initialisation into the frame of the known poses, in place; returns how many were used.

    With one usable known pose a rigid transform matches it; with two or more, a similarity whose rotation is
    the chordal mean of the per-view rotation offsets and whose scale and translation fit the camera centres.
    The known poses themselves are then written exactly.
    """
    ks = [k for k in sorted(known) if init.registered[k]]
    if not ks:
        return 0
    Ri = init.T_world_cam[ks, :3, :3]
    Ci = init.T_world_cam[ks, :3, 3]
    Rk = np.stack([known[k][:3, :3] for k in ks])
    Ck = np.stack([known[k][:3, 3] for k in ks])
    R = average_rotations(Rk @ np.transpose(Ri, (0, 2, 1)))
    s = 1.0
    if len(ks) >= 2:
        a = (Ci - Ci.mean(0)) @ R.T
        b = Ck - Ck.mean(0)
        den = float((a * a).sum())
        if den > 1e-12 * max(float((b * b).sum()), 1e-300):
            s = max(float((a * b).sum()) / den, 1e-12)
    t = (Ck - s * Ci @ R.T).mean(0)
    init.T_world_cam[:, :3, :3] = R @ init.T_world_cam[:, :3, :3]
    init.T_world_cam[:, :3, 3] = s * init.T_world_cam[:, :3, 3] @ R.T + t
    init.scale *= s
    for k in ks:
        init.T_world_cam[k] = known[k]
    return len(ks)
