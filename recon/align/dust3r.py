"""DUSt3R's dense global alignment (``PointCloudOptimizer``) reproduced: ``align(..., method="dust3r")``.

This is the algorithm the official DUSt3R / MASt3R demos run with the dense aligner, i.e.
``global_aligner(output, mode=PointCloudOptimizer)`` then ``compute_global_alignment(init='mst', niter=300,
schedule='linear', lr=0.01)`` (naver/dust3r 4c24a6e, ``dust3r/cloud_opt``). It differs from recon's own
``method="dense"`` (a stride-8 depth grid with a scale-invariant loss): here every view has a full-resolution
log-depth map, and the loss is DUSt3R's absolute confidence-weighted distance.

Unknowns (float32, as the official):

- per view ``k``: log-depth ``[H_k·W_k]`` (stacked and zero-padded to the largest area), pose = unit quaternion
  + ``signed_log1p`` translation (camera-to-world), ``20·log(f)`` (``focal_break``), principal-point offset / 10
  from the image centre (frozen unless ``optimize_pp``);
- per ordered pair ``e = (i, j)``: a similarity ``S_e`` = quaternion, ``signed_log1p(t / s)``, ``log s``; the
  scales are renormalised so that their geometric mean is ``base_scale``.

Loss: ``Σ_e Σ_px w_i·‖X_i − S_e·pred_i‖ / Σ_e area_i  +  (same for j)``, with ``w = log(conf)`` and the L1
(Euclidean-norm) distance, ``X_k = T_world_cam_k · depth_k · K_k⁻¹ [x, y, 1]`` at integer pixel coordinates.

Initialisation (``init="mst"``): maximum spanning tree of the pair scores ``mean(conf_i)·mean(conf_j)``; the
strongest pair fixes the world frame; weighted similarity registrations (``roma.rigid_points_registration``,
raw confidences as weights) are chained along the tree; views whose pose the chain does not give are placed by
PnP-RANSAC (OpenCV SQPnP, ``niter_PnP`` iterations, 5 px) on their chained world points; focals come from the
Weiszfeld estimator; finally every pair similarity is registered onto those world points. Optimisation:
``Adam(betas=(0.9, 0.9))`` with a linear or cosine learning-rate decay from ``lr`` to ``lr_min``.

Outputs: ``Scene.conf`` is the official raw ``im_conf`` (pixelwise max of a view's confidences over all pairs);
``config.clean_depth=True`` (the demo's ``clean_depth``) puts the confidence after ``clean_pointcloud`` there
instead (points seen in front of a more confident depth map of another view get ``bad_conf``);
``clean_scene_conf(scene)`` computes that cleaned confidence from any scene. The world frame is the official one
(the MST's first camera before optimisation), not re-expressed.

Official quirks reproduced on purpose are marked "(official)".
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import roma
import torch

from recon.align.problem import AlignmentError
from recon.progress import step
from recon.types import PairPrediction, Priors, Scene, View, scene_view_fields

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dust3rConfig:
    """Knobs of ``dust3r_align``; names and defaults are the official ones (the dust3r demo's call)."""

    init: Literal["mst", "none"] = "mst"
    """``"mst"``: maximum-spanning-tree initialisation (the demo); ``"none"``: the random initialisation only
    (official ``init=None``)."""
    niter: int = 300
    """Adam iterations (the demo's default)."""
    schedule: Literal["linear", "cosine"] = "linear"
    """Learning-rate decay from ``lr`` to ``lr_min`` (the demo's default is linear; the function's is cosine)."""
    lr: float = 0.01
    """Initial learning rate."""
    lr_min: float = 1e-6
    """Learning rate the schedule decays towards (reached at ``t = 1``, one step after the last iteration)."""
    niter_PnP: int = 10
    """RANSAC iterations of the PnP that places views the spanning-tree chain leaves without a pose."""
    optimize_pp: bool = False
    """Optimise the principal points (otherwise fixed at ``(W/2, H/2)``)."""
    focal_break: float = 20.0
    """Focals are optimised as ``focal_break·log(f)`` (a preconditioner)."""
    min_conf_thr: float = 3.0
    """Pixels of ``im_conf`` above this are used by the PnP of the initialisation (and are the official
    ``get_masks``); it does not change the loss weights."""
    conf: Literal["log", "sqrt", "m1", "id"] = "log"
    """Loss weight from a confidence: ``log(c)``, ``sqrt(c)``, ``c - 1`` or ``c``."""
    dist: Literal["l1", "l2"] = "l1"
    """``l1``: Euclidean distance; ``l2``: squared distance."""
    base_scale: float = 0.5
    """Geometric mean the pair scales are normalised to (fixes the scene scale)."""
    clean_depth: bool = False
    """Put the cleaned confidence (``clean_pointcloud``, the demo's ``clean_depth=True``) in ``Scene.conf``
    instead of the raw ``im_conf`` (``clean_scene_conf`` computes it afterwards as well)."""
    clean_tol: float = 0.001
    """``clean_pointcloud`` tolerance: a point counts as in front of another view's depth below ``(1 - tol)``."""
    clean_bad_conf: float = 0.0
    """Confidence given to the points ``clean_pointcloud`` rejects."""
    seed: int = 0
    """Torch seed of the random initial parameters (the official demo seeds torch with 0); all of them are
    overwritten by ``init="mst"``."""
    cv2_seed: int | None = 0
    """Seed set with ``cv2.setRNGSeed`` before the PnP-RANSAC calls (the official demo's 0); ``None`` leaves
    OpenCV's generator alone."""
    device: str = "cpu"
    """Torch device of the optimisation."""

    def __post_init__(self):
        checks = {
            "init": self.init in ("mst", "none"),
            "schedule": self.schedule in ("linear", "cosine"),
            "conf": self.conf in ("log", "sqrt", "m1", "id"),
            "dist": self.dist in ("l1", "l2"),
            "niter": isinstance(self.niter, int) and 0 <= self.niter <= 100_000,
            "niter_PnP": isinstance(self.niter_PnP, int) and 1 <= self.niter_PnP <= 100_000,
            "lr": 0 < self.lr < 10 and 0 <= self.lr_min <= self.lr,
            "focal_break": self.focal_break > 0,
            "base_scale": self.base_scale > 0,
            "clean_tol": 0 <= self.clean_tol < 1,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"Dust3rConfig: invalid {', '.join(bad)} ({self})")


# ----------------------------------------------------------------------------------------------------------------
# small official functions


def signed_log1p(x: torch.Tensor) -> torch.Tensor:
    """``sign(x)·log(1 + |x|)``: the parametrisation of translations (any shape)."""
    return torch.sign(x) * torch.log1p(torch.abs(x))


def signed_expm1(x: torch.Tensor) -> torch.Tensor:
    """Inverse of ``signed_log1p``: ``sign(x)·(exp|x| − 1)``."""
    return torch.sign(x) * torch.expm1(torch.abs(x))


def lr_at(t: float, lr: float, lr_min: float, schedule: str) -> float:
    """Learning rate at progress ``t = iteration / niter`` in [0, 1] (``lr`` at 0, ``lr_min`` at 1)."""
    if not 0 <= t <= 1:
        raise ValueError(f"schedule progress must lie in [0, 1], got {t}")
    if schedule == "linear":
        return lr + (lr_min - lr) * t
    if schedule == "cosine":
        return lr_min + (lr - lr_min) * (1 + math.cos(t * math.pi)) / 2
    raise ValueError(f"unknown schedule {schedule!r}")


_CONF_WEIGHT = {"log": torch.log, "sqrt": torch.sqrt, "m1": lambda c: c - 1, "id": lambda c: c}


def _xy_grid(H: int, W: int, device=None) -> torch.Tensor:
    """``[H, W, 2]`` float32 integer pixel coordinates ``(x, y)``."""
    y, x = torch.meshgrid(torch.arange(H, device=device), torch.arange(W, device=device), indexing="ij")
    return torch.stack([x, y], -1).float()


def _transform(T: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """``T [..., 4, 4]`` applied to ``pts [..., P, 3]`` (or ``T [4, 4]`` to ``pts [..., 3]``)."""
    return pts @ T[..., :3, :3].transpose(-1, -2) + T[..., None, :3, 3] if T.ndim > 2 else pts @ T[:3, :3].T + T[:3, 3]


def _transform_cf(T: torch.Tensor, pts: torch.Tensor) -> torch.Tensor:
    """``T [B, 4, 4]`` applied to channels-first points ``[B, 3, P]``."""
    return torch.baddbmm(T[:, :3, 3:], T[:, :3, :3], pts)


def _similarity(s: torch.Tensor | float, R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``[4, 4]`` float32 matrix of ``x -> s·R·x + t``."""
    M = torch.eye(4, device=R.device)
    M[:3, :3] = R * s
    M[:3, 3] = t.reshape(3)
    return M


def _register(src: torch.Tensor, dst: torch.Tensor, weight: torch.Tensor):
    """Weighted similarity ``dst ≈ s·R·src + t`` of ``[H, W, 3]`` point maps; returns ``(s, R, t)``."""
    R, t, s = roma.rigid_points_registration(
        src.reshape(-1, 3), dst.reshape(-1, 3), weights=weight.reshape(-1), compute_scaling=True
    )
    return s, R, t


def weiszfeld_focal(pts3d: torch.Tensor, pp: torch.Tensor | None = None) -> float:
    """The official ``estimate_focal_knowing_depth(focal_mode='weiszfeld')`` of one camera-frame point map.

    Unlike ``recon.geometry.weiszfeld_focal`` it keeps the official averaging exactly: unweighted means over
    every pixel, points with ``z = 0`` counted with ``x/z = 0``, then a clip at 0 (official ``min_focal=0``).

    Args:
        pts3d: ``[H, W, 3]`` float32 points in the camera frame.
        pp: ``[2]`` principal point; the image centre ``(W/2, H/2)`` when ``None``.
    """
    H, W, _ = pts3d.shape
    if pp is None:
        pp = torch.tensor((W / 2, H / 2), device=pts3d.device)
    pix = (_xy_grid(H, W, pts3d.device) - pp).reshape(-1, 2)
    pts = pts3d.reshape(-1, 3)
    xy = (pts[:, :2] / pts[:, 2:3]).nan_to_num(posinf=0, neginf=0)
    dot_xy_px = (xy * pix).sum(-1)
    dot_xy_xy = xy.square().sum(-1)
    focal = dot_xy_px.mean() / dot_xy_xy.mean()
    for _ in range(10):  # IRLS: re-weight by the inverse residual
        w = (pix - focal * xy).norm(dim=-1).clip(min=1e-8).reciprocal()
        focal = (w * dot_xy_px).mean() / (w * dot_xy_xy).mean()
    return float(focal.clip(min=0))


def _cv2():
    try:
        import cv2
    except ImportError as err:  # only the PnP of the initialisation needs it
        raise ImportError(
            "method='dust3r' places some views by PnP-RANSAC with OpenCV; install it with "
            "`pip install opencv-python-headless` (or `pip install recon3r[eval]`)"
        ) from err
    return cv2


def pnp_ransac(pts3d: torch.Tensor, focal: float | None, mask: torch.Tensor, niter: int):
    """Camera of a world point map by PnP-RANSAC (official ``fast_pnp``): SQPnP, ``niter`` iterations, 5 px.

    Args:
        pts3d: ``[H, W, 3]`` world points of the view's pixels.
        focal: known focal, or ``None`` to try 21 focals in ``geomspace(S/2, 3S)`` (``S = max(H, W)``) and keep
            the one with the most inliers.
        mask: ``[H, W]`` bool, the pixels to use.
        niter: RANSAC iterations.

    Returns:
        ``(focal, T_world_cam [4, 4] float32)``, or ``None`` with fewer than 4 points or no solution.
    """
    if int(mask.sum()) < 4:
        return None
    cv2 = _cv2()
    H, W, _ = pts3d.shape
    X = pts3d.detach().cpu().numpy()[mask.cpu().numpy()]
    uv = _xy_grid(H, W).numpy()[mask.cpu().numpy()]
    S = max(W, H)
    focals = [focal] if focal is not None else np.geomspace(S / 2, S * 3, 21)
    best = None
    for f in focals:
        K = np.float32([(f, 0, W / 2), (0, f, H / 2), (0, 0, 1)])
        ok, rvec, tvec, inliers = cv2.solvePnPRansac(
            X, uv, K, None, iterationsCount=niter, reprojectionError=5, flags=cv2.SOLVEPNP_SQPNP
        )
        if ok and inliers is not None and (best is None or len(inliers) > best[0]):
            best = len(inliers), rvec, tvec, f
    if best is None:
        return None
    _, rvec, tvec, f = best
    R = torch.from_numpy(cv2.Rodrigues(rvec)[0])
    T_cam_world = _similarity(1.0, R.float(), torch.from_numpy(tvec).float())
    return f, torch.linalg.inv(T_cam_world).to(pts3d.device)


# ----------------------------------------------------------------------------------------------------------------
# the problem: edges, stacked predictions, parameters


@dataclass
class _Edges:
    """Pair data of the views being aligned (indices local to them); per-edge tensors are float32."""

    shapes: list[tuple[int, int]]
    edges: list[tuple[int, int]]
    pred_i: list[torch.Tensor]  # E x [H_i, W_i, 3]
    pred_j: list[torch.Tensor]  # E x [H_j, W_j, 3]
    conf_i: list[torch.Tensor]  # E x [H_i, W_i]
    conf_j: list[torch.Tensor]  # E x [H_j, W_j]

    @property
    def n(self) -> int:
        return len(self.shapes)

    def im_conf(self) -> list[torch.Tensor]:
        """Per view the pixelwise max of its confidences over all pairs (official ``im_conf``, from zeros)."""
        out = [torch.zeros(hw, device=self.conf_i[0].device) for hw in self.shapes]
        for e, (i, j) in enumerate(self.edges):
            out[i] = torch.maximum(out[i], self.conf_i[e])
            out[j] = torch.maximum(out[j], self.conf_j[e])
        return out

    def scores(self) -> dict[tuple[int, int], float]:
        """``mean(conf_i)·mean(conf_j)`` per edge (the spanning tree's weights)."""
        return {
            ij: float(ci.mean() * cj.mean()) for ij, ci, cj in zip(self.edges, self.conf_i, self.conf_j, strict=True)
        }


def _ravel_pad(x: torch.Tensor, area: int) -> torch.Tensor:
    """``[H, W, *C]`` -> ``[area, *C]``, zero-padded (the official ``ParameterStack`` layout)."""
    x = x.reshape(x.shape[0] * x.shape[1], *x.shape[2:])
    return torch.cat([x, x.new_zeros(area - len(x), *x.shape[1:])]) if len(x) < area else x


class PointCloudOptimizer:
    """Parameters and loss of DUSt3R's ``PointCloudOptimizer`` (see the module docstring)."""

    def __init__(self, data: _Edges, cfg: Dust3rConfig, known_K: Sequence[np.ndarray | None] | None = None):
        """``known_K``: per view a ``[3, 3]`` known intrinsics (``None`` where unknown): its focal (mean of fx and
        fy) and principal point are set and held fixed (official ``preset_focal`` / ``preset_principal_point``,
        here allowed per view)."""
        dev = torch.device(cfg.device)
        self.data, self.cfg = data, cfg
        n, E = data.n, len(data.edges)
        areas = [h * w for h, w in data.shapes]
        self.max_area = A = max(areas)
        # The official draws, in this order: pair poses, then per view a depth map, then per view a pose.
        g = torch.Generator().manual_seed(cfg.seed)
        self.pw_poses = torch.randn(E, 8, generator=g)  # quaternion, signed_log1p(t / s), log s
        depth = [torch.randn(h, w, generator=g) / 10 - 3 for h, w in data.shapes]
        poses = [torch.randn(7, generator=g) for _ in range(n)]
        self.im_depthmaps = torch.stack([_ravel_pad(d, A) for d in depth])  # [n, A] log-depth
        self.im_poses = torch.stack(poses)  # [n, 7] quaternion, signed_log1p(t)
        self.im_focals = torch.tensor(
            [[cfg.focal_break * np.log(max(h, w))] for h, w in data.shapes], dtype=torch.float32
        )
        self.im_pp = torch.zeros(n, 2)  # offset / 10 from the image centre
        self.params = [self.pw_poses, self.im_depthmaps, self.im_poses, self.im_focals] + (
            [self.im_pp] if cfg.optimize_pp else []
        )
        for k, p in enumerate(self.params):
            self.params[k] = p.to(dev).requires_grad_(True)
        self.pw_poses, self.im_depthmaps, self.im_poses, self.im_focals = self.params[:4]
        self.im_pp = self.params[4] if cfg.optimize_pp else self.im_pp.to(dev)
        self.known = [K is not None for K in (known_K or [None] * n)]
        with torch.no_grad():
            for k, K in enumerate(known_K or []):
                if K is not None:
                    h, w = data.shapes[k]
                    self.im_focals[k] = cfg.focal_break * np.log((K[0, 0] + K[1, 1]) / 2)
                    self.im_pp[k] = torch.tensor([K[0, 2] - w / 2, K[1, 2] - h / 2]) / 10
        if any(self.known):
            # Known rows get no gradient, so Adam never moves them (its moments stay zero).
            frozen = torch.tensor(self.known, device=dev)[:, None]
            for p in (self.im_focals, self.im_pp):
                if p.requires_grad:
                    p.register_hook(lambda g: g.masked_fill(frozen, 0))

        self._pp = torch.tensor([(w / 2, h / 2) for h, w in data.shapes], device=dev)
        # Point maps are held channels-first ([*, 3, A]): the per-pixel 3x3 products and norms of the loss run
        # about 2.5x faster on CPU than with [*, A, 3] (measured), for the same arithmetic.
        self._grid = torch.stack([_ravel_pad(_xy_grid(h, w, dev), A).T for h, w in data.shapes])  # [n, 2, A]
        trf = _CONF_WEIGHT[cfg.conf]
        self._weight_i = torch.stack([_ravel_pad(trf(c), A) for c in data.conf_i])  # [E, A]
        self._weight_j = torch.stack([_ravel_pad(trf(c), A) for c in data.conf_j])
        self._pred_i = torch.stack([_ravel_pad(p, A).T for p in data.pred_i])  # [E, 3, A]
        self._pred_j = torch.stack([_ravel_pad(p, A).T for p in data.pred_j])
        self._ei = torch.tensor([i for i, _ in data.edges], device=dev)
        self._ej = torch.tensor([j for _, j in data.edges], device=dev)
        self.total_area_i = sum(areas[i] for i, _ in data.edges)
        self.total_area_j = sum(areas[j] for _, j in data.edges)

    # -- parameter -> quantity

    @staticmethod
    def _rigid(p: torch.Tensor) -> torch.Tensor:
        """``[B, >=7]`` quaternion + signed_log1p translation -> ``[B, 4, 4]`` (quaternion normalised)."""
        return roma.RigidUnitQuat(p[:, :4], signed_expm1(p[:, 4:7])).normalize().to_homogeneous()

    def pw_scale(self) -> torch.Tensor:
        """``[E]`` pair scales, normalised so that their geometric mean is ``base_scale``."""
        log_s = self.pw_poses[:, -1]
        return log_s.exp() * (np.log(self.cfg.base_scale) - log_s.mean()).exp()

    def pw_similarities(self) -> torch.Tensor:
        """``[E, 4, 4]`` pair-to-world similarities (the scale multiplies rotation and translation rows)."""
        RT = self._rigid(self.pw_poses)
        return torch.cat([RT[:, :3] * self.pw_scale()[:, None, None], RT[:, 3:]], 1)

    def focals(self) -> torch.Tensor:
        """``[n]`` focal lengths in pixels."""
        return (self.im_focals / self.cfg.focal_break).exp()[:, 0]

    def principal_points(self) -> torch.Tensor:
        """``[n, 2]``."""
        return self._pp + 10 * self.im_pp

    def T_world_cam(self) -> torch.Tensor:
        """``[n, 4, 4]`` camera-to-world."""
        return self._rigid(self.im_poses)

    def K(self) -> torch.Tensor:
        """``[n, 3, 3]``."""
        K = torch.zeros(self.data.n, 3, 3, device=self.im_poses.device)
        K[:, 0, 0] = K[:, 1, 1] = self.focals()
        K[:, :2, 2] = self.principal_points()
        K[:, 2, 2] = 1
        return K

    def depth_stacked(self) -> torch.Tensor:
        """``[n, A]`` z-depth (padded)."""
        return self.im_depthmaps.exp()

    def pts3d_stacked(self) -> torch.Tensor:
        """``[n, 3, A]`` world points of every pixel (padded, channels-first)."""
        d = self.depth_stacked()[:, None]
        cam = torch.cat([d * (self._grid - self.principal_points()[..., None]) / self.focals()[:, None, None], d], 1)
        return _transform_cf(self.T_world_cam(), cam)

    def unstack(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``[n, A]`` -> n ``[H, W]``, or channels-first ``[n, C, A]`` -> n ``[H, W, C]``."""
        x = x if x.ndim == 2 else x.transpose(1, 2)
        return [v[: h * w].reshape(h, w, *v.shape[1:]) for v, (h, w) in zip(x, self.data.shapes, strict=True)]

    def loss(self) -> torch.Tensor:
        S = self.pw_similarities()
        X = self.pts3d_stacked()
        d_i = (X[self._ei] - _transform_cf(S, self._pred_i)).square().sum(1)  # [E, A]
        d_j = (X[self._ej] - _transform_cf(S, self._pred_j)).square().sum(1)
        if self.cfg.dist == "l1":
            # Euclidean norm; the clamp only gives an exact zero residual the norm's zero gradient, not sqrt's inf
            d_i, d_j = d_i.clamp_min(1e-30).sqrt(), d_j.clamp_min(1e-30).sqrt()
        return (d_i * self._weight_i).sum() / self.total_area_i + (d_j * self._weight_j).sum() / self.total_area_j

    # -- setters used by the initialisation (official _set_pose / _set_depthmap / _set_focal)

    @torch.no_grad()
    def set_pose(self, which: torch.Tensor, k: int, R: torch.Tensor, t: torch.Tensor, scale=None) -> None:
        which[k, 0:4] = roma.rotmat_to_unitquat(R)
        which[k, 4:7] = signed_log1p(t.reshape(3) / (1 if scale is None else scale))  # t is a function of scale
        if scale is not None:
            which[k, 7] = float(np.log(float(scale)))

    @torch.no_grad()
    def set_depth(self, k: int, depth: torch.Tensor) -> None:
        # log of a negative or zero depth -> 0 (official ``nan_to_num(neginf=0)``, NaN -> 0 as well)
        self.im_depthmaps[k] = _ravel_pad(depth, self.max_area).log().nan_to_num(neginf=0)

    @torch.no_grad()
    def set_focal(self, k: int, focal: float) -> None:
        if not self.known[k]:  # a preset focal is never overwritten (official: frozen parameters)
            self.im_focals[k] = self.cfg.focal_break * np.log(focal)


# ----------------------------------------------------------------------------------------------------------------
# initialisation


@torch.no_grad()
def mst_init(opt: PointCloudOptimizer) -> dict:
    """The official ``init_minimum_spanning_tree``: chain registrations along the maximum spanning tree of pair
    scores, PnP for the views the chain leaves without a pose, then register every pair onto the chained points.

    Returns diagnostics: the tree's edges (in chaining order), how each view got its pose.
    """
    from scipy.sparse import csr_array
    from scipy.sparse.csgraph import minimum_spanning_tree

    data, cfg = opt.data, opt.cfg
    n, dev = data.n, opt.im_poses.device
    index = {ij: e for e, ij in enumerate(data.edges)}
    scores = data.scores()
    rows, cols = zip(*scores, strict=True)
    graph = csr_array((-np.array(list(scores.values())), (rows, cols)), shape=(n, n))
    tree = minimum_spanning_tree(graph).tocoo()
    todo = sorted(zip((-tree.data).tolist(), tree.row.tolist(), tree.col.tolist(), strict=True))

    pts3d: list[torch.Tensor | None] = [None] * n
    poses: list[torch.Tensor | None] = [None] * n
    focals: list[float | None] = [None] * n
    how = ["chain"] * n
    _, i, j = todo.pop()  # the strongest pair fixes the world frame: camera i
    e = index[(i, j)]
    pts3d[i], pts3d[j] = data.pred_i[e].clone(), data.pred_j[e].clone()
    done = {i, j}
    poses[i] = torch.eye(4, device=dev)
    focals[i] = weiszfeld_focal(data.pred_i[e])
    chain = [(i, j)]
    deferred = 0  # consecutive retries: a full round without progress means the tree is not connected
    while todo:
        if deferred >= len(todo):
            raise AlignmentError(f"the spanning tree of pair scores does not connect views {sorted(done)} to the rest")
        score, i, j = todo.pop()
        # (official) the focal of a new ``i`` is estimated from the point map of the PREVIOUS edge handled
        # (the variable holding the edge is only updated below), which may even show another view.
        if focals[i] is None:
            focals[i] = weiszfeld_focal(data.pred_i[e])
        if i in done or j in done:
            e = index[(i, j)]
            if i in done:  # align pred_i onto the world points of i, then j follows
                s, R, t = _register(data.pred_i[e], pts3d[i], data.conf_i[e])
                pts3d[j] = _transform(_similarity(s, R, t), data.pred_j[e])
                done.add(j)
            else:  # align pred_j onto the world points of j, then i follows
                s, R, t = _register(data.pred_j[e], pts3d[j], data.conf_j[e])
                pts3d[i] = _transform(_similarity(s, R, t), data.pred_i[e])
                done.add(i)
            chain.append((i, j))
            deferred = 0
            if poses[i] is None:  # the pair's frame is camera i
                poses[i] = _similarity(1.0, R, t)
        else:  # not connected to the chain yet: retry later
            todo.insert(0, (score, i, j))
            deferred += 1

    # Remaining focals: each view's best pair where it is ``i`` (official order: best score first).
    for i, j in sorted(scores, key=lambda ij: -scores[ij]):
        if focals[i] is None:
            focals[i] = weiszfeld_focal(data.pred_i[index[(i, j)]])
    im_conf = data.im_conf()
    if cfg.cv2_seed is not None and any(p is None for p in poses):
        _cv2().setRNGSeed(int(cfg.cv2_seed))
    for k in range(n):
        if poses[k] is None:
            res = pnp_ransac(pts3d[k], focals[k], im_conf[k] > cfg.min_conf_thr, cfg.niter_PnP)
            if res is not None:
                focals[k], poses[k] = res
                how[k] = "pnp"
        if poses[k] is None:
            poses[k] = torch.eye(4, device=dev)
            how[k] = "identity (PnP failed)"
            logger.warning("dust3r init: PnP found no pose for view %d; it starts at the identity", k)
    T = torch.stack(poses)

    # Pair similarities onto the chained world points, then the scale normalisation applied to the world.
    for e, (i, _j) in enumerate(data.edges):
        s, R, t = _register(data.pred_i[e], pts3d[i], data.conf_i[e])
        opt.set_pose(opt.pw_poses, e, R, t, scale=s)
    s_factor = (np.log(cfg.base_scale) - opt.pw_poses[:, -1].mean()).exp()
    T[:, :3, 3] *= s_factor
    for k in range(n):
        pts = pts3d[k] * s_factor
        opt.set_depth(k, _transform(torch.linalg.inv(T[k]), pts)[..., 2])
        opt.set_pose(opt.im_poses, k, T[k, :3, :3], T[k, :3, 3])
        if focals[k] is not None:
            opt.set_focal(k, focals[k])
    return {"mst_edges": chain, "init_pose": how, "init_loss": float(opt.loss())}


def optimise(opt: PointCloudOptimizer) -> float:
    """The official ``global_alignment_loop``; returns the loss of the last iteration (``inf`` without one)."""
    cfg = opt.cfg
    params = [p for p in opt.params if p.requires_grad]
    adam = torch.optim.Adam(params, lr=cfg.lr, betas=(0.9, 0.9))
    loss = float("inf")
    for it in range(cfg.niter):
        for group in adam.param_groups:
            group["lr"] = lr_at(it / cfg.niter, cfg.lr, cfg.lr_min, cfg.schedule)
        adam.zero_grad()
        value = opt.loss()
        value.backward()
        adam.step()
        loss = float(value.detach())
        step("alignment", it + 1, cfg.niter)  # progress / cancellation point for front-ends
    return loss


@torch.no_grad()
def clean_pointcloud(
    im_conf: Sequence[torch.Tensor],
    K: torch.Tensor,
    T_world_cam: torch.Tensor,
    depth: Sequence[torch.Tensor],
    pts3d_world: Sequence[torch.Tensor],
    tol: float = 0.001,
    bad_conf: float = 0.0,
) -> list[torch.Tensor]:
    """Lower the confidence of points seen in front of another, more confident, view's depth map (official
    ``clean_pointcloud``, the demo's ``clean_depth``).

    For every ordered pair of views ``(i, j)``, view i's points are projected into view j (nearest pixel); a point
    in front of camera j, inside its image, closer than ``(1 - tol)·depth_j`` at that pixel and less confident
    than view j's pixel there gets confidence ``min(conf, bad_conf)``. Updates are sequential, as the official:
    later comparisons see the confidences already lowered.

    Args:
        im_conf: n ``[H, W]`` confidences.
        K: ``[n, 3, 3]`` intrinsics.
        T_world_cam: ``[n, 4, 4]`` camera-to-world poses.
        depth: n ``[H, W]`` z-depths.
        pts3d_world: n ``[H, W, 3]`` world points.
        tol: relative depth tolerance in [0, 1).
        bad_conf: confidence given to rejected points.

    Returns:
        n new ``[H, W]`` confidences.
    """
    if not len(im_conf) == len(K) == len(T_world_cam) == len(depth) == len(pts3d_world):
        raise ValueError(
            "clean_pointcloud: im_conf, K, T_world_cam, depth and pts3d_world must have one entry per view"
        )
    if not 0 <= tol < 1:
        raise ValueError(f"clean_pointcloud: tol must lie in [0, 1), got {tol}")
    res = [c.clone() for c in im_conf]
    T_cam_world = torch.linalg.inv(T_world_cam)
    for i, pts in enumerate(pts3d_world):
        for j in range(len(pts3d_world)):
            if i == j:
                continue
            cam = _transform(T_cam_world[j], pts)
            z = cam[..., 2]
            pix = cam @ K[j].T
            u, v = (pix[..., :2] / pix[..., 2:3]).round().long().unbind(-1)
            H, W = res[j].shape
            inside = (z > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
            vj, uj = v[inside], u[inside]
            bad = (z[inside] < (1 - tol) * depth[j][vj, uj]) & (res[i][inside] < res[j][vj, uj])
            mask = inside.clone()
            mask[inside] = bad
            res[i][mask] = res[i][mask].clip(max=bad_conf)
    return res


# ----------------------------------------------------------------------------------------------------------------
# entry point


def _as_f32(x, what: str) -> torch.Tensor:
    t = torch.as_tensor(x).detach().float()
    if not torch.isfinite(t).all():
        raise AlignmentError(f"{what} has non-finite values")
    return t


def _read_pairs(views: Sequence[View], preds: Sequence[PairPrediction], device: torch.device):
    """Validated pair tensors (float32, as the official upcasts them) with global view indices."""
    n = len(views)
    shapes = [v.true_shape for v in views]
    edges, pi, pj, ci, cj = [], [], [], [], []
    for p in preds:
        i, j = int(p.i), int(p.j)
        if not (0 <= i < n and 0 <= j < n) or i == j:
            raise AlignmentError(f"pair ({p.i}, {p.j}) does not name two different views among {n}")
        if (i, j) in edges:
            raise AlignmentError(f"pair ({i}, {j}) is given twice")
        tensors = []
        for name, x, k, last in (
            ("pts3d_i", p.pts3d_i, i, (3,)),
            ("pts3d_j", p.pts3d_j, j, (3,)),
            ("conf_i", p.conf_i, i, ()),
            ("conf_j", p.conf_j, j, ()),
        ):
            t = _as_f32(x, f"pair ({i}, {j}) {name}")
            if tuple(t.shape) != (*shapes[k], *last):
                raise AlignmentError(
                    f"pair ({i}, {j}): {name} has shape {tuple(t.shape)}, view {k} needs {(*shapes[k], *last)}"
                )
            tensors.append(t.to(device))
        edges.append((i, j))
        for dst, t in zip((pi, pj, ci, cj), tensors, strict=True):
            dst.append(t)
    return shapes, edges, pi, pj, ci, cj


def _main_component(n: int, edges: list[tuple[int, int]], scores: list[float]) -> list[int]:
    """Views of the largest connected component of the pair graph (ties: the one holding the best pair)."""
    from scipy.sparse import csr_array
    from scipy.sparse.csgraph import connected_components

    rows, cols = zip(*edges, strict=True)
    _, label = connected_components(csr_array((np.ones(len(edges)), (rows, cols)), shape=(n, n)), directed=False)
    best = {}
    for (i, _j), s in zip(edges, scores, strict=True):
        best[label[i]] = max(best.get(label[i], -np.inf), s)
    size = np.bincount(label)
    comp = max(best, key=lambda c: (size[c], best[c]))
    return [k for k in range(n) if label[k] == comp]


def _known_K(priors: Priors | None, n: int) -> list[np.ndarray | None] | None:
    """Per view the known intrinsics of ``priors`` (a focal alone gets the image centre), or ``None``."""
    if priors is None:
        return None
    if priors.T_world_cam:
        raise AlignmentError("method='dust3r' takes no known poses; use method='dense' or 'sparse'")
    if priors.shared_intrinsics:
        raise AlignmentError("method='dust3r' has no shared intrinsics; use method='dense' or 'sparse'")
    K_list, focals = priors.K or [None] * n, priors.focal or [None] * n
    if len(K_list) != n or len(focals) != n:
        raise AlignmentError(f"priors give {len(K_list)} K and {len(focals)} focals for {n} views")
    out: list[np.ndarray | None] = []
    for K, f in zip(K_list, focals, strict=True):
        if K is None and f is not None:
            K = np.array([[f, 0, np.nan], [0, f, np.nan], [0, 0, 1]])  # centre filled in by the caller
        if K is not None and not (np.isfinite(K[:2, :2]).all() and K[0, 0] > 0 and K[1, 1] > 0):
            raise AlignmentError(f"known intrinsics need positive finite focals, got {K.tolist()}")
        out.append(None if K is None else np.asarray(K, np.float64))
    return out if any(K is not None for K in out) else None


def dust3r_align(
    views: Sequence[View],
    preds: Sequence[PairPrediction],
    priors: Priors | None = None,
    config: Dust3rConfig | None = None,
) -> Scene:
    """Align views with DUSt3R's ``PointCloudOptimizer`` (see the module docstring).

    Args:
        views: N views; ``image [3, H, W]`` gives shapes and colours (sizes may differ).
        preds: ordered pair predictions (``pts3d_i / pts3d_j [H, W, 3]`` in camera ``i``'s frame, ``conf_i /
            conf_j [H, W]``); the official demo passes both orders of every pair.
        priors: known intrinsics (``K``, or ``focal`` with the principal point at the image centre), held fixed;
            known poses and shared intrinsics are not part of this mode (an error).
        config: ``Dust3rConfig`` (official defaults when ``None``).

    Returns:
        A ``Scene``: ``conf`` = raw ``im_conf`` (or the cleaned one with ``config.clean_depth``);
        ``info["unregistered"]`` the names of views left out
        (no pair, or outside the largest connected group of pairs): those have ``registered = False``, an
        identity pose, zero depth and zero confidence.

    Raises:
        AlignmentError: inconsistent inputs, priors, or no pair at all.
    """
    cfg = config or Dust3rConfig()
    t0 = time.perf_counter()
    dev = torch.device(cfg.device)
    n = len(views)
    known_K = _known_K(priors, n)
    if known_K is not None:
        for k, K in enumerate(known_K):
            if K is not None and np.isnan(K[:2, 2]).any():
                H, W = views[k].true_shape
                K[:2, 2] = (W / 2, H / 2)
    shapes, edges, pi, pj, ci, cj = _read_pairs(views, preds, dev)
    if not edges:
        raise AlignmentError("method='dust3r' needs at least one pair prediction")
    scores = [float(a.mean() * b.mean()) for a, b in zip(ci, cj, strict=True)]
    keep = _main_component(n, edges, scores)
    local = {k: m for m, k in enumerate(keep)}
    sel = [e for e, (i, j) in enumerate(edges) if i in local and j in local]
    data = _Edges(
        shapes=[shapes[k] for k in keep],
        edges=[(local[edges[e][0]], local[edges[e][1]]) for e in sel],
        pred_i=[pi[e] for e in sel],
        pred_j=[pj[e] for e in sel],
        conf_i=[ci[e] for e in sel],
        conf_j=[cj[e] for e in sel],
    )
    left_out = [views[k].name for k in range(n) if k not in local]
    if left_out:
        logger.warning(
            "dust3r alignment: %d view(s) share no pair with the others, left out: %s",
            len(left_out),
            ", ".join(left_out),
        )

    with torch.autocast(dev.type, enabled=False):
        opt = PointCloudOptimizer(data, cfg, None if known_K is None else [known_K[k] for k in keep])
        info: dict = {"method": "dust3r", "config": dataclasses.asdict(cfg)}
        if cfg.init == "mst":
            info.update(mst_init(opt))
        t1 = time.perf_counter()
        info["loss"] = optimise(opt)
        info["t_optimise_s"] = time.perf_counter() - t1
        with torch.no_grad():
            T, K = opt.T_world_cam(), opt.K()
            depth = opt.unstack(opt.depth_stacked())
            im_conf = data.im_conf()

    T_all = np.tile(np.eye(4), (n, 1, 1))
    K_all = np.tile(np.eye(3), (n, 1, 1))
    depth_all = [np.zeros(hw, np.float32) for hw in shapes]
    conf_all = [np.zeros(hw, np.float32) for hw in shapes]
    for k, m in local.items():
        T_all[k] = T[m].cpu().double().numpy()
        K_all[k] = K[m].cpu().double().numpy()
        depth_all[k] = depth[m].cpu().numpy().astype(np.float32)
        conf_all[k] = im_conf[m].cpu().numpy().astype(np.float32)
    registered = np.array([k in local for k in range(n)])
    info.update(unregistered=left_out, n_registered=int(registered.sum()))
    scene = Scene(
        T_world_cam=T_all,
        K=K_all,
        depth=depth_all,
        conf=conf_all,
        registered=registered,
        info=info,
        **scene_view_fields(views),
    )
    if cfg.clean_depth:
        scene.conf = clean_scene_conf(scene, cfg.clean_tol, cfg.clean_bad_conf)
    scene.info["t_total_s"] = time.perf_counter() - t0
    return scene


def clean_scene_conf(scene: Scene, tol: float = 0.001, bad_conf: float = 0.0) -> list[np.ndarray]:
    """The dust3r demo's ``clean_depth`` on a ``Scene``: ``clean_pointcloud`` over its registered views, in float32.

    Args:
        scene: any aligned scene (``T_world_cam``, ``K``, ``depth``, ``conf``).
        tol: relative depth tolerance in [0, 1).
        bad_conf: confidence given to rejected points.

    Returns:
        N ``[H, W]`` float32 confidences (unregistered views keep theirs).
    """
    keep = [k for k in range(len(scene)) if scene.registered is None or scene.registered[k]]
    out = [np.asarray(c, np.float32).copy() for c in scene.conf]
    if len(keep) < 2:
        return out
    T = torch.tensor(scene.T_world_cam[keep], dtype=torch.float32)
    K = torch.tensor(scene.K[keep], dtype=torch.float32)
    depth = [torch.tensor(scene.depth[k], dtype=torch.float32) for k in keep]
    pts = []
    for d, K_k, T_k in zip(depth, K, T, strict=True):  # the optimiser's own unprojection (square pixels)
        grid = _xy_grid(*d.shape)
        cam = torch.cat([d[..., None] * (grid - K_k[:2, 2]) / K_k[0, 0], d[..., None]], -1)
        pts.append(_transform(T_k, cam))
    conf = [torch.tensor(out[k]) for k in keep]
    for k, c in zip(keep, clean_pointcloud(conf, K, T, depth, pts, tol, bad_conf), strict=True):
        out[k] = c.numpy()
    return out
