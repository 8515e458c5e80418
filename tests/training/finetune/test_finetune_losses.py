"""MASt3R's losses on hand-checkable inputs, and the official InfoNCE formula."""

import math

import pytest
import torch
import torch.nn.functional as F

from training.finetune.config import LossConfig
from training.finetune.losses import (
    criterion,
    infonce_proper,
    matching_accuracy,
    matching_loss,
    pointmap_error,
    regression_loss,
    to_camera,
)


def make_gt(B=2, H=6, W=8, metric=False, sky=False):
    g = torch.Generator().manual_seed(0)
    pts1 = torch.randn(B, H, W, 3, generator=g) + torch.tensor([0, 0, 4.0])
    pts2 = torch.randn(B, H, W, 3, generator=g) + torch.tensor([0, 0, 5.0])
    valid1 = torch.rand(B, H, W, generator=g) > 0.2
    valid2 = torch.rand(B, H, W, generator=g) > 0.2
    return {
        "pts1": pts1, "pts2": pts2, "valid1": valid1, "valid2": valid2,
        "sky1": ~valid1 if sky else torch.zeros_like(valid1), "sky2": ~valid2 if sky else torch.zeros_like(valid2),
        "is_metric": torch.full((B,), metric),
    }  # fmt: skip


def pred_of(gt, scale=1.0, conf=1.0):
    return (
        {"pts3d": gt["pts1"] * scale, "conf": torch.full(gt["valid1"].shape, conf)},
        {"pts3d": gt["pts2"] * scale, "conf": torch.full(gt["valid2"].shape, conf)},
    )


class TestRegression:
    def test_scale_invariant_for_non_metric_samples(self):
        gt = make_gt()
        for mode in ("?avg_dis", "avg_dis"):
            loss, d = regression_loss(*pred_of(gt, scale=3.0), gt, LossConfig(norm_mode=mode))
            assert d["regr_1"] < 1e-5 and d["regr_2"] < 1e-5
            assert abs(loss.item()) < 1e-5  # conf = 1: log(conf) = 0

    def test_metric_samples_must_predict_the_true_scale(self):
        gt = make_gt(metric=True)
        loss, d = regression_loss(*pred_of(gt, scale=3.0), gt, LossConfig(norm_mode="?avg_dis"))
        n1, n2 = gt["valid1"].sum().item(), gt["valid2"].sum().item()
        # Both divided by the GT factor: the error is 2x the normalised GT distance, whose mean over both views is 1
        # per pair; with two pairs of different factors, check per pair through pointmap-weighted means instead.
        mean = (d["regr_1"] * n1 + d["regr_2"] * n2) / (n1 + n2)
        assert mean == pytest.approx(2.0, rel=0.05)
        loss_all, _ = regression_loss(*pred_of(gt, scale=3.0), gt, LossConfig(norm_mode="avg_dis"))
        assert abs(loss_all.item()) < 1e-5 and loss.item() > 1.0

    def test_raw_units(self):
        gt = make_gt()
        _, d = regression_loss(*pred_of(gt, scale=1.0), gt, LossConfig(norm_mode="none"))
        assert d["regr_1"] == 0 and d["regr_2"] == 0
        _, d = regression_loss(*pred_of(gt, scale=2.0), gt, LossConfig(norm_mode="none"))
        assert d["regr_1"] == pytest.approx(gt["pts1"][gt["valid1"]].norm(dim=-1).mean().item(), rel=1e-5)

    def test_sky_pixels_cost_the_constant(self):
        gt = make_gt(sky=True)
        loss, _ = regression_loss(*pred_of(gt), gt, LossConfig(sky_loss_value=2.0, alpha=0.2))
        n = gt["valid1"].numel()
        expected = 2.0 * (~gt["valid1"]).sum() / n + 2.0 * (~gt["valid2"]).sum() / n
        assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
        loss0, _ = regression_loss(*pred_of(gt), gt, LossConfig(sky_loss_value=0.0))
        assert abs(loss0.item()) < 1e-5

    def test_confidence_term(self):
        gt = make_gt()
        loss, _ = regression_loss(*pred_of(gt, conf=2.0), gt, LossConfig(alpha=0.2, sky_loss_value=0))
        assert loss.item() == pytest.approx(2 * (-0.2 * math.log(2.0)), rel=1e-5)

    def test_to_camera(self):
        T = torch.eye(4).repeat(1, 1, 1)
        T[0, :3, 3] = torch.tensor([1.0, 2.0, 3.0])
        pts = torch.tensor([1.0, 2.0, 4.0]).view(1, 1, 1, 3)
        torch.testing.assert_close(to_camera(pts, T), torch.tensor([0.0, 0.0, 1.0]).view(1, 1, 1, 3))


def official_infonce(desc1, desc2, T, eps=1e-8):
    """The official formula: exp of tempered similarities, positives over row / column sums, clipped logs."""
    sim = (desc1 @ desc2.transpose(-1, -2) / T).double().exp()
    pos = sim.diagonal(dim1=-2, dim2=-1)
    return -(torch.log((pos / sim.sum(dim=-2)).clip(eps)) + torch.log((pos / sim.sum(dim=-1)).clip(eps)))


class TestMatching:
    def test_infonce_equals_the_official_formula(self):
        g = torch.Generator().manual_seed(1)
        d1 = F.normalize(torch.randn(3, 20, 24, generator=g), dim=-1)
        d2 = F.normalize(d1 + 0.5 * torch.randn(3, 20, 24, generator=g), dim=-1)
        ours = infonce_proper(d1, d2, 0.05)
        torch.testing.assert_close(ours.double(), official_infonce(d1, d2, 0.05), rtol=1e-4, atol=1e-4)
        # Far-apart positives hit the clip: each term is capped at -log(eps).
        capped = infonce_proper(d1, -d1, 0.01)
        assert capped.max().item() <= 2 * -math.log(1e-8) + 1e-4

    def test_matching_loss_weights_valid_rows_by_confidence(self):
        B, H, W, N = 2, 4, 5, 8
        g = torch.Generator().manual_seed(2)
        desc = F.normalize(torch.randn(B, H, W, 24, generator=g), dim=-1)
        p1 = {"desc": desc, "desc_conf": torch.full((B, H, W), 1.0)}
        p2 = {"desc": desc, "desc_conf": torch.full((B, H, W), 1.0)}
        xs = torch.randint(0, W, (N,), generator=g)
        c = torch.stack([xs, torch.randint(0, H, (N,), generator=g)], -1).expand(B, N, 2)
        valid = torch.zeros(B, N, dtype=torch.bool)
        valid[:, :4] = True
        loss, d = matching_loss(p1, p2, c, c, valid, LossConfig(matching_alpha=10.0))
        rows = infonce_proper(desc[torch.arange(B)[:, None], c[..., 1], c[..., 0]],
                              desc[torch.arange(B)[:, None], c[..., 1], c[..., 0]], 0.05)[valid]  # fmt: skip
        assert loss.item() == pytest.approx(rows.mean().item(), rel=1e-5)  # conf 1: no log term
        w = LossConfig(blocksize=4)
        blocked, _ = matching_loss(p1, p2, c, c, valid, w, torch.Generator().manual_seed(0))
        assert torch.isfinite(blocked)
        with pytest.raises(ValueError, match="multiple of the block size"):
            matching_loss(p1, p2, c[:, :7], c[:, :7], valid[:, :7], w)

    def test_no_valid_match_gives_a_connected_zero(self):
        desc = F.normalize(torch.randn(1, 3, 3, 24), dim=-1).requires_grad_()
        conf = torch.ones(1, 3, 3, requires_grad=True)
        p = {"desc": desc, "desc_conf": conf}
        c = torch.zeros(1, 4, 2, dtype=torch.long)
        loss, _ = matching_loss(p, p, c, c, torch.zeros(1, 4, dtype=torch.bool), LossConfig())
        loss.backward()
        assert loss.item() == 0 and desc.grad is not None and torch.all(desc.grad == 0)


def test_criterion_adds_the_weighted_matching_term():
    gt = make_gt()
    B, H, W = gt["valid1"].shape
    desc = F.normalize(torch.randn(B, H, W, 24), dim=-1)
    p1, p2 = pred_of(gt)
    for p in (p1, p2):
        p.update(desc=desc, desc_conf=torch.ones(B, H, W))
    c = torch.randint(0, 6, (B, 10, 2))
    gt.update(corres1=c, corres2=c, valid_corres=torch.ones(B, 10, dtype=torch.bool))
    w = LossConfig(sky_loss_value=0)
    total, d = criterion(p1, p2, gt, w)
    assert total.item() == pytest.approx(d["loss_regr"] + 0.075 * d["loss_match"], rel=1e-5)


def test_validation_metrics():
    gt = make_gt()
    p1, p2 = pred_of(gt, scale=5.0)
    assert pointmap_error(p1, p2, gt).abs().max() < 1e-5  # scale-invariant
    p1["pts3d"] = p1["pts3d"] + 1.0
    assert (pointmap_error(p1, p2, gt) > 0.02).all()  # a shift of 1 at a scale of ~23
    B, H, W = 2, 4, 6
    ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    code = F.normalize(torch.stack([torch.cos(xs * 0.9), torch.sin(xs * 0.9), torch.cos(ys * 1.3), torch.sin(ys * 1.3)],
                                   -1).float(), dim=-1).expand(B, H, W, 4)  # fmt: skip
    c = torch.stack([xs.flatten(), ys.flatten()], -1).expand(B, H * W, 2)
    valid = torch.ones(B, H * W, dtype=torch.bool)
    acc = matching_accuracy({"desc": code}, {"desc": code}, c, c, valid, px=0.5)
    torch.testing.assert_close(acc, torch.ones(B))
    shifted = torch.roll(code, 1, dims=2)  # view 2 shifted one column right: every NN is one pixel off
    assert matching_accuracy({"desc": code}, {"desc": shifted}, c, c, valid, px=0.5).max() < 0.5
    assert (matching_accuracy({"desc": code}, {"desc": shifted}, c, c, valid, px=1.0) > 0.7).all()
