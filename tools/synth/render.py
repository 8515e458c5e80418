"""CPU ray caster for scenes of analytic primitives: RGB, z-depth, validity mask per pinhole view.

Rays go through pixel centres, with the centre of the top-left pixel at ``(0, 0)`` (recon's convention), and
use the direction ``K^-1 [x, y, 1]`` in the camera frame, whose z-component is 1: the ray parameter of a hit is
therefore exactly its z-depth. Shading is Lambertian (one key light, a sky/ground hemisphere term and an
ambient floor), i.e. view-independent, so a surface point has the same colour in every view.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from tools.synth.geometry import Primitive
from tools.synth.texture import Material, NoiseField

logger = logging.getLogger(__name__)


@dataclass
class SynthView:
    """One rendered (or read back) view.

    Attributes:
        name: view name (file stem when written).
        rgb: ``[H, W, 3]`` uint8 image.
        depth: ``[H, W]`` float32 z-depth in the camera frame, 0 where invalid (``None`` if not available).
        mask: ``[H, W]`` bool, True where ``depth`` is valid (``None`` if not available).
        K: ``[3, 3]`` float64 intrinsics in pixels (pixel centres on integers).
        T_world_cam: ``[4, 4]`` float64 camera-to-world pose of an OpenCV camera (x right, y down, z forward).
        fg_mask: ``[H, W]`` bool, True on "object" primitives (not room / ground); ``None`` if unknown.
    """

    name: str
    rgb: np.ndarray | None
    depth: np.ndarray | None
    mask: np.ndarray | None
    K: np.ndarray
    T_world_cam: np.ndarray
    fg_mask: np.ndarray | None = None

    @property
    def size(self) -> tuple[int, int]:
        """``(W, H)`` of the image."""
        if self.rgb is not None:
            return int(self.rgb.shape[1]), int(self.rgb.shape[0])
        if self.depth is not None:
            return int(self.depth.shape[1]), int(self.depth.shape[0])
        raise ValueError(f"view {self.name!r} holds no image to take a size from")


@dataclass
class SynthScene:
    """A renderable scene.

    Attributes:
        primitives: the shapes; each one's ``materials`` index into ``materials``.
        materials: procedural materials.
        noise: the noise lattice all materials sample.
        light_dir: ``[3]`` unit world direction *towards* the key light.
        up: ``[3]`` unit world up direction (for the hemisphere light and the sky).
        sky: ``[2, 3]`` horizon and zenith colours in [0, 1] for rays that hit nothing.
    """

    primitives: list[Primitive]
    materials: list[Material]
    noise: NoiseField
    light_dir: np.ndarray = field(default_factory=lambda: np.array([0.4, -0.3, 0.87]))
    up: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 1.0]))
    sky: np.ndarray = field(default_factory=lambda: np.array([[0.85, 0.88, 0.92], [0.45, 0.6, 0.85]]))


def _check_camera(K: np.ndarray, T_world_cam: np.ndarray, size: tuple[int, int]) -> None:
    K = np.asarray(K)
    T = np.asarray(T_world_cam)
    if K.shape != (3, 3) or T.shape != (4, 4):
        raise ValueError(f"expected K [3, 3] and T_world_cam [4, 4], got {K.shape} and {T.shape}")
    if not np.allclose(K[2], [0, 0, 1]) or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise ValueError(f"K must be a pinhole matrix with positive focals and last row [0, 0, 1], got\n{K}")
    if not np.allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-6) or np.linalg.det(T[:3, :3]) < 0:
        raise ValueError("T_world_cam's rotation block is not a proper rotation")
    W, H = size
    if W < 1 or H < 1:
        raise ValueError(f"image size must be positive, got W={W}, H={H}")


def _screen_rect(
    corners: np.ndarray, K: np.ndarray, T_world_cam: np.ndarray, W: int, H: int
) -> tuple[int, int, int, int] | None:
    """Pixel rectangle ``(x0, x1, y0, y1)`` (exclusive ends) covering projected ``corners [8, 3]``.

    Returns the whole image when a corner is behind the camera (projection is not bounded), ``None`` when the
    shape is entirely off-screen or behind.
    """
    R, t = T_world_cam[:3, :3], T_world_cam[:3, 3]
    pc = (corners - t) @ R  # world -> camera
    if np.all(pc[:, 2] <= 1e-6):
        return None
    if np.any(pc[:, 2] <= 1e-6):
        return 0, W, 0, H
    uv = pc @ K.T
    uv = uv[:, :2] / uv[:, 2:]
    x0, y0 = np.floor(uv.min(axis=0)).astype(int) - 1
    x1, y1 = np.ceil(uv.max(axis=0)).astype(int) + 2
    x0, x1 = max(x0, 0), min(x1, W)
    y0, y1 = max(y0, 0), min(y1, H)
    if x0 >= x1 or y0 >= y1:
        return None
    return x0, x1, y0, y1


def render_view(
    scene: SynthScene, K: np.ndarray, T_world_cam: np.ndarray, size: tuple[int, int], name: str = "view"
) -> SynthView:
    """Ray-cast one pinhole view of ``scene``.

    Args:
        scene: the scene.
        K: ``[3, 3]`` intrinsics in pixels.
        T_world_cam: ``[4, 4]`` camera-to-world pose (OpenCV camera).
        size: ``(W, H)`` in pixels.
        name: the view's name.

    Returns:
        A ``SynthView`` with ``rgb [H, W, 3]`` uint8, ``depth [H, W]`` float32 z-depth (0 on misses),
        ``mask [H, W]`` (hit), ``fg_mask [H, W]`` (hit on a foreground primitive).
    """
    _check_camera(K, T_world_cam, size)
    K = np.asarray(K, dtype=np.float64)
    T_world_cam = np.asarray(T_world_cam, dtype=np.float64)
    W, H = int(size[0]), int(size[1])
    R, o = T_world_cam[:3, :3], T_world_cam[:3, 3]

    K_inv = np.linalg.inv(K)
    xs = np.tile(np.arange(W, dtype=np.float64), H)
    ys = np.repeat(np.arange(H, dtype=np.float64), W)
    d_cam = xs[:, None] * K_inv[:, 0] + ys[:, None] * K_inv[:, 1] + K_inv[:, 2]  # [P, 3], z == 1
    d_world = d_cam @ R.T
    flat_idx = np.arange(H * W).reshape(H, W)

    t_best = np.full(H * W, np.inf)
    who = np.full(H * W, -1, dtype=np.int64)
    for k, prim in enumerate(scene.primitives):
        corners = prim.bound_corners()
        if corners is None:
            sel = slice(None)
        else:
            rect = _screen_rect(corners, K, T_world_cam, W, H)
            if rect is None:
                continue
            x0, x1, y0, y1 = rect
            sel = flat_idx[y0:y1, x0:x1].ravel()
        o_l, d_l = prim.to_local(o, d_world[sel])
        t = prim.intersect(o_l, d_l)
        closer = t < t_best[sel]
        idx = np.flatnonzero(closer) if isinstance(sel, slice) else sel[closer]
        t_best[idx] = t[closer]
        who[idx] = k

    hit = np.isfinite(t_best)
    f_mean = 0.5 * (K[0, 0] + K[1, 1])
    ray_len = np.linalg.norm(d_cam, axis=-1)
    color = np.zeros((H * W, 3))
    fg = np.zeros(H * W, dtype=bool)
    up = scene.up / np.linalg.norm(scene.up)
    light = scene.light_dir / np.linalg.norm(scene.light_dir)
    # Group hit pixels by primitive once (a stable sort), instead of one full-image comparison per primitive.
    order = np.argsort(who, kind="stable")
    bounds = np.searchsorted(who[order], np.arange(len(scene.primitives) + 1))
    for k, prim in enumerate(scene.primitives):
        idx = order[bounds[k] : bounds[k + 1]]
        if idx.size == 0:
            continue
        fg[idx] = prim.foreground
        o_l, d_l = prim.to_local(o, d_world[idx])
        p_l = o_l + t_best[idx, None] * d_l
        n_l = prim.normal(p_l, d_l)
        n_w = n_l @ prim.R.T
        cos = np.abs(np.einsum("ij,ij->i", n_w, d_world[idx])) / ray_len[idx]
        # World size of one pixel on the surface: z/f across the ray, stretched at grazing angles (capped).
        footprint = t_best[idx] * ray_len[idx] / f_mean / np.maximum(cos, 0.25)
        faces = prim.face_ids(p_l)
        albedo = np.empty((idx.size, 3))
        for face in np.unique(faces):
            m = faces == face
            material = scene.materials[prim.materials[min(int(face), len(prim.materials) - 1)]]
            albedo[m] = material.albedo(scene.noise, p_l[m], footprint[m])
        shade = 0.35 + 0.5 * np.maximum(n_w @ light, 0.0) + 0.25 * (0.5 + 0.5 * (n_w @ up))
        color[idx] = albedo * shade[:, None]

    miss = ~hit
    if miss.any():
        elev = np.clip((d_world[miss] @ up) / ray_len[miss], 0.0, 1.0)
        color[miss] = scene.sky[0] + np.sqrt(elev)[:, None] * (scene.sky[1] - scene.sky[0])

    rgb = np.clip(np.round(color * 255.0), 0, 255).astype(np.uint8).reshape(H, W, 3)
    depth = np.where(hit, t_best, 0.0).astype(np.float32).reshape(H, W)
    return SynthView(
        name=name,
        rgb=rgb,
        depth=depth,
        mask=hit.reshape(H, W),
        K=K.copy(),
        T_world_cam=T_world_cam.copy(),
        fg_mask=fg.reshape(H, W),
    )
