"""The dense aligner's closed-form pair loss (``recon.align.dense.PairLoss``) against autograd, in float64."""

import numpy as np
import torch

from recon.align.dense import PairLoss


def _problem(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    N, S, E, B = 5, 40, 4, 8
    X = torch.randn(N, 3, S, generator=g, dtype=torch.float64, requires_grad=True)
    M = torch.randn(E, 3, 3, generator=g, dtype=torch.float64, requires_grad=True)
    t = torch.randn(E, 3, generator=g, dtype=torch.float64, requires_grad=True)
    s = (torch.rand(E, generator=g, dtype=torch.float64) + 0.5).requires_grad_(True)
    view = torch.tensor([0, 1, 1, 2, 3, 4, 0, 2])  # views and pairs repeat across blocks
    edge = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    pred = torch.randn(B, S, 3, generator=g, dtype=torch.float64)
    coef = torch.rand(B, S, generator=g, dtype=torch.float64)
    coef[:, -7:] = 0  # padding rows carry no weight
    return (X, M, t, s), PairLoss(view, edge, pred, coef)


def _reference(X, M, t, s, f: PairLoss) -> torch.Tensor:
    """The loss written per block, for autograd."""
    total = 0
    for b, (k, e) in enumerate(zip(f.view.tolist(), f.edge.tolist(), strict=True)):
        Y = f.pred[b] @ M[e].T + t[e]
        total = total + (f.coef[b] * (X[k].T - Y).norm(dim=-1)).sum() / s[e]
    return total


def test_loss_and_gradients_match_autograd():
    leaves, f = _problem()
    ref = _reference(*leaves, f)
    ref_grads = torch.autograd.grad(ref, leaves)
    loss = f(*leaves, grad=True)
    assert abs(float(loss) - float(ref.detach())) < 1e-12 * abs(float(ref.detach()))
    for leaf, rg in zip(leaves, ref_grads, strict=True):
        torch.testing.assert_close(leaf.grad, rg, rtol=1e-10, atol=1e-12)


def test_gradients_flow_through_derived_tensors():
    # s enters both M (as a factor) and the denominator: autograd must add the two paths.
    leaves, f = _problem(1)
    log_s = leaves[3].detach().log().requires_grad_(True)
    R = leaves[1].detach()

    def tensors():
        s = log_s.exp()
        return leaves[0].detach(), s[:, None, None] * R, leaves[2].detach(), s

    ref_grad = torch.autograd.grad(_reference(*tensors(), f), log_s)[0]
    f(*tensors(), grad=True)
    torch.testing.assert_close(log_s.grad, ref_grad, rtol=1e-10, atol=1e-12)


def test_no_gradient_without_grad():
    leaves, f = _problem(2)
    loss = f(*leaves, grad=False)
    assert loss.requires_grad is False and all(x.grad is None for x in leaves)
    assert abs(float(loss) - float(_reference(*leaves, f).detach())) < 1e-12 * float(loss)


def test_dense_align_with_mixed_image_sizes():
    """View 4 cropped to 96x96 among 128x96 views: its anchor grid is padded in the blocks; poses stay close to
    the uncropped run (the padding carries no weight)."""
    import recon.align as ra

    from .ga_parity_check import build_recon_inputs, load_case, pose_distance
    from .test_mast3r_sfm_edge_cases import _crop_view
    from .test_mast3r_sfm_parity import case_dir

    views, preds = build_recon_inputs(load_case(case_dir("orbit5")))
    full = ra.align(views, preds, method="dense")
    views_c, preds_c = _crop_view(views, preds, 4, 16, 112)
    scene = ra.align(views_c, preds_c, method="dense")
    assert [d.shape for d in scene.depth] == [(96, 128)] * 4 + [(96, 96)]
    assert scene.registered.all() and all(np.isfinite(d).all() and (d > 0).all() for d in scene.depth)
    d = pose_distance(scene.T_world_cam, full.T_world_cam)
    assert d["rot_deg"] < 1.0, d
