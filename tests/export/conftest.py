"""Synthetic scenes with analytic geometry: a few OpenCV cameras looking at a textured plane ``z = PLANE_Z``."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from recon.types import Scene

PLANE_Z = 5.0
# Network images are H x W; original images are SCALE times larger. With the pixel centre of the top-left pixel
# at 0 in both, x_orig = SCALE * (x + 0.5) - 0.5.
H, W = 24, 32
SCALE = 2.0
NET_TO_ORIG = np.array([[SCALE, 0, 0.5 * SCALE - 0.5], [0, SCALE, 0.5 * SCALE - 0.5], [0, 0, 1.0]])


def look_at(centre, target) -> np.ndarray:
    """``[4, 4]`` camera-to-world of an OpenCV camera at ``centre`` looking at ``target`` (world y is down)."""
    centre, target = np.asarray(centre, float), np.asarray(target, float)
    z = target - centre
    z /= np.linalg.norm(z)
    x = np.cross([0.0, 1.0, 0.0], z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, y, z], axis=1)
    T[:3, 3] = centre
    return T


def plane_depth(T_world_cam: np.ndarray, K: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """``[H, W]`` z-depth of the plane ``z = PLANE_Z`` seen by the camera (ray-plane intersection)."""
    h, w = hw
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    rays = np.stack([x, y, np.ones_like(x)], -1) @ np.linalg.inv(K).T  # camera rays with z = 1
    d_world = rays @ T_world_cam[:3, :3].T
    return ((PLANE_Z - T_world_cam[2, 3]) / d_world[..., 2]).astype(np.float32)


def plane_colors(T_world_cam: np.ndarray, K: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` uint8 checkerboard texture of the plane, seen from the camera."""
    h, w = depth.shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    rays = np.stack([x, y, np.ones_like(x)], -1) @ np.linalg.inv(K).T
    pts = (rays * depth[..., None]) @ T_world_cam[:3, :3].T + T_world_cam[:3, 3]
    checker = (np.floor(pts[..., 0] * 2) + np.floor(pts[..., 1] * 2)) % 2
    rgb = np.stack([40 + 180 * checker, 90 + 0 * checker, 200 - 150 * checker], -1)
    return rgb.astype(np.uint8)


def make_scene(
    n: int = 3,
    *,
    focals: tuple[float, ...] | None = None,
    conf: float = 5.0,
    with_orig: bool = True,
    registered: np.ndarray | None = None,
) -> Scene:
    """``n`` cameras on a small arc 5 units in front of the plane, all looking at its centre."""
    focals = focals or (30.0,) * n
    Ts, Ks, depth, confs, colors = [], [], [], [], []
    for k in range(n):
        angle = (k - (n - 1) / 2) * 0.15
        T = look_at([2.0 * np.sin(angle), 0.3 * k - 0.3, PLANE_Z - 5.0 * np.cos(angle)], [0.0, 0.0, PLANE_Z])
        K = np.array([[focals[k], 0, (W - 1) / 2], [0, focals[k], (H - 1) / 2], [0, 0, 1.0]])
        d = plane_depth(T, K, (H, W))
        Ts.append(T)
        Ks.append(K)
        depth.append(d)
        confs.append(np.full((H, W), conf, dtype=np.float32))
        colors.append(plane_colors(T, K, d))
    return Scene(
        T_world_cam=np.stack(Ts),
        K=np.stack(Ks),
        depth=depth,
        conf=confs,
        colors=colors,
        names=[f"view_{k}.png" for k in range(n)],
        net_to_orig=[NET_TO_ORIG.copy() for _ in range(n)] if with_orig else None,
        orig_sizes=[(int(H * SCALE), int(W * SCALE))] * n if with_orig else None,
        registered=registered,
        info={"loss": 0.25, "iters": [300, 300], "backbone": "synthetic"},
    )


@pytest.fixture
def scene() -> Scene:
    return make_scene()


@pytest.fixture
def synth() -> SimpleNamespace:
    """The helpers and constants of this module (test files are not importable packages here)."""
    return SimpleNamespace(
        make_scene=make_scene,
        look_at=look_at,
        plane_depth=plane_depth,
        H=H,
        W=W,
        SCALE=SCALE,
        NET_TO_ORIG=NET_TO_ORIG,
        PLANE_Z=PLANE_Z,
    )
