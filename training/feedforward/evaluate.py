"""Held-out errors of a feed-forward model, and the constant-camera baseline.

Every held-out scene is one sequence of all its frames in a seeded random order (training sequences are drawn
in random order too, so the first frame is anywhere on the trajectory), normalised as in training (first camera =
world, unit mean point distance). Errors over the non-reference frames (the reference is the world frame):

- ``rot_deg``: angle of ``R_pred^T R_gt`` in degrees;
- ``trans``: ``||t_pred - t_gt||`` of the camera-from-world translations, in normalised units;
- ``depth_rel``: mean ``|d_pred - d_gt| / d_gt`` over valid pixels (all frames; no scale alignment: the model
  predicts normalised depth).

The constant-camera baselines predict one pose encoding for every non-reference frame: the identity camera, or
the mean target of the training scenes' sequences drawn the same way (quaternion renormalised), the best constant
under an L2 error. The constant-depth baseline predicts the median normalised depth of the training sequences'
valid pixels everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import roma
import torch

from recon.feedforward.camera import decode_pose
from recon.feedforward.model import FeedForwardModel
from training.feedforward.data import SceneFrames, normalised_targets


@dataclass(frozen=True)
class Errors:
    """Mean held-out errors (see the module doc)."""

    rot_deg: float
    trans: float
    depth_rel: float


def sequence_order(scene: SceneFrames, seed: int = 0) -> np.ndarray:
    """The frames of ``scene`` in the seeded random order used for evaluation."""
    return np.random.default_rng(seed).permutation(scene.images.shape[0])


def _pose_errors(pred: torch.Tensor, gt: torch.Tensor, hw: tuple[int, int]) -> tuple[float, float]:
    """Mean rotation (deg) and translation errors of ``[V, 9]`` encodings over frames 1..V-1."""
    T_p, _ = decode_pose(pred[1:].double(), hw)
    T_g, _ = decode_pose(gt[1:].double(), hw)
    R_p, R_g = torch.linalg.inv(T_p)[:, :3, :3], torch.linalg.inv(T_g)[:, :3, :3]
    rot = torch.rad2deg(roma.rotmat_geodesic_distance(R_p, R_g)).mean().item()
    trans = (pred[1:, :3] - gt[1:, :3]).double().norm(dim=-1).mean().item()
    return rot, trans


@torch.no_grad()
def evaluate(model: FeedForwardModel, scenes: list[SceneFrames]) -> Errors:
    """Mean errors of ``model`` over ``scenes`` (each one sequence of all its frames)."""
    model.eval()
    rot, trans, rel = [], [], []
    for scene in scenes:
        images, gt = normalised_targets(scene, sequence_order(scene))
        out = model(images[None])
        r, t = _pose_errors(out.pose_enc[-1][0], gt.pose_enc[0], scene.size_hw)
        rot.append(r)
        trans.append(t)
        v = gt.valid[0]
        rel.append(((out.depth[0][v] - gt.depth[0][v]).abs() / gt.depth[0][v]).mean().item())
    return Errors(float(np.mean(rot)), float(np.mean(trans)), float(np.mean(rel)))


def mean_pose(train_scenes: list[SceneFrames], views: int) -> torch.Tensor:
    """The mean normalised pose encoding ``[9]`` of non-reference frames over training sequences of ``views``."""
    encs = []
    for scene in train_scenes:
        _, gt = normalised_targets(scene, sequence_order(scene, seed=1)[:views])
        encs.append(gt.pose_enc[0, 1:])
    mean = torch.cat(encs).mean(0)
    mean[3:7] = torch.nn.functional.normalize(mean[3:7], dim=0)
    return mean


def constant_camera_errors(constant: torch.Tensor, scenes: list[SceneFrames]) -> tuple[float, float]:
    """Mean rotation (deg) and translation errors of predicting ``constant [9]`` for every non-reference frame."""
    rot, trans = [], []
    for scene in scenes:
        _, gt = normalised_targets(scene, sequence_order(scene))
        pred = constant.expand_as(gt.pose_enc[0]).clone()
        r, t = _pose_errors(pred, gt.pose_enc[0], scene.size_hw)
        rot.append(r)
        trans.append(t)
    return float(np.mean(rot)), float(np.mean(trans))


def median_depth(train_scenes: list[SceneFrames], views: int) -> float:
    """The median normalised depth of valid pixels over training sequences of ``views`` frames."""
    depths = []
    for scene in train_scenes:
        _, gt = normalised_targets(scene, sequence_order(scene, seed=1)[:views])
        depths.append(gt.depth[gt.valid])
    return float(torch.cat(depths).median())


def constant_depth_rel(constant: float, scenes: list[SceneFrames]) -> float:
    """Mean depth abs rel of predicting ``constant`` at every pixel (as ``evaluate``'s ``depth_rel``)."""
    rel = []
    for scene in scenes:
        _, gt = normalised_targets(scene, sequence_order(scene))
        d = gt.depth[gt.valid]
        rel.append(((constant - d).abs() / d).mean().item())
    return float(np.mean(rel))
