"""``align``: the one entry point the pipeline calls; picks the solver and applies the config."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Literal

import numpy as np

from recon.align.confidence import CONF_SCALE, view_confidences
from recon.align.config import DenseAlignConfig, SparseAlignConfig
from recon.align.dense import dense_align
from recon.align.dust3r import Dust3rConfig, dust3r_align
from recon.align.mast3r_sfm import Mast3rSfmConfig, mast3r_sfm_align
from recon.align.pairwise import pairwise_align
from recon.align.sparse import sparse_align
from recon.feedforward.scene import FeedForwardPrediction, to_scene
from recon.threads import intra_op_threads
from recon.types import Matches, PairPrediction, Priors, Scene, View

logger = logging.getLogger(__name__)


def align(
    views: Sequence[View],
    preds: Sequence[PairPrediction] | FeedForwardPrediction,
    matches: Sequence[Matches] | None = None,
    priors: Priors | None = None,
    *,
    method: Literal["sparse", "dense", "mast3r-sfm", "dust3r", "feedforward", "feedforward+sparse"] = "sparse",
    config: SparseAlignConfig | DenseAlignConfig | Mast3rSfmConfig | Dust3rConfig | None = None,
    seed: int | None = None,
    two_view: Literal["pairwise", "optimise"] = "optimise",
    start: FeedForwardPrediction | None = None,
    **official_knobs,
) -> Scene:
    """Align views into one scene.

    Args:
        views: N views.
        preds: ordered pair predictions.
        matches: correspondences (needed by ``method="sparse"`` unless N == 2 and ``two_view="pairwise"``).
        priors: known intrinsics / poses.
        method: ``"sparse"`` / ``"dense"``: recon's own variants (MASt3R-SfM style / DUSt3R style, see
            docs/alignment.md); ``"mast3r-sfm"``: the official MASt3R-SfM sparse global alignment reproduced
            (``recon.align.mast3r_sfm``; matches computed from the descriptors when ``matches`` is None; runs for
            N == 2 too); ``"dust3r"``: DUSt3R's official ``PointCloudOptimizer`` reproduced
            (``recon.align.dust3r``; it ignores ``two_view``).
            ``"feedforward"``: ``preds`` is the ``recon.feedforward.FeedForwardPrediction`` of all views, turned
            into the scene as it is. ``"feedforward+sparse"``: ``"sparse"`` started from ``start``'s cameras.
        config: the method's config (default settings when ``None``).
        seed: overrides ``config.seed``.
        two_view: for N == 2, ``"optimise"`` (default) runs the same alignment as for N views, as the official
            code does; ``"pairwise"`` returns the closed-form pair solution (the optimisers start from it anyway).
        start: ``method="feedforward+sparse"`` only: the ``FeedForwardPrediction`` of the same views (cameras,
            depth) the sparse alignment starts from (``recon.feedforward.sparse_init``).
        **official_knobs: ``method="mast3r-sfm"`` / ``"dust3r"`` only: ``Mast3rSfmConfig`` / ``Dust3rConfig``
            fields by their official names (e.g. ``matching_conf_thr=0.0``), applied over ``config``.

    Returns:
        The ``Scene``.

    Raises:
        ValueError: unknown method, a config of the wrong type, or sparse alignment without matches.
    """
    if method == "feedforward":
        if not isinstance(preds, FeedForwardPrediction):
            raise TypeError(f"method='feedforward' takes a FeedForwardPrediction, got {type(preds).__name__}")
        return to_scene(views, preds)
    if (method == "feedforward+sparse") != (start is not None):
        raise ValueError("start= (a FeedForwardPrediction) goes with method='feedforward+sparse' and only with it")
    if method == "feedforward+sparse":
        method, two_view = "sparse", "optimise"  # the sparse aligner, started from the feed-forward cameras
    if method == "mast3r-sfm":
        return _mast3r_sfm(views, preds, matches, priors, config, official_knobs)
    if method == "dust3r":
        return _dust3r(views, preds, priors, config, seed, official_knobs)
    if official_knobs:
        raise TypeError(f"method={method!r} takes no keyword options {sorted(official_knobs)}; use config=")
    if method not in ("sparse", "dense"):
        raise ValueError(f"method must be 'sparse', 'dense', 'mast3r-sfm', 'dust3r' or 'feedforward', got {method!r}")
    if two_view not in ("pairwise", "optimise"):
        raise ValueError(f"two_view must be 'pairwise' or 'optimise', got {two_view!r}")
    cls = SparseAlignConfig if method == "sparse" else DenseAlignConfig
    if config is not None and not isinstance(config, cls):
        raise TypeError(f"method={method!r} takes a {cls.__name__}, got {type(config).__name__}")
    cfg = config or cls()
    if seed is not None:
        cfg = dataclasses.replace(cfg, seed=int(seed))
    if len(views) == 2 and two_view == "pairwise":
        scene = pairwise_align(views, preds, priors, min_conf=cfg.min_conf, seed=cfg.seed)
    elif method == "dense":
        scene = dense_align(views, preds, priors, cfg)
    elif matches is None:
        raise ValueError("sparse alignment needs matches (recon.matching); use method='dense' without them")
    else:
        scene = sparse_align(views, preds, matches, priors, cfg, start=start)
    if len(views) == 2 and scene.registered is not None and not scene.registered.all():
        # Too few usable matches for the sparse losses (the official GA would fall back to its regression loss
        # on such a pair): the closed-form pair solution is the two-view equivalent.
        logger.warning("two-view %s alignment could not register both views; using the closed-form pair", method)
        scene = pairwise_align(views, preds, priors, min_conf=cfg.min_conf, seed=cfg.seed)
        scene.info["fallback"] = "pairwise"
    return with_official_conf(scene, preds, method)


def with_official_conf(scene: Scene, preds: Sequence[PairPrediction], method: str) -> Scene:
    """``scene`` with ``conf`` in the official scale of ``method`` (``recon.align.confidence``), so thresholds
    copied from the MASt3R / DUSt3R demos keep the same pixels; unregistered views keep confidence 0."""
    confs = view_confidences(len(scene), preds, method)
    reg = scene.registered if scene.registered is not None else [True] * len(scene)
    # A view no pair predicts in its own frame (two-view closed form) keeps the solver's confidence.
    scene.conf = [
        np.zeros_like(old) if not ok else old if c is None else c.astype(np.float32)
        for c, old, ok in zip(confs, scene.conf, reg, strict=True)
    ]
    scene.info["conf_scale"] = CONF_SCALE[method]
    return scene


def _mast3r_sfm(views, preds, matches, priors, config, knobs) -> Scene:
    if config is not None and not isinstance(config, Mast3rSfmConfig):
        raise TypeError(f"method='mast3r-sfm' takes a Mast3rSfmConfig, got {type(config).__name__}")
    cfg = Mast3rSfmConfig.from_kwargs(**{**dataclasses.asdict(config or Mast3rSfmConfig()), **knobs})
    with intra_op_threads(1 if str(cfg.device).startswith("cpu") else None):  # see recon.threads
        scene = mast3r_sfm_align(views, preds, cfg, priors, matches=matches)
    scene.info.setdefault("conf_scale", CONF_SCALE["mast3r-sfm"])
    return scene


def _dust3r(views, preds, priors, config, seed, knobs) -> Scene:
    if config is not None and not isinstance(config, Dust3rConfig):
        raise TypeError(f"method='dust3r' takes a Dust3rConfig, got {type(config).__name__}")
    unknown = sorted(set(knobs) - {f.name for f in dataclasses.fields(Dust3rConfig)})
    if unknown:
        raise TypeError(f"method='dust3r' has no option(s) {unknown}")
    cfg = dataclasses.replace(config or Dust3rConfig(), **knobs, **({} if seed is None else {"seed": int(seed)}))
    with intra_op_threads(1 if str(cfg.device).startswith("cpu") else None):  # see recon.threads
        scene = dust3r_align(views, preds, priors, cfg)
    scene.info["conf_scale"] = CONF_SCALE["dust3r"]  # its conf is the official raw im_conf already
    return scene
