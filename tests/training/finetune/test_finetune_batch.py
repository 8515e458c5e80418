"""``PairBatch``: the typed pair batch of finetuning (swap, concatenation, ground truth in view 1's camera)."""

import dataclasses
import math

import pytest
import torch
from finetune_helpers import tiny_config
from torch.utils.data import default_collate

from training.finetune.batch import PairBatch, ViewBatch
from training.finetune.train import build_train_dataset


def _pose(angle: float, t: tuple[float, float, float]) -> torch.Tensor:
    """Camera-to-world: rotation by ``angle`` about z, then translation ``t``."""
    c, s = math.cos(angle), math.sin(angle)
    T = torch.eye(4)
    T[:3, :3] = torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    T[:3, 3] = torch.tensor(t)
    return T


def _view(seed: int, poses: list[torch.Tensor], B=2, H=3, W=4, n=5) -> ViewBatch:
    g = torch.Generator().manual_seed(seed)
    return ViewBatch(
        img=torch.rand(B, 3, H, W, generator=g),
        pts3d=torch.randn(B, H, W, 3, generator=g),
        valid=torch.rand(B, H, W, generator=g) > 0.3,
        sky=torch.rand(B, H, W, generator=g) > 0.8,
        K=torch.eye(3).expand(B, 3, 3).clone(),
        T_world_cam=torch.stack(poses),
        corres=torch.randint(0, 3, (B, n, 2), generator=g),
    )


@pytest.fixture
def batch() -> PairBatch:
    v1 = _view(1, [_pose(math.pi / 2, (1.0, 2.0, 3.0)), _pose(0.0, (0.0, 0.0, 0.0))])
    v2 = _view(2, [_pose(0.0, (0.0, 0.0, -1.0)), _pose(math.pi, (0.5, 0.0, 0.0))])
    return PairBatch(v1, v2, torch.tensor([[True, False, True, True, False]] * 2), torch.tensor([True, False]))


def _same(a: PairBatch, b: PairBatch) -> bool:
    flat = lambda p: [*dataclasses.astuple(p.view1), *dataclasses.astuple(p.view2), p.valid_corres, p.is_metric]  # noqa: E731
    return all(torch.equal(x, y) for x, y in zip(flat(a), flat(b), strict=True))


def test_swapped_exchanges_the_views_and_twice_is_the_batch(batch):
    s = batch.swapped()
    assert s.view1 is batch.view2 and s.view2 is batch.view1
    assert torch.equal(s.valid_corres, batch.valid_corres) and torch.equal(s.is_metric, batch.is_metric)
    assert _same(s.swapped(), batch)


def test_in_frame_of_view1_by_hand(batch):
    gt = batch.in_frame_of_view1()
    # Pair 0: view 1's camera at (1, 2, 3) turned 90 deg about z; camera point = R^T (world - t).
    p = batch.view1.pts3d[0, 0, 0]
    x, y, z = (p - torch.tensor([1.0, 2.0, 3.0])).tolist()
    torch.testing.assert_close(gt["pts1"][0, 0, 0], torch.tensor([y, -x, z]), rtol=1e-6, atol=1e-6)
    # Pair 1: view 1's camera is the world frame, so view 2's points stay as they are.
    torch.testing.assert_close(gt["pts2"][1], batch.view2.pts3d[1], rtol=1e-6, atol=1e-6)
    # The swapped pair expresses both clouds in view 2's camera (pair 0: shifted by +1 in z).
    torch.testing.assert_close(batch.swapped().in_frame_of_view1()["pts2"][0], batch.view1.pts3d[0] + torch.tensor(
        [0.0, 0.0, 1.0]), rtol=1e-6, atol=1e-6)  # fmt: skip
    assert gt["valid1"] is batch.view1.valid and gt["sky2"] is batch.view2.sky and gt["corres2"] is batch.view2.corres
    assert gt["is_metric"] is batch.is_metric and gt["valid_corres"] is batch.valid_corres


def test_cat_with_swapped_is_the_symmetrised_batch(batch):
    sym = batch.cat(batch.swapped())
    assert sym.view1.img.shape[0] == 4 and sym.is_metric.tolist() == [True, False, True, False]
    both, first, second = sym.in_frame_of_view1(), batch.in_frame_of_view1(), batch.swapped().in_frame_of_view1()
    for key in both:
        assert torch.equal(both[key][:2], first[key]) and torch.equal(both[key][2:], second[key]), key


def test_from_collated_dataset_samples_agree_with_their_depth(tmp_path):
    """On real samples: view 1's points in its own camera have the view's depth as z (valid pixels)."""
    dataset = build_train_dataset(tiny_config(tmp_path).data)
    raw = default_collate([dataset[(i, 10 + i, (56, 42))] for i in range(2)])
    batch = PairBatch.from_collated(raw).to(torch.device("cpu"))
    assert batch.is_metric.dtype == torch.bool and batch.is_metric.shape == (2,)
    assert batch.view1.img.shape == (2, 3, 42, 56) and batch.valid_corres.shape == batch.view1.corres.shape[:2]
    gt = batch.in_frame_of_view1()
    valid = batch.view1.valid
    assert valid.sum() > 100
    torch.testing.assert_close(gt["pts1"][..., 2][valid], raw["view1"]["depth"][valid], rtol=1e-4, atol=1e-4)
