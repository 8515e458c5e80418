"""Scene builders and the one-call ``render_scene``.

Layouts:

- ``orbit``: a few textured objects (boxes, spheres, cylinders) on the floor of a large textured room, seen by an
  object-centric orbit (CO3D-like).
- ``room_walk``: a furnished room (cabinets, a table, pillars, balls, posters on the walls), seen by a camera
  walking forward or sideways through it (RealEstate10K-like).
- ``room_set``: the same kind of room, seen by an unordered set of views.

Everything is drawn from ``np.random.default_rng(seed)``: the same arguments give bit-identical views.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator

import numpy as np

from tools.synth.cameras import CameraSpec, orbit_cameras, room_set_cameras, room_walk_cameras
from tools.synth.geometry import Box, Cylinder, Primitive, Quad, Sphere
from tools.synth.render import SynthScene, SynthView, render_view
from tools.synth.texture import Material, NoiseField, random_material

logger = logging.getLogger(__name__)

LAYOUTS = ("orbit", "room_walk", "room_set")

# Room used by the room layouts: x in [-3, 3], y in [-4, 4], z in [0, 2.8].
ROOM_HALF = np.array([3.0, 4.0, 1.4])
ROOM_CENTER = np.array([0.0, 0.0, 1.4])


def _rot_z(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


class _Builder:
    """Accumulates primitives and materials while drawing from one generator."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.noise = NoiseField(rng)
        self.materials: list[Material] = []
        self.primitives: list[Primitive] = []

    def material(self, scale: float, kind: str | None = None) -> int:
        self.materials.append(random_material(self.rng, scale, kind))
        return len(self.materials) - 1

    def add(self, prim: Primitive) -> None:
        self.primitives.append(prim)

    def room(self, half: np.ndarray, center: np.ndarray, wall_scale: float) -> None:
        """A box seen from inside, with its own material on the floor, the ceiling and each wall."""
        walls = [self.material(wall_scale) for _ in range(4)]
        floor = self.material(wall_scale * 1.5, kind=self.rng.choice(["tiles", "checker", "blobs"]))
        ceiling = self.material(wall_scale * 0.8, kind="blobs")
        mats = (walls[0], walls[1], walls[2], walls[3], floor, ceiling)
        center, half = np.asarray(center, float), np.asarray(half, float)
        self.add(Box(R=np.eye(3), t=center, materials=mats, half=half, inward=True))

    def scene(self) -> SynthScene:
        az, el = self.rng.uniform(0, 2 * np.pi), self.rng.uniform(np.deg2rad(35), np.deg2rad(70))
        light = np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        return SynthScene(self.primitives, self.materials, self.noise, light_dir=light)


def _random_object(b: _Builder, xy: np.ndarray, size: float, foreground: bool = True) -> Primitive:
    """A random box, sphere or cylinder of about ``size`` resting on the floor at ``xy``."""
    rng = b.rng
    kind = rng.choice(["box", "sphere", "cylinder"], p=[0.45, 0.25, 0.3])
    scale = 2.5 / size  # about 2.5 pattern periods across the object
    if kind == "box":
        half = size * rng.uniform(0.3, 0.6, 3)
        mats = tuple(b.material(scale) for _ in range(3)) * 2  # opposite faces share a material
        mats = (mats[0], mats[3], mats[1], mats[4], mats[2], mats[5])
        return Box(R=_rot_z(rng.uniform(0, np.pi)), t=np.array([*xy, half[2]]), materials=mats, half=half,
                   foreground=foreground)  # fmt: skip
    if kind == "sphere":
        r = size * rng.uniform(0.3, 0.5)
        return Sphere(R=np.eye(3), t=np.array([*xy, r]), materials=(b.material(scale),), radius=r,
                      foreground=foreground)  # fmt: skip
    r = size * rng.uniform(0.2, 0.4)
    hh = size * rng.uniform(0.3, 0.8)
    return Cylinder(R=_rot_z(rng.uniform(0, np.pi)), t=np.array([*xy, hh]),
                    materials=(b.material(scale), b.material(scale)), radius=r, half_height=hh,
                    foreground=foreground)  # fmt: skip


def build_orbit_scene(rng: np.random.Generator, n_objects: int = 4, spread: float = 0.8) -> SynthScene:
    """A few objects on the floor of a large room (the backdrop), clustered within ``spread`` of the origin.

    Args:
        rng: the scene's generator.
        n_objects: number of objects (>= 1).
        spread: radius of the disc the objects stand in.
    """
    if n_objects < 1:
        raise ValueError(f"n_objects must be >= 1, got {n_objects}")
    b = _Builder(rng)
    b.room(half=np.array([6.0, 6.0, 3.0]), center=np.array([0.0, 0.0, 3.0]), wall_scale=1.2)
    placed: list[tuple[np.ndarray, float]] = []
    for _ in range(n_objects):
        size = rng.uniform(0.35, 0.7)
        for _attempt in range(50):
            xy = rng.uniform(-spread, spread, 2)
            if np.linalg.norm(xy) <= spread and all(np.linalg.norm(xy - p) > 0.55 * (size + s) for p, s in placed):
                break
        placed.append((xy, size))
        b.add(_random_object(b, xy, size))
    # One object on top of another adds vertical structure and occlusions.
    base = next((p for p in b.primitives[1:] if isinstance(p, Box)), None)
    if base is not None and rng.random() < 0.8:
        r = float(min(base.half[0], base.half[1]) * 0.7)
        top = base.t[2] + base.half[2] + r
        b.add(Sphere(R=np.eye(3), t=np.array([base.t[0], base.t[1], top]), materials=(b.material(2.5 / r / 2),),
                     radius=r, foreground=True))  # fmt: skip
    return b.scene()


def build_room_scene(rng: np.random.Generator, n_objects: int = 10) -> SynthScene:
    """A furnished room ``x in [-3, 3], y in [-4, 4], z in [0, 2.8]``, free of furniture where ``|x| < 1.2`` and
    ``y < 0.8`` (where the room layouts put their cameras).

    Furniture stands along the side walls and in the far half of the room; posters hang on every wall.

    Args:
        rng: the scene's generator.
        n_objects: number of pieces of furniture / objects.
    """
    b = _Builder(rng)
    b.room(ROOM_HALF, ROOM_CENTER, wall_scale=2.5)
    hx, hy = ROOM_HALF[:2]
    for i in range(n_objects):
        size = rng.uniform(0.5, 1.1)
        kind = rng.random()
        if i % 3 == 2:  # the far half of the room (+y), anywhere across: what a forward walk looks at
            xy = np.array([rng.uniform(-hx + 0.6, hx - 0.6), rng.uniform(1.4, hy - 0.5)])
        else:  # along a side wall, outside the free lane
            xy = np.array([rng.choice([-1, 1]) * rng.uniform(1.7, hx - 0.5), rng.uniform(-hy + 0.6, hy - 0.6)])
        if kind < 0.3:  # a tall cabinet
            half = np.array([size * 0.5, rng.uniform(0.2, 0.35), rng.uniform(0.4, 1.0)])
            mats = tuple(b.material(3.0) for _ in range(6))
            b.add(Box(R=_rot_z(rng.normal(0, 0.2)), t=np.array([*xy, half[2]]), materials=mats, half=half,
                      foreground=True))  # fmt: skip
        elif kind < 0.45:  # a table: a top on four legs
            top_half = np.array([size * 0.6, size * 0.4, 0.03])
            R = _rot_z(rng.uniform(0, np.pi))
            h = rng.uniform(0.65, 0.8)
            b.add(Box(R=R, t=np.array([*xy, h]), materials=(b.material(4.0),) * 6, half=top_half, foreground=True))
            leg_mat = b.material(8.0)
            for sx in (-1, 1):
                for sy in (-1, 1):
                    off = R[:2, :2] @ (np.array([sx, sy]) * (top_half[:2] - 0.06))
                    b.add(Cylinder(R=np.eye(3), t=np.array([*(xy + off), (h - 0.03) / 2]), materials=(leg_mat,) * 2,
                                   radius=0.03, half_height=(h - 0.03) / 2, foreground=True))  # fmt: skip
        else:
            b.add(_random_object(b, xy, size * 0.8))
    # Posters: thin textured quads 1 cm off each wall, good corners for matching.
    for wall in range(4):
        for _ in range(int(rng.integers(1, 3))):
            w, h = rng.uniform(0.4, 1.2), rng.uniform(0.4, 0.9)
            c = rng.uniform(-0.6, 0.6)
            z = rng.uniform(1.1, 2.0)
            mat = (b.material(rng.uniform(3.0, 6.0)),)
            if wall < 2:  # x = -+hx walls, quad normal along x
                s = -1 if wall == 0 else 1
                R = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
                t = np.array([s * (hx - 0.01), c * hy, z])
            else:  # y = -+hy walls, quad normal along y
                s = -1 if wall == 2 else 1
                R = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
                t = np.array([c * hx, s * (hy - 0.01), z])
            b.add(Quad(R=R, t=t, materials=mat, half=(w / 2, h / 2)))
    return b.scene()


_CAMERA_FN = {"orbit": orbit_cameras, "room_walk": room_walk_cameras, "room_set": room_set_cameras}
_SCENE_FN = {"orbit": build_orbit_scene, "room_walk": build_room_scene, "room_set": build_room_scene}


def _split_options(layout: str, options: dict) -> tuple[dict, dict]:
    scene_keys = set(inspect.signature(_SCENE_FN[layout]).parameters) - {"rng"}
    camera_keys = set(inspect.signature(_CAMERA_FN[layout]).parameters) - {"rng", "n_views", "size"}
    unknown = set(options) - scene_keys - camera_keys
    if unknown:
        raise TypeError(
            f"unknown option(s) {sorted(unknown)} for layout {layout!r}; valid: {sorted(scene_keys | camera_keys)}"
        )
    scene_opts = {k: v for k, v in options.items() if k in scene_keys}
    camera_opts = {k: v for k, v in options.items() if k in camera_keys}
    return scene_opts, camera_opts


def make_scene(
    layout: str = "orbit", n_views: int = 10, size: tuple[int, int] = (512, 384), seed: int = 0, **options
) -> tuple[SynthScene, list[CameraSpec]]:
    """Build a scene and its cameras without rendering (see ``render_scene`` for the arguments)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; expected one of {LAYOUTS}")
    if n_views < 1:
        raise ValueError(f"n_views must be >= 1, got {n_views}")
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"size must be (W, H) with positive entries, got {size}")
    scene_opts, camera_opts = _split_options(layout, options)
    rng = np.random.default_rng(seed)
    scene = _SCENE_FN[layout](rng, **scene_opts)
    cameras = _CAMERA_FN[layout](rng, n_views, (int(size[0]), int(size[1])), **camera_opts)
    return scene, cameras


def iter_render_scene(
    layout: str = "orbit", n_views: int = 10, size: tuple[int, int] = (512, 384), seed: int = 0, **options
) -> Iterator[SynthView]:
    """Like ``render_scene``, but yields the views one at a time (for progress bars)."""
    scene, cameras = make_scene(layout, n_views, size, seed, **options)
    for cam in cameras:
        yield render_view(scene, cam.K, cam.T_world_cam, cam.size, cam.name)


def render_scene(
    layout: str = "orbit", n_views: int = 10, size: tuple[int, int] = (512, 384), seed: int = 0, **options
) -> list[SynthView]:
    """Render a synthetic multi-view scene with known cameras.

    Args:
        layout: ``"orbit"``, ``"room_walk"`` or ``"room_set"``.
        n_views: number of views.
        size: ``(W, H)`` in pixels; ``H > W`` gives portrait views.
        seed: the scene, its textures and its cameras are all drawn from ``np.random.default_rng(seed)``.
        **options: scene options (``n_objects``, ``spread`` for orbit) and camera options of the layout's
            function in ``tools.synth.cameras`` (``focal_range``, ``mixed_orientation``, ``radius_range``,
            ``elevation_range_deg``, ``arc_deg``, ``motion``, ``length``, ...).

    Returns:
        ``n_views`` ``SynthView`` s with ``rgb [H, W, 3]`` uint8, ``depth [H, W]`` float32 z-depth (0 where
        invalid), ``mask [H, W]`` bool, ``K [3, 3]`` and ``T_world_cam [4, 4]`` float64 (OpenCV camera).

    Raises:
        ValueError: unknown layout or bad sizes; TypeError: an option the layout does not take.
    """
    return list(iter_render_scene(layout, n_views, size, seed, **options))
