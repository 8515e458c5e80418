"""Parametrisation, losses and the two-stage optimisation of the official MASt3R-SfM sparse global alignment
(``sparse_scene_optimizer``, ``make_pts3d``, ``reproj2d``, ``gamma_loss``; reference/mast3r.md §8.6-§8.9).

Per view: a unit quaternion and a translation *relative to its parent in the kinematic tree* (identity start),
a log scale, a principal point normalised by ``(W, H)``, a log focal and the anchor depths divided by their
median. The camera translation is re-parametrised about the point at depth ``z_cam = size * median * f / f0``
on the principal ray, so a focal or scale change does not swing the camera; the scene is divided by the
smallest scale because the optimisation always tries to crush it. Anchor depths are
``z_cam + (d - 1) * median * size`` ("add") and each matched pixel hangs off its anchor with a fixed offset
(focal-compensated: ``1 + (offset - 1) * f0 / f``).

Coarse stage: conf-weighted robust 3D distance between the two points of each match (poses and scales only).
Fine stage: conf-weighted robust 2D reprojection error (+ intrinsics and anchor depths). Both add
``loss_dust3r_w`` x a regression of each weak pair's (max match conf <= ``matching_conf_thr``) predicted point
map onto the current points. Adam(lr=1, betas=(0.9, 0.9)) whose lr is overwritten by the schedule; quaternions
renormalised after each step. The official iterates per view and per pair in Python; here the terms are
gathered once into index arrays, which sums the same numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import roma
import torch
import torch.nn.functional as F

from recon.progress import step


def gamma_loss(gamma: float):
    """Official ``gamma_loss(gamma)``: ``(|x - y| + o)^gamma - o^gamma`` with ``o = (1/gamma)^(1/(gamma-1))``, the
    point where the slope is 1 (plain L2 distance for ``gamma == 1``)."""
    if gamma == 1:
        return lambda x, y: torch.linalg.norm(x - y, dim=-1)
    offset = (1 / gamma) ** (1 / (gamma - 1))

    def loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (torch.linalg.norm(x - y, dim=-1) + offset) ** gamma - offset**gamma

    return loss


def schedule_lr(kind: str, alpha: float, lr_base: float, lr_end: float = 0.0) -> float:
    """Official ``cosine_schedule`` / ``linear_schedule`` at progress ``alpha`` in [0, 1]."""
    if kind == "cosine":
        return lr_end + (lr_base - lr_end) * (1 + math.cos(alpha * math.pi)) / 2
    return (1 - alpha) * lr_base + alpha * lr_end


@dataclass
class Terms:
    """Loss terms as index arrays into the concatenation of every view's anchored points (``[P, 3]``).

    Attributes:
        m1, m2, mconf: 3D matching: point indices of both ends ``[Q]`` and confidence ``[Q]``.
        r_blocks, r_pix, r_src, r_conf: 2D matching: ``(view, count)`` runs of the view each point is reprojected
            into, its pixel there ``[R, 2]``, the partner's point index ``[R]``, confidence ``[R]``.
        d_src, d_blocks, d_tgt, d_conf: DUSt3R fallback: point index ``[T]``, ``(view, count)`` runs of the view
            whose frame the target is in, target point in that frame ``[T, 3]``, prediction confidence ``[T]``.
    """

    m1: torch.Tensor
    m2: torch.Tensor
    mconf: torch.Tensor
    r_blocks: list[tuple[int, int]]
    r_pix: torch.Tensor
    r_src: torch.Tensor
    r_conf: torch.Tensor
    d_src: torch.Tensor
    d_blocks: list[tuple[int, int]]
    d_tgt: torch.Tensor
    d_conf: torch.Tensor


@dataclass
class Anchored:
    """Pixels tied to anchors, for all views concatenated.

    Attributes:
        view: ``[P]`` view of each point (views in order, so contiguous).
        counts: points per view.
        uv1: ``[P, 3]`` homogeneous pixel ``(x, y, 1)``.
        anchor: ``[P]`` index into the concatenated anchor depths (view offset included).
        offset: ``[P]`` relative depth w.r.t. the anchor.
    """

    view: torch.Tensor
    counts: list[int]
    uv1: torch.Tensor
    anchor: torch.Tensor
    offset: torch.Tensor


class SparseModel:
    """The official parametrisation; ``forward`` gives ``K [N,3,3]``, ``cam2w [N,4,4]``, anchor depths ``[A]``.

    Args:
        imsizes: ``[N, 2]`` (W, H).
        base_focals: ``[N]`` focal of each canonical view.
        core_depth: N anchor-depth grids, flattened ``[h_k * w_k]``.
        root, edges: kinematic tree.
        shared_intrinsics, depth_mode, exp_depth: see ``Mast3rSfmConfig``.
        mean_conf: ``[N]`` mean canonical conf (weights of the shared-intrinsics init).
        pp_init: ``[N, 2]`` initial principal points normalised by ``(W, H)`` (official: 0.5, or ``init`` K's).
    """

    def __init__(
        self,
        imsizes,
        base_focals,
        core_depth,
        root,
        edges,
        *,
        shared_intrinsics,
        depth_mode,
        exp_depth,
        mean_conf,
        pp_init,
        dtype,
    ):
        n = len(imsizes)
        self.n, self.root, self.edges, self.dtype = n, root, edges, dtype
        self.depth_mode, self.exp_depth = depth_mode, exp_depth
        self.imsizes = imsizes  # int64
        self.base_focals = base_focals.to(dtype)
        # torch.median is the lower median for even counts, as in the official
        self.median_depths = torch.stack([d.median() for d in core_depth]).to(dtype)
        self.sizes_per_anchor = [len(d) for d in core_depth]
        self.anchor_view = torch.repeat_interleave(torch.arange(n), torch.tensor(self.sizes_per_anchor))
        pps = pp_init.to(dtype)
        if shared_intrinsics:
            weight = mean_conf / mean_conf.sum()
            self.pp = torch.nn.Parameter((weight @ pps).view(1, 2).to(dtype))
            self.log_focal = torch.nn.Parameter((weight @ base_focals).view(1, 1).log().to(dtype))
        else:
            self.pp = torch.nn.Parameter(pps)
            self.log_focal = torch.nn.Parameter(base_focals.view(n, 1).log().to(dtype))
        self.quats = torch.nn.Parameter(torch.tensor([[0.0, 0.0, 0.0, 1.0]] * n, dtype=dtype))  # XYZW
        self.trans = torch.nn.Parameter(torch.zeros(n, 3, dtype=dtype))
        self.log_sizes = torch.nn.Parameter(torch.zeros(n, 1, dtype=dtype))
        depth = torch.cat([d / m for d, m in zip(core_depth, self.median_depths, strict=True)]).to(dtype)
        self.core_depth = torch.nn.Parameter(depth.clip(min=1e-4).log() if exp_depth else depth)
        diag = imsizes.to(dtype).norm(dim=1)
        self.min_focals, self.max_focals = 0.25 * diag, 10 * diag

    def params(self) -> list[torch.nn.Parameter]:
        """In the official order ``pps, log_focals, quats, trans, log_sizes, core_depth``."""
        return [self.pp, self.log_focal, self.quats, self.trans, self.log_sizes, self.core_depth]

    def set_stage(self, fine: bool, opt_pp: bool, opt_depth: bool) -> None:
        self.pp.requires_grad_(fine and opt_pp)
        self.log_focal.requires_grad_(fine)
        self.core_depth.requires_grad_(fine and opt_depth)
        for p in (self.quats, self.trans, self.log_sizes):
            p.requires_grad_(True)

    def intrinsics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(focals [N], pps [N, 2])``, pps normalised."""
        focals = self.log_focal.exp().reshape(-1).expand(self.n).clip(min=self.min_focals, max=self.max_focals)
        return focals, self.pp.expand(self.n, 2)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        n, dt = self.n, self.dtype
        focals, pps = self.intrinsics()
        K = torch.eye(3, dtype=dt).repeat(n, 1, 1)
        K[:, 0, 0] = K[:, 1, 1] = focals
        K[:, 0:2, 2] = pps * self.imsizes
        sizes = self.log_sizes.exp().reshape(-1)
        scale = 1 / sizes.min()  # the optimisation keeps shrinking the scene; the smallest view stays at 1
        z_cam = sizes * self.median_depths * focals / self.base_focals
        rel = torch.eye(4, dtype=dt).repeat(n, 1, 1)
        rel[:, :3, :3] = roma.unitquat_to_rotmat(F.normalize(self.quats, dim=1))
        rel[:, :3, 3] = self.trans
        chain = [None] * n
        chain[self.root] = rel[self.root]
        for i, j in self.edges:  # parent i, child j: rel[j] is cam_j -> cam_i
            chain[j] = chain[i] @ rel[j]
        chain = torch.stack(chain)
        ones = torch.ones(n, 1, dtype=dt)
        trans_offset = z_cam.unsqueeze(1) * torch.cat((self.imsizes / focals.unsqueeze(1) * (0.5 - pps), ones), -1)
        t = scale * (chain[:, :3, 3:4] - chain[:, :3, :3] @ trans_offset.unsqueeze(-1))
        cam2w = torch.cat(
            (torch.cat((chain[:, :3, :3], t), 2), torch.tensor([0, 0, 0, 1.0], dtype=dt).expand(n, 1, 4)), 1
        )
        d = self.core_depth.exp() if self.exp_depth else self.core_depth
        v = self.anchor_view
        if self.depth_mode == "add":
            depth = z_cam[v] + (d - 1) * (self.median_depths[v] * sizes[v])
        else:
            depth = z_cam[v] * d
        return K, cam2w, scale * depth


def transform_blocks(mats: torch.Tensor, blocks: list[tuple[int, int]], pts: torch.Tensor) -> torch.Tensor:
    """``pts [P, 3]`` mapped by ``mats[v] [3, 4]`` (or ``[4, 4]``) in consecutive ``(v, count)`` runs.

    One small matmul per run, as the official's per-view loop: gathering a matrix per point costs several times
    more, mostly in the backward pass.
    """
    out = [
        p @ mats[v, :3, :3].T + mats[v, :3, 3]
        for (v, _), p in zip(blocks, pts.split([c for _, c in blocks]), strict=True)
    ]
    return torch.cat(out) if out else pts[:0]


def make_pts3d(K, cam2w, depth, base_focals, pts: Anchored, ret_depth: bool = False):
    """World points ``[P, 3]`` of anchored pixels (official ``make_pts3d``; + camera z-depths ``[P]``)."""
    focals = K[:, 0, 0]
    inv_K = torch.linalg.inv(K)
    v = pts.view
    offsets = 1 + (pts.offset - 1) * (base_focals[v] / focals[v])  # offsets were measured at the base focal
    z = depth[pts.anchor] * offsets
    diag = torch.diagonal(inv_K, dim1=-2, dim2=-1)  # N 3
    shift = inv_K[:, :, 2] * torch.tensor([1.0, 1.0, 0.0], dtype=K.dtype)
    cam = z.unsqueeze(-1) * (pts.uv1 * diag[v] + shift[v])
    world = transform_blocks(cam2w, list(enumerate(pts.counts)), cam)
    return (world, cam[:, 2]) if ret_depth else world


def reproj2d(P: torch.Tensor, blocks: list[tuple[int, int]], pts: torch.Tensor) -> torch.Tensor:
    """Pixels ``[R, 2]`` of points ``[R, 3]`` through ``P [N, 3, 4]`` in ``(view, count)`` runs; z >= 1e-3,
    uv clipped to [-1000, 2000] (official ``reproj2d``)."""
    res = transform_blocks(P, blocks, pts)
    uv = res[:, 0:2] / res[:, 2:3].clip(min=1e-3)
    return uv.clip(min=-1000, max=2000)


def optimise(model: SparseModel, pts: Anchored, terms: Terms, cfg) -> dict:
    """Both official stages; returns the final ``K``, ``cam2w``, anchor ``depth`` and the last losses."""
    loss_d = gamma_loss(cfg.lossd)
    has_3d, has_d = len(terms.mconf) > 0, len(terms.d_conf) > 0
    r_conf_sum = terms.r_conf.sum()

    def dust3r_loss(cam2w, world):
        if not has_d:
            return 0.0
        tgt = transform_blocks(cam2w, terms.d_blocks, terms.d_tgt)
        return terms.d_conf @ loss_d(world[terms.d_src], tgt) / terms.d_conf.sum()

    def loss_3d(K, cam2w, world, pix_loss):
        if not has_3d:
            return 0.0
        return terms.mconf @ pix_loss(world[terms.m1], world[terms.m2]) / terms.mconf.sum()

    def loss_2d(K, cam2w, world, pix_loss):
        if len(terms.r_conf) == 0:
            return 0.0
        proj = K @ torch.linalg.inv(cam2w)[:, :3]  # N 3 4
        uv = reproj2d(proj, terms.r_blocks, world[terms.r_src])
        return terms.r_conf @ pix_loss(terms.r_pix, uv) / r_conf_sum

    def loop(loss_func, lr_base, niter, pix_loss, name):
        opt = torch.optim.Adam(model.params(), lr=1, weight_decay=0, betas=(0.9, 0.9))
        loss_value = float("nan")
        for it in range(niter or 1):
            K, cam2w, depth = model.forward()
            world = make_pts3d(K, cam2w, depth, model.base_focals, pts)
            out = (K, cam2w, depth)  # the official returns the state seen by the LAST step, before it
            if niter == 0:
                break
            lr = schedule_lr(cfg.schedule, it / niter, lr_base)
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad()
            loss = loss_func(K, cam2w, world, pix_loss) + cfg.loss_dust3r_w * dust3r_loss(cam2w, world)
            if not torch.is_tensor(loss) or not loss.requires_grad:
                break  # no term at all (cannot happen with >= 2 placed views)
            loss.backward()
            opt.step()
            with torch.no_grad():
                model.quats /= model.quats.norm(dim=1, keepdim=True)
            loss_value = float(loss.detach())
            if loss_value != loss_value:
                break  # NaN loss
            step("alignment", it + 1, niter, name)  # progress / cancellation point for front-ends
        return tuple(x.detach() for x in out), loss_value

    model.set_stage(False, cfg.opt_pp, cfg.opt_depth)
    res, loss1 = loop(loss_3d, cfg.lr1, cfg.niter1, gamma_loss(cfg.loss1), "coarse")
    loss2 = None
    if cfg.niter2:
        model.set_stage(True, cfg.opt_pp, cfg.opt_depth)
        res, loss2 = loop(loss_2d, cfg.lr2, cfg.niter2, gamma_loss(cfg.loss2), "fine")
    K, cam2w, depth = res
    return {"K": K, "cam2w": cam2w, "depth": depth, "loss_coarse": loss1, "loss_fine": loss2}
