"""Losses of the feed-forward recipe against hand-worked values."""

import math

import pytest
import torch

from recon.feedforward import FeedForwardOutput
from training.feedforward.losses import (
    Targets,
    camera_loss,
    conf_loss,
    distillation_loss,
    feedforward_loss,
    gradient_loss,
)


class TestCameraLoss:
    def test_huber_hand_value(self):
        # Frame 0: error 0.5 (quadratic: 0.125); frame 1: error 3 (linear: 3 - 0.5 = 2.5); summed over the 9
        # numbers of a frame, averaged over the 2 frames.
        target = torch.zeros(1, 2, 9)
        pred = target.clone()
        pred[0, 0, 0], pred[0, 1, 8] = 0.5, -3.0
        assert camera_loss([pred], target).item() == pytest.approx((0.125 + 2.5) / 2)

    def test_iterations_weighted_by_gamma(self):
        target = torch.zeros(1, 1, 9)
        coarse, fine = torch.full((1, 1, 9), 2.0), torch.full((1, 1, 9), 0.2)
        # coarse: 1.5 per number, fine: 0.02 per number, 9 numbers; weights 0.6 and 1.
        assert camera_loss([coarse, fine], target, gamma=0.6).item() == pytest.approx(0.6 * 9 * 1.5 + 9 * 0.02)


class TestConfLoss:
    def test_hand_value(self):
        pred = torch.tensor([[[3.0, 4.0, 0.0], [1.0, 0.0, 0.0]]])  # 1 x 2 pixels x 3
        gt = torch.zeros_like(pred)
        conf = torch.tensor([[2.0, math.e]])
        valid = torch.tensor([[True, True]])
        # (2 * 5 - 0.2 log 2 + e * 1 - 0.2) / 2
        expected = (10 - 0.2 * math.log(2) + math.e - 0.2) / 2
        assert conf_loss(pred, gt, conf, valid).item() == pytest.approx(expected)

    def test_invalid_pixels_ignored(self):
        pred = torch.tensor([[[3.0], [100.0]]])
        conf = torch.ones(1, 2)
        assert conf_loss(pred, torch.zeros_like(pred), conf, torch.tensor([[True, False]])).item() == pytest.approx(3)


class TestGradientLoss:
    def test_hand_value(self):
        # Error map (1 channel) on 2 x 2: [[0, 1], [3, 3]]; conf 1 except conf[0,0] = 2.
        err = torch.tensor([[0.0, 1.0], [3.0, 3.0]])[..., None]
        conf = torch.tensor([[2.0, 1.0], [1.0, 1.0]])
        valid = torch.ones(2, 2, dtype=torch.bool)
        # x pairs: row 0 |1-0| * c(0,0)=2 -> 2, row 1 |3-3| -> 0; y pairs: col 0 |3-0| * 2 = 6, col 1 |3-1| * 1 = 2
        assert gradient_loss(err, torch.zeros_like(err), conf, valid).item() == pytest.approx((2 + 0 + 6 + 2) / 4)

    def test_pairs_with_an_invalid_pixel_skipped(self):
        err = torch.tensor([[0.0, 1.0], [3.0, 3.0]])[..., None]
        valid = torch.tensor([[True, True], [True, False]])
        # left: x row 0 (1), y col 0 (3)
        assert gradient_loss(err, torch.zeros_like(err), torch.ones(2, 2), valid).item() == pytest.approx(2.0)

    def test_constant_offset_costs_nothing(self):
        pred = torch.rand(1, 4, 5, 3)
        assert gradient_loss(pred + 7.0, pred, torch.ones(1, 4, 5), torch.ones(1, 4, 5, dtype=torch.bool)) == 0


def outputs(depth, pts, pose, conf=1.5):
    return FeedForwardOutput([pose], depth, torch.full_like(depth, conf), pts, torch.full_like(depth, conf))


class TestTotals:
    def test_feedforward_loss_is_the_sum(self):
        gt = Targets(torch.zeros(1, 1, 9), torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2, 3),
                     torch.ones(1, 1, 2, 2, dtype=torch.bool))  # fmt: skip
        out = outputs(torch.full((1, 1, 2, 2), 2.0), torch.full((1, 1, 2, 2, 3), 1.0), torch.full((1, 1, 9), 0.5))
        total, parts = feedforward_loss(out, gt)
        c = 1.5
        assert parts["camera"] == pytest.approx(9 * 0.125)
        assert parts["depth"] == pytest.approx(c * 1 - 0.2 * math.log(c))  # constant error: no gradient term
        assert parts["pmap"] == pytest.approx(c * math.sqrt(3) - 0.2 * math.log(c))
        assert total.item() == pytest.approx(parts["camera"] + parts["depth"] + parts["pmap"])

    def test_distillation_is_plain_l2_without_confidence(self):
        teacher = Targets(torch.zeros(1, 1, 9), torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2, 3),
                          torch.tensor([[[[True, False], [True, True]]]]))  # fmt: skip
        depth = torch.tensor([[[[2.0, 50.0], [1.0, 1.0]]]])
        pts = torch.zeros(1, 1, 2, 2, 3)
        pts[..., 0, 0, :] = torch.tensor([3.0, 4.0, 0.0])
        pose = torch.zeros(1, 1, 9)
        pose[..., :2] = torch.tensor([3.0, 4.0])
        for conf in (1.5, 100.0):  # confidences do not matter
            total, parts = distillation_loss(outputs(depth, pts, pose, conf), teacher)
            assert parts["camera"] == pytest.approx(5.0)
            assert parts["depth"] == pytest.approx(1 / 3)
            assert parts["pmap"] == pytest.approx(5 / 3)
            assert total.item() == pytest.approx(5 + 2)
