"""Shared constants and metrics of the alignment tests."""

from __future__ import annotations

import numpy as np

from recon.align import DenseAlignConfig, SparseAlignConfig
from tools.eval.metrics import pair_errors

FAST_SPARSE = SparseAlignConfig(niter_coarse=100, niter_fine=150)
FAST_DENSE = DenseAlignConfig(niter=150, subsample=16)
SIZE = (256, 192)


KNOWN = (0, 3, 5)


def all_ordered_pairs(n: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(n) for j in range(n) if i != j]


def pose_metrics(gt, scene, idx=None) -> dict:
    """RRA / RTA at 5, 10 degrees and the worst focal error (%) of a scene against ground truth."""
    idx = np.arange(len(gt)) if idx is None else np.asarray(idx)
    T_gt = np.stack([gt[k].T_world_cam for k in idx])
    rot, trans = pair_errors(T_gt, scene.T_world_cam[idx])
    f_gt = np.array([gt[k].K[0, 0] for k in idx])
    return {
        "RRA@5": 100 * np.mean(rot < 5),
        "RTA@5": 100 * np.mean(trans < 5),
        "RRA@10": 100 * np.mean(rot < 10),
        "RTA@10": 100 * np.mean(trans < 10),
        "rot_mean": float(rot.mean()),
        "trans_mean": float(trans.mean()),
        "focal_err_pct": float(100 * np.max(np.abs(scene.K[idx, 0, 0] / f_gt - 1))),
    }
