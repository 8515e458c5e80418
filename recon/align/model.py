"""Differentiable scene model shared by the sparse and dense alignments.

Per view ``k``: a pose ``T_world_cam[k] = (exp(ω_k)·R0_k, t0_k + τ_k·L)`` (``L`` the scene scale, so every
pose parameter is unitless and starts at 0), a focal ``f_k = f0_k·exp(φ_k)``, a principal point
``pp_k = pp0_k + π_k·(W_k, H_k)``, and a depth model on an anchor grid of stride ``s``:

    depth_k(x) = canon_z_k(x) · exp(σ_k) · (f_k / f0_k) · exp(Σ_a b_a(x) δ_a)

``canon_z`` is the canonical depth, ``σ_k`` a log scale, ``δ`` a log-depth correction per anchor and ``b_a(x)``
bilinear weights of the four anchors around ``x``. The ``f/f0`` factor keeps the lateral extent of the point
map fixed when the focal moves, as MASt3R-SfM does, which decouples focal and scale. Fixed quantities (known
poses, known intrinsics, the gauge view) are masked, so their gradients are exactly zero.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import roma
import torch

from recon.progress import step

logger = logging.getLogger(__name__)


class AnchorGrid:
    """Anchors of one view: pixels ``(s//2 + s·a, s//2 + s·b)`` clipped to the image.

    Args:
        H, W: image size.
        s: stride.
        offset: index of this view's first anchor in the concatenated parameter vector.
    """

    def __init__(self, H: int, W: int, s: int, offset: int):
        self.H, self.W, self.s, self.offset = H, W, s, offset
        self.h = max(1, math.ceil((H - s // 2) / s)) if H > s // 2 else 1
        self.w = max(1, math.ceil((W - s // 2) / s)) if W > s // 2 else 1

    @property
    def size(self) -> int:
        return self.h * self.w

    def pixels(self) -> np.ndarray:
        """``[h*w, 2]`` int64 anchor pixels ``(x, y)`` in row-major order."""
        ys = np.minimum(self.s // 2 + self.s * np.arange(self.h), self.H - 1)
        xs = np.minimum(self.s // 2 + self.s * np.arange(self.w), self.W - 1)
        y, x = np.meshgrid(ys, xs, indexing="ij")
        return np.stack([x.reshape(-1), y.reshape(-1)], -1).astype(np.int64)

    def bilinear(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global anchor indices ``[P, 4]`` and weights ``[P, 4]`` for pixels ``xy [P, 2]``."""
        xy = np.asarray(xy, np.float64)

        def _axis(v, n):
            f = np.clip((v - self.s // 2) / self.s, 0, n - 1)
            i0 = np.minimum(np.floor(f), max(n - 2, 0)).astype(np.int64)
            a = np.clip(f - i0, 0, 1) if n > 1 else np.zeros_like(f)
            return i0, np.minimum(i0 + 1, n - 1), a

        x0, x1, ax = _axis(xy[:, 0], self.w)
        y0, y1, ay = _axis(xy[:, 1], self.h)
        idx = np.stack([y0 * self.w + x0, y0 * self.w + x1, y1 * self.w + x0, y1 * self.w + x1], -1) + self.offset
        wts = np.stack([(1 - ax) * (1 - ay), ax * (1 - ay), (1 - ax) * ay, ax * ay], -1)
        return idx, wts


def cosine_lr(t: float, lr: float, lr_min: float = 0.0) -> float:
    """Cosine decay from ``lr`` at ``t = 0`` to ``lr_min`` at ``t = 1``."""
    return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * min(max(t, 0.0), 1.0)))


def gamma_loss(d: torch.Tensor, gamma: float) -> torch.Tensor:
    """MASt3R-SfM's robust penalty ``(d + o)^γ − o^γ`` with ``o = (1/γ)^(1/(γ−1))`` (slope 1 at ``d = 0``)."""
    o = (1 / gamma) ** (1 / (gamma - 1))
    return (d + o) ** gamma - o**gamma


class SceneModel(torch.nn.Module):
    """Cameras and anchor depths of N views (see the module docstring).

    Args:
        T0: ``[N, 4, 4]`` initial camera-to-world poses.
        log_scale0: ``[N]`` initial log scales of the canonical depths.
        f0, pp0: ``[N]``, ``[N, 2]`` initial intrinsics.
        sizes: ``[N, 2]`` image ``(W, H)``.
        n_anchors: total number of anchors (length of the ``δ`` vector).
        scene_scale: ``L``, the unit of the translation parameters.
        pose_free, scale_free, focal_free, pp_free: ``[N]`` bool masks.
        shared: one focal and principal point offset for all views.
    """

    def __init__(
        self,
        T0,
        log_scale0,
        f0,
        pp0,
        sizes,
        n_anchors: int,
        scene_scale: float,
        pose_free,
        scale_free,
        focal_free,
        pp_free,
        shared: bool,
        dtype=torch.float32,
        device="cpu",
    ):
        super().__init__()
        n = len(f0)

        def _t(x, dt=dtype):
            return torch.as_tensor(np.asarray(x), dtype=dt, device=device)

        self.register_buffer("R0", _t(np.asarray(T0)[:, :3, :3]))
        self.register_buffer("t0", _t(np.asarray(T0)[:, :3, 3]))
        self.register_buffer("log_scale0", _t(log_scale0))
        self.register_buffer("f0", _t(f0))
        self.register_buffer("pp0", _t(pp0))
        self.register_buffer("wh", _t(sizes))
        self.register_buffer("pose_free", _t(pose_free))
        self.register_buffer("scale_free", _t(scale_free))
        self.register_buffer("focal_free", _t(focal_free))
        self.register_buffer("pp_free", _t(pp_free))
        self.scene_scale = float(scene_scale)
        self.shared = shared
        m = 1 if shared else n
        self.rot = torch.nn.Parameter(torch.zeros(n, 3, dtype=dtype, device=device))
        self.trans = torch.nn.Parameter(torch.zeros(n, 3, dtype=dtype, device=device))
        self.log_scale = torch.nn.Parameter(torch.zeros(n, dtype=dtype, device=device))
        self.log_focal = torch.nn.Parameter(torch.zeros(m, dtype=dtype, device=device))
        self.pp_off = torch.nn.Parameter(torch.zeros(m, 2, dtype=dtype, device=device))
        self.delta = torch.nn.Parameter(torch.zeros(n_anchors, dtype=dtype, device=device))

    def poses(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(R [N, 3, 3], t [N, 3])`` camera-to-world."""
        R = roma.rotvec_to_rotmat(self.rot * self.pose_free[:, None]) @ self.R0
        t = self.t0 + self.trans * self.pose_free[:, None] * self.scene_scale
        return R, t

    def focals(self) -> torch.Tensor:
        """``[N]`` focal lengths in pixels."""
        return self.f0 * torch.exp(self.log_focal.expand(len(self.f0)) * self.focal_free)

    def principal_points(self) -> torch.Tensor:
        """``[N, 2]`` principal points in pixels."""
        return self.pp0 + self.pp_off.expand(len(self.f0), 2) * self.pp_free[:, None] * self.wh

    def depth_scales(self) -> torch.Tensor:
        """``[N]`` factor on the canonical depths: ``exp(σ)·f/f0``."""
        return torch.exp(self.log_scale0 + self.log_scale * self.scale_free) * self.focals() / self.f0

    def camera_table(self) -> torch.Tensor:
        """``[N, 16]`` per-view camera parameters ``(R row-major 9, t 3, f 1, pp 2, depth scale 1)``.

        Gathering this one table per matched pixel (a single ``index_select``) is much cheaper on the CPU than
        gathering each quantity separately, whose backward passes are scatter-adds.
        """
        R, t = self.poses()
        f = self.focals()
        return torch.cat([R.reshape(-1, 9), t, f[:, None], self.principal_points(), self.depth_scales()[:, None]], 1)

    def depth_correction(self, anchor_idx: torch.Tensor, anchor_w: torch.Tensor) -> torch.Tensor:
        """``[P]`` factor ``exp(Σ b δ)`` for bilinear anchors ``anchor_idx / anchor_w [P, 4]``."""
        d = self.delta.index_select(0, anchor_idx.reshape(-1)).reshape(anchor_idx.shape)
        return torch.exp((d * anchor_w).sum(-1))

    @staticmethod
    def unpack(tab: torch.Tensor):
        """Split gathered camera rows ``[P, 16]`` into ``R [P,3,3], t [P,3], f [P,1], pp [P,2], scale [P]``."""
        return tab[:, :9].reshape(-1, 3, 3), tab[:, 9:12], tab[:, 12:13], tab[:, 13:15], tab[:, 15]

    @staticmethod
    def to_world(tab: torch.Tensor, xy: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """World points ``[P, 3]`` of pixels ``xy [P, 2]`` at depths ``z [P]`` seen by cameras ``tab [P, 16]``."""
        R, t, f, pp, _ = SceneModel.unpack(tab)
        p = torch.cat([(xy - pp) / f * z[:, None], z[:, None]], -1)
        return torch.bmm(R, p[:, :, None])[:, :, 0] + t

    @staticmethod
    def project(tab: torch.Tensor, X: torch.Tensor, min_z: float) -> torch.Tensor:
        """Pixels ``[P, 2]`` of world points ``X [P, 3]`` in cameras ``tab [P, 16]`` (depth clamped at ``min_z``)."""
        R, t, f, pp, _ = SceneModel.unpack(tab)
        pc = torch.bmm(R.transpose(1, 2), (X - t)[:, :, None])[:, :, 0]
        return pc[:, :2] / pc[:, 2:3].clamp(min=min_z) * f + pp

    def parameter_groups(self, names: list[str]):
        return [getattr(self, k) for k in names]


def as_numpy_poses(model: SceneModel) -> np.ndarray:
    """``[N, 4, 4]`` float64 camera-to-world poses of the model."""
    with torch.no_grad():
        R, t = model.poses()
    T = np.tile(np.eye(4), (len(R), 1, 1))
    T[:, :3, :3] = R.double().cpu().numpy()
    T[:, :3, 3] = t.double().cpu().numpy()
    return T


def densify_depth(model: SceneModel, k: int, canon_z: np.ndarray, grid: AnchorGrid) -> np.ndarray:
    """Full-resolution ``[H, W]`` float32 depth of view ``k`` from its canonical depth and the model."""
    H, W = canon_z.shape
    y, x = np.mgrid[0:H, 0:W]
    idx, wts = grid.bilinear(np.stack([x.reshape(-1), y.reshape(-1)], -1))
    with torch.no_grad():
        delta = model.delta.detach().double().cpu().numpy()
        s = float(model.depth_scales()[k])
    corr = np.exp((delta[idx] * wts).sum(-1)).reshape(H, W)
    return (canon_z * s * corr).astype(np.float32)


class Adam:
    """Plain Adam (no weight decay) with the learning rate passed at each step.

    ``torch.optim.Adam`` would do, but its first construction imports ``torch._dynamo`` (seconds on a CPU
    machine), which dominates small alignments; the update rule is a few lines.
    """

    def __init__(self, params: list[torch.nn.Parameter], betas: tuple[float, float] = (0.9, 0.9), eps: float = 1e-8):
        self.params = list(params)
        self.b1, self.b2, self.eps = betas[0], betas[1], eps
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]
        self.t = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, lr: float) -> None:
        self.t += 1
        c1, c2 = 1 - self.b1**self.t, 1 - self.b2**self.t
        for p, m, v in zip(self.params, self.m, self.v, strict=True):
            if p.grad is None:
                continue
            m.mul_(self.b1).add_(p.grad, alpha=1 - self.b1)
            v.mul_(self.b2).addcmul_(p.grad, p.grad, value=1 - self.b2)
            p.addcdiv_(m / c1, (v / c2).sqrt_().add_(self.eps), value=-lr)


def autograd_step(loss_fn):
    """A ``run_stage`` objective from a differentiable ``loss_fn()``: ``objective(grad)`` returns the loss and,
    when ``grad``, fills the parameters' ``.grad`` by backpropagation."""

    def objective(grad: bool = True) -> torch.Tensor:
        if not grad:
            with torch.no_grad():
                return loss_fn()
        loss = loss_fn()
        if torch.isfinite(loss):
            loss.backward()
        return loss

    return objective


def run_stage(
    objective,
    params: list[torch.nn.Parameter],
    lr: float,
    niter: int,
    name: str,
    progress: bool,
    lr_min: float = 0.0,
    rel_tol: float = 0.0,
    window: int = 20,
) -> dict:
    """Minimise a loss over ``params`` with Adam (betas 0.9, 0.9 as the official aligners) and a cosine schedule
    from ``lr`` to ``lr_min``; stops early on a non-finite loss, or (after at least a quarter of ``niter``) when
    the last ``window`` iterations lowered the best loss so far by less than ``rel_tol`` (relative). The best loss,
    not the last one: Adam's first steps and the start of a stage may raise the loss for a while.

    Args:
        objective: ``objective(grad: bool) -> loss`` (0-d tensor); with ``grad`` it also sets the ``.grad`` of
            ``params`` (see ``autograd_step``).

    Returns:
        ``{"loss_<name>_init", "loss_<name>_final", "t_<name>_s", "iters_<name>", "early_stop_<name>"}``.
    """
    import time

    from tqdm.auto import tqdm

    opt = Adam(params)
    first = last = float("nan")
    history: list[float] = []
    best_old = float("inf")  # best loss before the last ``window`` iterations
    stopped = False
    t0 = time.perf_counter()
    it = -1
    for it in tqdm(range(niter), desc=f"align {name}", disable=not progress, leave=False):
        opt.zero_grad()
        loss = objective(True)
        if not torch.isfinite(loss):
            logger.warning("%s stage: non-finite loss at iteration %d; stopping the stage", name, it)
            it -= 1
            break
        opt.step(cosine_lr(it / max(niter, 1), lr, lr_min))
        last = float(loss.detach())
        history.append(last)
        if it == 0:
            first = last
        step("alignment", it + 1, niter, name)
        if len(history) > window:
            best_old = min(best_old, history[-1 - window])
            if rel_tol > 0 and it + 1 >= niter // 4 and best_old - min(history[-window:]) <= rel_tol * abs(best_old):
                stopped = True
                break
    if niter > 0 and np.isfinite(last):
        last = float(objective(False))
    return {
        f"loss_{name}_init": first,
        f"loss_{name}_final": last,
        f"t_{name}_s": time.perf_counter() - t0,
        f"iters_{name}": it + 1,
        f"early_stop_{name}": stopped,
    }
