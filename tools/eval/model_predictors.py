"""Model-backed predictors: thin adapters from the benchmark's ``predict(frames)`` to recon's network and
pipeline.

- ``PairwisePredictor`` (the MASt3R / DUNE paper mode): each of the 45 pairs on its own; the decoder runs on
  both orders of every pair (each image encoded once), matches come from the descriptors
  (``recon.matching.match_pair``), and ``tools.eval.pairwise`` turns them into a relative pose with an essential
  matrix and focals estimated from the point maps. Where the pairs come from is a ``PairSource``, so the
  geometry can run on ground-truth pairs (``tools.oracle``) as well as on a network.
- ``GlobalPredictor``: ``recon.pipeline.reconstruct`` on the 10 frames (complete graph, global alignment).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from recon.datasets.data import EvalFrame
from recon.errors import UserError
from recon.geometry import K_from_focal
from recon.types import Matches, PairPrediction, View
from tools.eval.metrics import all_pairs
from tools.eval.pairwise import pair_relative_pose, star_poses
from tools.eval.predictors import PosePrediction

logger = logging.getLogger(__name__)


class ModelUnavailableError(UserError, RuntimeError):
    """A model-backed predictor cannot be built (missing weights, model without descriptors, ...)."""


@dataclass
class PairOutputs:
    """What a pair source hands to the pairwise geometry for one sequence of N frames.

    Attributes:
        views: N views (their ``true_shape`` and ``net_to_orig`` map network to image pixels).
        preds: ``(i, j) -> PairPrediction`` for both orders of every pair.
        matches: ``(i, j) -> Matches`` for every ``i < j``, in network pixels.
    """

    views: list[View]
    preds: dict[tuple[int, int], PairPrediction]
    matches: dict[tuple[int, int], Matches]


class PairSource(Protocol):
    def __call__(self, frames: Sequence[EvalFrame]) -> PairOutputs: ...


def frame_views(frames: Sequence[EvalFrame], model, image_size: int | None = None) -> list[View]:
    """Network views of the frames' images, one per frame in order (duplicates kept: the benchmark pairs them)."""
    from recon.pipeline import ReconstructConfig, ReconstructionError, load_views

    config = ReconstructConfig(image_size=image_size, progress=False)
    try:
        views = load_views([f.image_path for f in frames], model, config, skip_duplicates=False)
    except ReconstructionError as err:
        raise ModelUnavailableError(f"could not load every sampled image ({err})") from None
    if views.skipped or len(views) != len(frames):
        why = "; ".join(f"{s[0]}: {s[1]}" for s in views.skipped)
        raise ModelUnavailableError(f"could not load every sampled image ({why})")
    return views


@dataclass
class ModelPairSource:
    """Pairs from a binocular model: encode each image once, decode both orders, match descriptors.

    Attributes:
        model: a ``recon.model.ReconModel`` with a descriptor head (MASt3R / DUNE-MASt3R).
        image_size: network long side (``None``: the model's native size).
        subsample: seed-grid step of the reciprocal matcher (MASt3R uses 8).
        match_conf_thr: drop matches with a lower descriptor confidence.
        batch_size: ordered pairs per decoder call.
    """

    model: object
    image_size: int | None = None
    subsample: int = 8
    match_conf_thr: float = 0.0
    batch_size: int = 8

    def __post_init__(self):
        if not getattr(self.model, "has_desc", False):
            raise ModelUnavailableError(
                "pairwise mode needs a model with a descriptor head (MASt3R / DUNE-MASt3R); use --mode global"
            )

    def __call__(self, frames: Sequence[EvalFrame]) -> PairOutputs:
        from recon.inference import InferenceConfig, run_inference
        from recon.matching import match_pair

        model = self.model
        views = frame_views(frames, model, self.image_size)
        pairs = [tuple(p) for p in all_pairs(len(views)).tolist()]
        store = run_inference(model, views, pairs, InferenceConfig(batch_size=self.batch_size), progress=False)
        preds = {(p.i, p.j): p for p in store}
        matches = {
            (i, j): match_pair(preds[(i, j)], self.subsample, self.match_conf_thr, reverse=preds[(j, i)])
            for i, j in pairs
        }
        return PairOutputs(views, preds, matches)


@dataclass
class PairwisePredictor:
    """Per-pair relative poses (essential matrix + recoverPose), focals from the point maps.

    Attributes:
        source: produces the pair predictions and matches of a sequence.
        ransac_px: RANSAC threshold in network pixels.
        ransac_method: ``"ransac"`` or ``"usac_accurate"`` (see ``tools.eval.pairwise.RANSAC_METHODS``).
        min_conf: point-map confidence threshold for the focal estimate.
        seed: OpenCV RANSAC seed.
        label: recorded in ``run.json`` to tell runs apart (e.g. the checkpoint).
    """

    source: PairSource
    ransac_px: float = 1.0
    ransac_method: str = "ransac"
    min_conf: float = 0.0
    seed: int = 0
    label: str = ""
    name: str = "pairwise"
    extra: dict = field(default_factory=dict)

    def describe(self) -> dict:
        return {
            "predictor": self.name, "model": self.label, "ransac_px": self.ransac_px,
            "ransac_method": self.ransac_method, **self.extra,
        }  # fmt: skip

    def predict(self, frames: Sequence[EvalFrame]) -> PosePrediction:
        """Returns ``T_rel [45, 4, 4]`` (used by the metrics), star ``T_world_cam`` and per-view ``K``."""
        out = self.source(frames)
        n = len(frames)
        focals: list[list[float]] = [[] for _ in range(n)]
        T_rel, inliers, failed, reasons = [], [], [], []
        for i, j in all_pairs(n).tolist():
            pose, f_i, f_j = pair_relative_pose(
                out.preds[(i, j)], out.matches[(i, j)], out.preds.get((j, i)),
                min_conf=self.min_conf, ransac_px=self.ransac_px, method=self.ransac_method, seed=self.seed,
            )  # fmt: skip
            T_rel.append(pose.T_j_i)
            inliers.append(pose.inliers)
            if not pose.ok:
                failed.append([i, j])
                reasons.append(pose.reason)
            focals[i].append(f_i)
            focals[j].append(f_j)
        K = []
        for k, v in enumerate(out.views):
            K_net = K_from_focal(float(np.median(focals[k])), v.true_shape)
            K.append(np.asarray(v.net_to_orig, dtype=np.float64) @ K_net)
        T_rel = np.stack(T_rel)
        if failed:
            logger.info("%d of %d pairs have no pose (first: %s); they count as 180° errors", len(failed), len(T_rel),
                        reasons[0])  # fmt: skip
        failed_set = {tuple(p) for p in failed}
        return PosePrediction(
            T_world_cam=star_poses(T_rel, n),
            K=np.stack(K),
            T_rel=T_rel,
            info={"inliers": inliers, "failed_pairs": failed, "failure_reasons": reasons},
            pair_failed=np.array([tuple(p) in failed_set for p in all_pairs(n).tolist()], dtype=bool),
        )


@dataclass
class GlobalPredictor:
    """``recon.pipeline.reconstruct`` on the sampled frames: complete scene graph, then global alignment.

    Attributes:
        model: a loaded ``recon.model`` model.
        align: ``"sparse"`` (MASt3R-SfM style) or ``"dense"`` (DUSt3R style).
        image_size: network long side (``None``: the model's native size).
        device: ``auto``, ``cpu`` or ``cuda[:k]``.
        label: recorded in ``run.json``.
    """

    model: object
    align: str = "sparse"
    image_size: int | None = None
    device: str = "auto"
    label: str = ""
    name: str = "global"

    def describe(self) -> dict:
        return {"predictor": self.name, "model": self.label, "align": self.align, "image_size": self.image_size}

    def predict(self, frames: Sequence[EvalFrame]) -> PosePrediction:
        from recon.pipeline import ReconstructConfig, reconstruct

        model = self.model
        views = frame_views(frames, model, self.image_size)
        config = ReconstructConfig(graph="complete", align=self.align, device=self.device, progress=False)
        scene, report = reconstruct(views, model, config)
        return PosePrediction(
            T_world_cam=np.asarray(scene.T_world_cam, dtype=np.float64),
            K=np.asarray(scene.K_orig, dtype=np.float64),
            info={"registered": int(report.registered), "matches": int(report.n_matches)},
        )


def build(
    source: str,
    mode: str = "pairwise",
    backbone: str | None = None,
    image_size: int | None = None,
    device: str = "auto",
    ransac_method: str = "ransac",
    ransac_px: float = 1.0,
):
    """Load a model (weights name or checkpoint path) and wrap it in the predictor of ``mode``."""
    import torch

    import recon
    from backbone.checkpoint import CheckpointError
    from backbone.hub import WeightsError

    if mode == "pairwise":
        try:
            import cv2  # noqa: F401  (the essential-matrix step: checked before loading, not failing each sequence)
        except ImportError:
            raise ModelUnavailableError(
                "--mode pairwise needs OpenCV: pip install 'recon3r[eval]' (or use --mode global)"
            ) from None
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        model = recon.load_model(source, backbone=backbone, device=device)
    except (CheckpointError, WeightsError, FileNotFoundError) as err:
        raise ModelUnavailableError(f"cannot load model {source!r}: {err}") from err
    label = str(source)
    if mode == "pairwise":
        return PairwisePredictor(
            ModelPairSource(model, image_size), ransac_px=ransac_px, ransac_method=ransac_method, label=label,
            extra={"image_size": image_size},
        )  # fmt: skip
    if mode == "global":
        return GlobalPredictor(model, image_size=image_size, device=device, label=label)
    raise ValueError(f"unknown mode {mode!r}; expected 'pairwise' or 'global'")
