"""Robust evaluation: a pair whose pose cannot be estimated is a failed pair (180°, counted), never a crash.

Before: with OpenCV 5.x, ``cv2.findEssentialMat`` raises ``(-215:Assertion failed) ... in function 'solvePoly'``
on degenerate matches (repeated, collinear or non-finite points); the exception escaped the pairwise predictor and
the whole sequence was recorded as failed. These tests run on the installed OpenCV.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recon.datasets.data import EvalFrame
from recon.geometry import K_from_focal
from recon.types import Matches, PairPrediction, View
from tools.eval.metrics import all_pairs
from tools.eval.model_predictors import PairOutputs, PairwisePredictor
from tools.eval.pairwise import relative_pose_from_matches
from tools.eval.predictors import PosePrediction
from tools.eval.runner import evaluate, summarize
from tools.eval.sampling import SampledSequence

K = K_from_focal(100.0, (64, 64))
RNG = np.random.default_rng(0)


def _good_matches(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Projections of random 3D points into two cameras 0.3 apart (x_j = x_i + t)."""
    rng = np.random.default_rng(seed)
    X = rng.uniform([-1, -1, 3], [1, 1, 6], (n, 3))
    proj = lambda P: (P[:, :2] / P[:, 2:]) * 100.0 + 32.0  # noqa: E731
    return proj(X), proj(X + [0.3, 0.0, 0.0])


DEGENERATE = {
    "identical": (np.full((50, 2), 3.0), np.full((50, 2), 3.0)),
    "collinear": (np.c_[np.arange(50.0), np.arange(50.0)], np.c_[np.arange(50.0), np.arange(50.0) + 1]),
    "three-points": (RNG.random((3, 2)) * 64, RNG.random((3, 2)) * 64),
    "no-motion": ((x := RNG.random((50, 2)) * 64), x.copy()),
    "nan": (np.full((50, 2), np.nan), np.full((50, 2), np.nan)),
    "inf": (np.full((50, 2), np.inf), RNG.random((50, 2))),
    "empty": (np.zeros((0, 2)), np.zeros((0, 2))),
    "four-distinct-repeated": (np.repeat(RNG.random((4, 2)) * 64, 20, 0), np.repeat(RNG.random((4, 2)) * 64, 20, 0)),
}


@pytest.mark.parametrize("case", list(DEGENERATE))
def test_degenerate_matches_fail_the_pair_without_raising(case):
    xy_i, xy_j = DEGENERATE[case]
    pose = relative_pose_from_matches(xy_i, xy_j, K, K, min_matches=3)
    assert not pose.ok and pose.reason
    np.testing.assert_array_equal(pose.T_j_i, np.eye(4))


def test_bad_focal_fails_the_pair_without_raising():
    xy_i, xy_j = _good_matches()
    pose = relative_pose_from_matches(xy_i, xy_j, K * np.nan, K)
    assert not pose.ok and "focal" in pose.reason


def test_good_matches_still_give_the_pose():
    xy_i, xy_j = _good_matches()
    noisy = np.vstack([xy_i, np.full((20, 2), np.nan)]), np.vstack([xy_j, np.full((20, 2), np.nan)])
    pose = relative_pose_from_matches(*noisy, K, K)  # non-finite matches are dropped, not fatal
    assert pose.ok and pose.inliers >= 150
    np.testing.assert_allclose(pose.T_j_i[:3, :3], np.eye(3), atol=1e-6)
    np.testing.assert_allclose(pose.T_j_i[:3, 3], [1.0, 0.0, 0.0], atol=1e-6)


class _Source:
    """Pair source of 3 views: pair (0, 1) gets the degenerate matches of ``case``, the others good ones."""

    def __init__(self, case: str):
        self.case = case

    def __call__(self, frames):
        n, hw = len(frames), (64, 64)
        views = [View(image=torch.zeros(3, *hw), idx=k, name=f"f{k}") for k in range(n)]
        v, u = np.mgrid[0:64, 0:64].astype(np.float32)
        pts = torch.from_numpy(np.stack([(u - 32) / 100 * 4, (v - 32) / 100 * 4, np.full_like(u, 4.0)], -1))
        conf = torch.full(hw, 2.0)
        preds = {
            (i, j): PairPrediction(i=i, j=j, pts3d_i=pts, pts3d_j=pts, conf_i=conf, conf_j=conf)
            for i in range(n)
            for j in range(n)
            if i != j
        }
        matches = {}
        for i, j in all_pairs(n).tolist():
            xy_i, xy_j = DEGENERATE[self.case] if (i, j) == (0, 1) else _good_matches(seed=i * n + j)
            matches[(i, j)] = Matches(i, j, xy_i, xy_j, np.ones(len(xy_i), np.float32))
        return PairOutputs(views, preds, matches)


@pytest.mark.parametrize("case", ["identical", "collinear", "three-points", "nan"])
def test_one_bad_pair_does_not_sink_its_sequence(case):
    pred = PairwisePredictor(_Source(case)).predict([None] * 3)
    np.testing.assert_array_equal(pred.pair_failed, [True, False, False])
    assert pred.info["failed_pairs"] == [[0, 1]] and pred.info["failure_reasons"][0]


class _Reader:
    dataset = "synthetic"

    def load_frames(self, category, sequence, frame_ids):
        return [
            EvalFrame(int(f), f"{sequence}/{f}.jpg", f"/nonexistent/{f}.jpg", np.eye(4) + _shift(f), K, (64, 64))
            for f in frame_ids
        ]


def _shift(f) -> np.ndarray:
    T = np.zeros((4, 4))
    T[0, 3] = float(f)
    return T


class _Predictor:
    """Returns the ground truth, with pair (0, 1) flagged as failed in the second sequence."""

    name = "flagging"

    def describe(self):
        return {"predictor": self.name}

    def predict(self, frames):
        T = np.stack([f.T_world_cam for f in frames])
        failed = np.zeros(3, bool)
        failed[0] = frames[0].rel_path.startswith("s2/")
        return PosePrediction(T, np.stack([f.K for f in frames]), pair_failed=failed)


def test_failed_pairs_count_as_180_degrees_and_are_reported(tmp_path: Path):
    seqs = [SampledSequence("cat", s, 3, [0, 1, 2], [0, 1, 2]) for s in ("s1", "s2")]
    stats = evaluate(_Reader(), seqs, _Predictor(), tmp_path)
    assert (stats.done, stats.failed, stats.failed_pairs) == (2, 0, 1)
    recs = {r["sequence"]: r for r in map(json.loads, (tmp_path / "results.jsonl").read_text().splitlines())}
    assert recs["s1"]["failed_pairs"] == 0 and max(recs["s1"]["rot_err_deg"]) < 1e-6
    assert recs["s2"]["failed_pairs"] == 1 and not recs["s2"]["failed"]  # the sequence itself is not failed
    assert recs["s2"]["rot_err_deg"][0] == recs["s2"]["trans_err_deg"][0] == 180.0
    assert max(recs["s2"]["rot_err_deg"][1:]) < 1e-6
    summary = summarize(tmp_path)
    assert summary["mean"]["failed_pairs"] == 1 and summary["mean"]["failed"] == 0
    assert "failed_pairs" in (tmp_path / "summary.csv").read_text().splitlines()[0]


def test_pairwise_mode_without_opencv_is_one_clear_error(monkeypatch):
    """Before: every sequence was recorded as failed with 'No module named cv2' and the run reported 0 scores."""
    import sys

    from tools.eval.model_predictors import ModelUnavailableError, build

    monkeypatch.setitem(sys.modules, "cv2", None)  # makes `import cv2` raise ImportError
    with pytest.raises(ModelUnavailableError, match=r"needs OpenCV: pip install 'recon3r\[eval\]'"):
        build("random:mast3r_tiny", mode="pairwise")


def test_a_missing_module_stops_the_run_instead_of_failing_every_sequence(tmp_path):
    class _Broken(_Predictor):
        def predict(self, frames):
            raise ModuleNotFoundError("No module named 'cv2'")

    seqs = [SampledSequence("cat", s, 3, [0, 1, 2], [0, 1, 2]) for s in ("s1", "s2")]
    with pytest.raises(ModuleNotFoundError):
        evaluate(_Reader(), seqs, _Broken(), tmp_path)
    assert (tmp_path / "results.jsonl").read_text() == ""  # no sequence recorded as a model failure
