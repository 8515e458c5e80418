"""The confidence a ``Scene`` reports per pixel, in the scale of the official demos, and their default thresholds.

A user who copies ``min_conf_thr`` from the MASt3R or DUSt3R demos must get the same points (reference/mast3r.md
§8.3, §9, §11), so ``Scene.conf`` is not recon's internal weighting but the official value:

- **sparse** (MASt3R-SfM): per view, over the pairs that predict the view in its own frame,
  ``Σ w² / Σ w`` with ``w = conf - 0.999`` (official ``prepare_canonical_data``). The MASt3R demo's default
  ``min_conf_thr = 1.5`` therefore keeps pixels whose raw confidences are around 2.5 and above.
- **dense** (DUSt3R): the pixelwise **maximum** of every raw confidence predicted for the view, as view 1 or as
  view 2 of a pair (official ``BasePCOptimizer.im_conf``); the library default threshold is 3
  (``min_conf_thr=3``, compared with this raw value by ``get_masks``).

The DUSt3R *demo* turns its slider value ``t`` into ``log(t)`` and compares that with the raw confidence
(reference/mast3r.md §13.12), so its slider at 3 keeps raw conf > 1.10; recon follows the library, where 3 means 3
(docs/coming-from-mast3r.md lists this difference).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recon.types import PairPrediction

# Official sparse GA: canonical weights w = conf - 0.999 (conf > 1, so every weight stays positive).
SPARSE_CONF_OFFSET = 0.999
# The demos' default thresholds, by alignment method (MASt3R demo 1.5; DUSt3R min_conf_thr 3).
DEFAULT_CONF_THR = {"sparse": 1.5, "mast3r-sfm": 1.5, "dense": 3.0, "dust3r": 3.0}
# Which scale each method's Scene.conf is in (stored in Scene.info["conf_scale"]).
CONF_SCALE = {"sparse": "mast3r-sparse", "mast3r-sfm": "mast3r-sparse", "dense": "dust3r-max", "dust3r": "dust3r-max"}
_THR_BY_SCALE = {"mast3r-sparse": 1.5, "dust3r-max": 3.0}


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().double().numpy()
    return np.asarray(x, np.float64)


def _weights(conf) -> np.ndarray:
    """``w = conf - 0.999`` (official canonical weights); non-finite confidences get no weight."""
    c = _np(conf)
    return np.where(np.isfinite(c), c - SPARSE_CONF_OFFSET, 0.0)


def _finite(conf) -> np.ndarray:
    c = _np(conf)
    return np.where(np.isfinite(c), c, 0.0)


def _ratio(w2sum: np.ndarray, wsum: np.ndarray) -> np.ndarray:
    return np.where(wsum > 0, w2sum / np.where(wsum > 0, wsum, 1.0), 0.0)


def sparse_view_conf(confs: Sequence[np.ndarray]) -> np.ndarray:
    """MASt3R-SfM canonical confidence ``Σ w² / Σ w``, ``w = conf - 0.999``, of one view.

    Args:
        confs: the view's raw confidences ``[H, W]`` from every pair that predicts it in its own frame.

    Returns:
        ``[H, W]`` float64; 0 where no finite confidence was predicted.
    """
    ws = [_weights(c) for c in confs]
    return _ratio(sum(w * w for w in ws), sum(ws))


def dense_view_conf(confs: Sequence[np.ndarray]) -> np.ndarray:
    """DUSt3R ``im_conf`` of one view: the pixelwise max of its raw confidences (non-finite ones ignored)."""
    return np.maximum.reduce([_finite(c) for c in confs])


def view_confidences(n: int, preds: Sequence[PairPrediction], method: str) -> list[np.ndarray | None]:
    """Per view, the confidence the official aligner of ``method`` reports (``None`` for a view no pair predicts).

    Accumulated pair by pair (running sums / maxima), so memory stays one or two maps per view however many
    pairs there are.

    Args:
        n: number of views.
        preds: ordered pair predictions (``conf_i`` / ``conf_j [H, W]``).
        method: ``sparse`` / ``mast3r-sfm`` (own-frame predictions, ``sparse_view_conf``) or ``dense`` /
            ``dust3r`` (every prediction of the view, ``dense_view_conf``).
    """
    sparse = CONF_SCALE[method] == "mast3r-sparse"
    acc: list[list[np.ndarray] | None] = [None] * n  # sparse: [Σw, Σw²]; dense: [max]
    for p in preds:
        if sparse:
            w = _weights(p.conf_i)
            acc[p.i] = [w, w * w] if acc[p.i] is None else [acc[p.i][0] + w, acc[p.i][1] + w * w]
        else:
            for k, c in ((p.i, _finite(p.conf_i)), (p.j, _finite(p.conf_j))):
                acc[k] = [c] if acc[k] is None else [np.maximum(acc[k][0], c)]
    if sparse:
        return [None if a is None else _ratio(a[1], a[0]) for a in acc]
    return [None if a is None else a[0] for a in acc]


def default_conf_thr(method_or_scene) -> float:
    """The demo default threshold for a method name or a ``Scene`` (read from ``info``; 1.5 when unknown)."""
    if isinstance(method_or_scene, str):
        return DEFAULT_CONF_THR[method_or_scene]
    info = getattr(method_or_scene, "info", None) or {}
    if info.get("conf_scale") in _THR_BY_SCALE:
        return _THR_BY_SCALE[info["conf_scale"]]
    return DEFAULT_CONF_THR.get(info.get("method"), 1.5)
