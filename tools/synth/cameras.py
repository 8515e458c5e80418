"""Camera layouts for synthetic scenes: object-centric orbit, a walk through a room, an unordered set in a room.

All poses are ``T_world_cam`` (camera-to-world, OpenCV camera: x right, y down, z forward) in a z-up world.
Focal lengths are drawn once per sequence from ``focal_range``, given as a multiple of the longer image side,
so a portrait and a landscape view of one sequence are the same camera turned by 90 degrees.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from recon.geometry import K_from_focal

logger = logging.getLogger(__name__)

UP = np.array([0.0, 0.0, 1.0])


@dataclass
class CameraSpec:
    """A camera to render: ``name``, ``K [3, 3]`` (pixels), ``T_world_cam [4, 4]``, ``size (W, H)``."""

    name: str
    K: np.ndarray
    T_world_cam: np.ndarray
    size: tuple[int, int]


def look_at(eye: np.ndarray, target: np.ndarray, up: np.ndarray = UP, roll_deg: float = 0.0) -> np.ndarray:
    """``[4, 4]`` camera-to-world pose of an OpenCV camera at ``eye`` looking at ``target``.

    The image's "down" (y) is the world ``-up`` projected on the image plane; ``roll_deg`` turns the camera
    about its optical axis (positive = clockwise in the image).

    Raises:
        ValueError: if ``eye == target`` or the viewing direction is parallel to ``up``.
    """
    eye = np.asarray(eye, dtype=np.float64)
    z = np.asarray(target, dtype=np.float64) - eye
    nz = np.linalg.norm(z)
    if nz < 1e-12:
        raise ValueError("look_at: eye and target coincide")
    z /= nz
    x = np.cross(z, up)
    nx = np.linalg.norm(x)
    if nx < 1e-9:
        raise ValueError("look_at: viewing direction is parallel to the up vector")
    x /= nx
    y = np.cross(z, x)
    R = np.stack([x, y, z], axis=1)
    if roll_deg:
        a = np.deg2rad(roll_deg)
        c, s = np.cos(a), np.sin(a)
        R = R @ np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = eye
    return T


def _sizes(size: tuple[int, int], n: int, mixed_orientation: bool, rng: np.random.Generator) -> list[tuple[int, int]]:
    W, H = int(size[0]), int(size[1])
    if not mixed_orientation:
        return [(W, H)] * n
    swap = rng.permutation(np.arange(n) % 2 == 1)  # half the views turned by 90 degrees, in random places
    return [(H, W) if s else (W, H) for s in swap]


def _focal(rng: np.random.Generator, focal_range: tuple[float, float], size: tuple[int, int]) -> float:
    lo, hi = focal_range
    if not 0 < lo <= hi:
        raise ValueError(f"focal_range must satisfy 0 < lo <= hi, got {focal_range}")
    return float(rng.uniform(lo, hi) * max(size))


def orbit_cameras(
    rng: np.random.Generator,
    n_views: int,
    size: tuple[int, int],
    center: tuple[float, float, float] = (0.0, 0.0, 0.3),
    radius_range: tuple[float, float] = (2.0, 2.8),
    elevation_range_deg: tuple[float, float] = (15.0, 40.0),
    arc_deg: float = 360.0,
    focal_range: tuple[float, float] = (0.9, 1.1),
    roll_deg: float = 3.0,
    mixed_orientation: bool = False,
) -> list[CameraSpec]:
    """Object-centric orbit (CO3D-like): azimuth sweeps ``arc_deg`` while elevation and distance vary smoothly.

    Args:
        rng: the scene's generator.
        n_views: number of cameras.
        size: ``(W, H)``.
        center: the point the cameras look at (each gets a small random offset from it).
        radius_range: camera distance range from ``center``.
        elevation_range_deg: elevation range above the horizontal plane through ``center``.
        arc_deg: azimuth span; 360 closes the loop (views evenly spaced, the last not repeating the first).
        focal_range: focal as a multiple of the longer image side.
        roll_deg: standard deviation of a random camera roll.
        mixed_orientation: turn half of the views to the other orientation.
    """
    sizes = _sizes(size, n_views, mixed_orientation, rng)
    focal = _focal(rng, focal_range, size)
    az0 = rng.uniform(0, 2 * np.pi)
    step = np.deg2rad(arc_deg) / (n_views if arc_deg >= 360 else max(n_views - 1, 1))
    ph_e, ph_r = rng.uniform(0, 2 * np.pi, 2)
    center = np.asarray(center, dtype=np.float64)
    cams = []
    for i in range(n_views):
        u = i / max(n_views, 1)
        az = az0 + i * step + rng.normal(0, 0.1 * step)
        el = np.deg2rad(np.interp(0.5 + 0.5 * np.sin(2 * np.pi * u * 1.5 + ph_e), [0, 1], elevation_range_deg))
        r = np.interp(0.5 + 0.5 * np.sin(2 * np.pi * u + ph_r), [0, 1], radius_range)
        eye = center + r * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        target = center + rng.normal(0, 0.05, 3)
        T = look_at(eye, target, roll_deg=float(rng.normal(0, roll_deg)))
        cams.append(CameraSpec(f"view_{i:03d}", K_from_focal(focal, sizes[i][::-1]), T, sizes[i]))
    return cams


def room_walk_cameras(
    rng: np.random.Generator,
    n_views: int,
    size: tuple[int, int],
    start: tuple[float, float] = (0.0, -2.6),
    length: float = 2.5,
    sway: float = 0.35,
    height: float = 1.5,
    motion: str = "forward",
    yaw_amplitude_deg: float = 12.0,
    focal_range: tuple[float, float] = (0.6, 0.75),
    mixed_orientation: bool = False,
) -> list[CameraSpec]:
    """A walk through a room (RealEstate10K-like): the camera moves along +y with a lateral sway.

    Args:
        rng: the scene's generator.
        n_views: number of cameras, evenly spaced along the path.
        size: ``(W, H)``.
        start: ``(x, y)`` of the first camera.
        length: path length along +y (world units).
        sway: amplitude of the lateral (x) sway.
        height: camera height above the floor.
        motion: ``"forward"`` (looking along the path), ``"sideways"`` (looking across it, a truck shot) or
            ``"mixed"`` (turning from forward to sideways along the path).
        yaw_amplitude_deg: amplitude of a slow pan around the nominal viewing direction.
        focal_range: focal as a multiple of the longer image side.
        mixed_orientation: turn half of the views to the other orientation.
    """
    if motion not in ("forward", "sideways", "mixed"):
        raise ValueError(f"motion must be 'forward', 'sideways' or 'mixed', got {motion!r}")
    sizes = _sizes(size, n_views, mixed_orientation, rng)
    focal = _focal(rng, focal_range, size)
    side = rng.choice([-1.0, 1.0])
    ph = rng.uniform(0, 2 * np.pi, 3)
    cams = []
    for i in range(n_views):
        u = i / max(n_views - 1, 1)
        x = start[0] + sway * np.sin(2 * np.pi * 0.6 * u + ph[0])
        y = start[1] + length * u
        z = height + 0.05 * np.sin(2 * np.pi * u + ph[1])
        if motion == "forward":
            base_yaw = 0.0
        elif motion == "sideways":
            base_yaw = side * 70.0
        else:
            base_yaw = side * 70.0 * u
        yaw = np.deg2rad(base_yaw + yaw_amplitude_deg * np.sin(2 * np.pi * 0.8 * u + ph[2]))
        pitch = np.deg2rad(-8.0 + rng.normal(0, 2.0))
        fwd = np.array([np.sin(yaw) * np.cos(pitch), np.cos(yaw) * np.cos(pitch), np.sin(pitch)])
        eye = np.array([x, y, z])
        T = look_at(eye, eye + fwd, roll_deg=float(rng.normal(0, 1.5)))
        cams.append(CameraSpec(f"view_{i:03d}", K_from_focal(focal, sizes[i][::-1]), T, sizes[i]))
    return cams


def room_set_cameras(
    rng: np.random.Generator,
    n_views: int,
    size: tuple[int, int],
    region: tuple[float, float, float, float] = (-1.0, 1.0, -2.8, 0.2),
    height_range: tuple[float, float] = (1.2, 1.8),
    focal_range: tuple[float, float] = (0.6, 0.8),
    mixed_orientation: bool = False,
) -> list[CameraSpec]:
    """An unordered set of views inside a room: random positions, viewing directions covering the room.

    Yaws are spread around the circle (evenly, with jitter) so consecutive directions overlap, then the views
    are shuffled: the order carries no information.

    Args:
        rng: the scene's generator.
        n_views: number of cameras.
        size: ``(W, H)``.
        region: ``(x_min, x_max, y_min, y_max)`` where cameras may stand (free of furniture).
        height_range: camera height range.
        focal_range: focal as a multiple of the longer image side.
        mixed_orientation: turn half of the views to the other orientation.
    """
    sizes = _sizes(size, n_views, mixed_orientation, rng)
    focal = _focal(rng, focal_range, size)
    yaw0 = rng.uniform(0, 2 * np.pi)
    yaws = yaw0 + 2 * np.pi * np.arange(n_views) / n_views + rng.normal(0, 0.15 * np.pi / n_views, n_views)
    order = rng.permutation(n_views)
    cams = []
    for i, k in enumerate(order):
        eye = np.array([rng.uniform(region[0], region[1]), rng.uniform(region[2], region[3]), 0.0])
        eye[2] = rng.uniform(*height_range)
        pitch = np.deg2rad(rng.uniform(-15.0, 5.0))
        fwd = np.array([np.sin(yaws[k]) * np.cos(pitch), np.cos(yaws[k]) * np.cos(pitch), np.sin(pitch)])
        T = look_at(eye, eye + fwd, roll_deg=float(rng.normal(0, 2.0)))
        cams.append(CameraSpec(f"view_{i:03d}", K_from_focal(focal, sizes[i][::-1]), T, sizes[i]))
    return cams
