"""The two-view solution: relative pose and focals straight from one pair's point maps, no optimisation.

The more confident ordered pair ``(i, j)`` fixes the frame (camera ``i`` at the pair's scale). View ``j``'s pose
and scale come from registering its own-frame point map (from the reverse pair) onto the pair's view-``j``
points; without the reverse pair, a DLT resection of those points against ``j``'s pixel grid gives its pose
and focal. Focals otherwise come from the Weiszfeld estimator, as in DUSt3R's pair viewer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np

from recon.align.init import Init, gauge_from_known_poses
from recon.align.problem import AlignmentError, build_problem, finish_scene
from recon.geometry import pixel_grid, resection_dlt, umeyama
from recon.types import PairPrediction, Priors, Scene, View

logger = logging.getLogger(__name__)


def pairwise_align(
    views: Sequence[View],
    preds: Sequence[PairPrediction],
    priors: Priors | None = None,
    min_conf: float = 1.0,
    seed: int = 0,
) -> Scene:
    """Closed-form alignment of exactly two views.

    Args:
        views: the 2 views.
        preds: predictions for ``(0, 1)`` and/or ``(1, 0)``.
        priors: known intrinsics and poses, as for the global aligners.
        min_conf: pixels at or below this confidence are ignored.
        seed: seed of the point sub-sampling.

    Returns:
        A ``Scene``; both views unregistered when no pair is given.

    Raises:
        AlignmentError: not exactly two views, or inconsistent inputs.
    """
    if len(views) != 2:
        raise AlignmentError(f"pairwise_align takes exactly 2 views, got {len(views)}")
    t_start = time.perf_counter()
    prob = build_problem(views, preds, priors, min_conf)
    rng = np.random.default_rng(seed)
    T = np.tile(np.eye(4), (2, 1, 1))
    reg = np.zeros(2, bool)
    info: dict = {"method": "pairwise"}
    focal, pp = prob.focal0.copy(), prob.pp0.copy()
    pair = prob.best_pair(0, 1)
    if pair is None:
        logger.warning("pairwise alignment: no prediction for the two views")
        return finish_scene(prob, T, np.ones(2), None, [None, None], reg, 0, info, t_start)
    i, j = pair.i, pair.j
    depth: list[np.ndarray | None] = [None, None]
    depth[i] = pair.pts_i[..., 2].astype(np.float64)
    conf_j = pair.conf_j.reshape(-1)
    idx = np.flatnonzero(conf_j > min_conf)
    if len(idx) > 8192:
        idx = np.sort(rng.choice(idx, 8192, replace=False))
    Xj = pair.pts_j.reshape(-1, 3)[idx].astype(np.float64)
    w = np.log(np.clip(conf_j[idx], 1.0, None))
    scale = np.ones(2)
    if prob.canon[j] is not None:
        s, R, t = umeyama(prob.canon[j].reshape(-1, 3)[idx], Xj, w * (prob.canon_conf[j].reshape(-1)[idx] > 1))
        T[j, :3, :3], T[j, :3, 3] = R, t
        depth[j] = prob.canon[j][..., 2] * s
        info["relative_pose"] = "registration"
    else:
        uv = pixel_grid(*prob.shapes[j]).reshape(-1, 2)[idx]
        K, T[j] = resection_dlt(Xj, uv, w)
        if not prob.focal_known[j]:
            focal[j], pp[j] = K[0, 0], K[:2, 2]
        Pj = pair.pts_j.astype(np.float64) - T[j, :3, 3]
        depth[j] = Pj @ T[j, :3, 2]  # z of each point in camera j
        # view j has no confident prediction of its own: its points' confidence is this pair's
        prob.canon_conf[j] = np.asarray(pair.conf_j, np.float64).reshape(prob.shapes[j])
        info["relative_pose"] = "resection"
    reg[:] = True
    init = Init(T, scale, reg, i, [(i, j)])
    n_known = gauge_from_known_poses(init, prob.known_poses)
    depth = [d * s for d, s in zip(depth, init.scale, strict=True)]
    return finish_scene(prob, init.T_world_cam, None, (focal, pp), depth, reg, n_known, info, t_start)
