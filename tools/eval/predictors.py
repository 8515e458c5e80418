"""The predictor protocol of the pose benchmark, and the ground-truth oracle used to test the evaluator.

A predictor sees the sampled frames of one sequence (image paths, GT ``K`` for the image size, GT poses that it
must not use unless it is an oracle) and returns cameras:

    predict(frames: Sequence[EvalFrame]) -> (T_world_cam [N, 4, 4], K [N, 3, 3]) or PosePrediction

Pairwise methods, which estimate each pair's relative pose independently (no common frame or scale), also fill
``PosePrediction.T_rel``; the metrics then use those instead of the absolute poses.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from scipy.spatial.transform import Rotation

from recon.datasets.data import EvalFrame

logger = logging.getLogger(__name__)


@dataclass
class PosePrediction:
    """Cameras predicted for the N sampled frames of one sequence.

    Attributes:
        T_world_cam: ``[N, 4, 4]`` float64 camera-to-world poses (OpenCV), in any similarity frame.
        K: ``[N, 3, 3]`` float64 intrinsics in pixels of the images on disk.
        T_rel: ``[P, 4, 4]`` relative poses ``T_j_i`` (camera i -> camera j) for the ``i < j`` pairs in
            ``tools.eval.metrics.all_pairs`` order, translation of arbitrary scale; ``None`` for global methods.
        info: free-form diagnostics (inlier counts, failures) recorded with the results.
        pair_failed: ``[P]`` bool, pairs (``all_pairs`` order) whose pose could not be estimated; they count with
            the worst error, 180°, whatever their ``T_rel`` holds. ``None``: every pair has a pose.
    """

    T_world_cam: np.ndarray
    K: np.ndarray
    T_rel: np.ndarray | None = None
    info: dict = field(default_factory=dict)
    pair_failed: np.ndarray | None = None


@runtime_checkable
class Predictor(Protocol):
    """Anything with a ``name`` and ``predict(frames)``; see the module docstring."""

    name: str

    def predict(self, frames: Sequence[EvalFrame]) -> PosePrediction | tuple[np.ndarray, np.ndarray]: ...


def as_prediction(out, n: int) -> PosePrediction:
    """Validate a predictor's output for ``n`` frames and wrap a ``(T_world_cam, K)`` tuple."""
    if not isinstance(out, PosePrediction):
        try:
            T, K = out
        except (TypeError, ValueError):
            raise TypeError(
                f"a predictor must return (T_world_cam, K) or a PosePrediction, got {type(out).__name__}"
            ) from None
        out = PosePrediction(np.asarray(T, dtype=np.float64), np.asarray(K, dtype=np.float64))
    out.T_world_cam = np.asarray(out.T_world_cam, dtype=np.float64)
    out.K = np.asarray(out.K, dtype=np.float64)
    if out.T_world_cam.shape != (n, 4, 4):
        raise ValueError(f"predicted T_world_cam must be [{n}, 4, 4], got {out.T_world_cam.shape}")
    if out.K.shape != (n, 3, 3):
        raise ValueError(f"predicted K must be [{n}, 3, 3], got {out.K.shape}")
    if out.T_rel is not None:
        out.T_rel = np.asarray(out.T_rel, dtype=np.float64)
        P = n * (n - 1) // 2
        if out.T_rel.shape != (P, 4, 4):
            raise ValueError(f"predicted T_rel must be [{P}, 4, 4] (one per i<j pair), got {out.T_rel.shape}")
    if out.pair_failed is not None:
        out.pair_failed = np.asarray(out.pair_failed, dtype=bool).reshape(-1)
        if len(out.pair_failed) != n * (n - 1) // 2:
            raise ValueError(
                f"pair_failed must have one flag per i<j pair ({n * (n - 1) // 2}), got {len(out.pair_failed)}"
            )
    return out


@dataclass
class OraclePredictor:
    """Returns the ground truth, optionally perturbed, in a random similarity frame.

    The perturbation is drawn from a generator seeded by ``seed`` and the frames' image paths, so a sequence gets
    the same noise on every run and in every shard.

    Attributes:
        rot_noise_deg: std of each axis-angle component (degrees) of a left-multiplied rotation per frame.
        trans_noise: std of each camera-centre coordinate, as a fraction of the sequence's mean distance of the
            centres to their mean.
        seed: base seed.
        similarity: express the result in a random similarity frame (rotation, translation, scale), which the
            metrics must be invariant to.
    """

    rot_noise_deg: float = 0.0
    trans_noise: float = 0.0
    seed: int = 0
    similarity: bool = True
    name: str = "oracle"

    def describe(self) -> dict:
        return {
            "predictor": self.name,
            "rot_noise_deg": self.rot_noise_deg,
            "trans_noise": self.trans_noise,
            "seed": self.seed,
            "similarity": self.similarity,
        }

    def predict(self, frames: Sequence[EvalFrame]) -> PosePrediction:
        """Args: frames: N frames. Returns: a ``PosePrediction`` with ``[N,4,4]`` poses and the GT ``K``."""
        T = np.stack([f.T_world_cam for f in frames]).astype(np.float64)
        K = np.stack([f.K for f in frames]).astype(np.float64)
        key = zlib.crc32("\n".join(f.rel_path for f in frames).encode())
        rng = np.random.default_rng([self.seed, key])
        if self.rot_noise_deg > 0:
            dR = Rotation.from_rotvec(np.radians(rng.normal(scale=self.rot_noise_deg, size=(len(frames), 3))))
            T[:, :3, :3] = dR.as_matrix() @ T[:, :3, :3]
        if self.trans_noise > 0:
            C = T[:, :3, 3]
            spread = float(np.mean(np.linalg.norm(C - C.mean(0), axis=1))) or 1.0
            T[:, :3, 3] = C + rng.normal(scale=self.trans_noise * spread, size=C.shape)
        if self.similarity:
            S = Rotation.random(random_state=rng.integers(2**31)).as_matrix()
            scale = float(rng.uniform(0.2, 5.0))
            shift = rng.normal(size=3)
            T[:, :3, :3] = S @ T[:, :3, :3]
            T[:, :3, 3] = scale * T[:, :3, 3] @ S.T + shift
        return PosePrediction(T, K)
