"""Analytic primitives for the synthetic renderer: exact ray intersections, normals and face ids.

Every primitive lives in its own local frame, placed in the world by a rigid pose ``(R_world_local,
t_world_local)``. Rays are intersected in the local frame; since the pose is rigid, the ray parameter ``t`` is
the same in both frames. Rays are ``o + t * d`` with *unnormalised* ``d`` (the renderer uses ``d`` with a camera
z-component of 1, so ``t`` is directly the z-depth).

Misses are ``inf``. Only hits with ``t > EPS`` count, so surfaces behind the camera never show.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

logger = logging.getLogger(__name__)

EPS = 1e-6


def _safe_dir(d: np.ndarray) -> np.ndarray:
    """Replace exact zeros in ray directions so slab divisions give +-inf instead of NaN."""
    return np.where(np.abs(d) < 1e-12, 1e-12, d)


@dataclass
class Primitive:
    """Base class: a shape with a rigid pose and one material index per face.

    Attributes:
        R: ``[3, 3]`` rotation local -> world.
        t: ``[3]`` position of the local origin in the world.
        materials: material indices into the scene's material list, one per face id (see ``face_ids``).
        foreground: whether pixels of this primitive count as "object" (CO3D foreground masks).
    """

    R: np.ndarray = field(default_factory=lambda: np.eye(3))
    t: np.ndarray = field(default_factory=lambda: np.zeros(3))
    materials: tuple[int, ...] = (0,)
    foreground: bool = False

    def to_local(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """World rays ``o [3]`` or ``[P, 3]``, ``d [P, 3]`` -> local frame (row vectors: ``x_l = (x - t) R``)."""
        return (o - self.t) @ self.R, d @ self.R

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Ray parameters ``[P]`` of the first visible hit (``inf`` on a miss), local-frame rays."""
        raise NotImplementedError

    def normal(self, p: np.ndarray, d: np.ndarray) -> np.ndarray:
        """Unit local normals ``[M, 3]`` at local hit points ``p [M, 3]``, facing the incoming rays ``d``."""
        raise NotImplementedError

    def face_ids(self, p: np.ndarray) -> np.ndarray:
        """``[M]`` int face index at local hit points (indexes ``materials``); a single face by default."""
        return np.zeros(len(p), dtype=np.int64)

    def local_half_extent(self) -> np.ndarray | None:
        """``[3]`` half-size of a local box enclosing the shape, or ``None`` if unbounded / seen from inside."""
        return None

    def bound_corners(self) -> np.ndarray | None:
        """``[8, 3]`` world corners of a box enclosing the shape (for screen-space culling), or ``None``."""
        h = self.local_half_extent()
        if h is None:
            return None
        signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=np.float64)
        return (signs * h) @ self.R.T + self.t


def _face_towards(n: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Flip normals so they face against the ray direction (two-sided shading)."""
    flip = np.einsum("ij,ij->i", n, d) > 0
    n[flip] *= -1
    return n


@dataclass
class Box(Primitive):
    """Axis-aligned box ``|x_l| <= half`` in its local frame; ``inward=True`` renders it from inside (a room).

    Face ids: ``2 * axis + (coordinate > 0)``, i.e. 0 -x, 1 +x, 2 -y, 3 +y, 4 -z, 5 +z.
    """

    half: np.ndarray = field(default_factory=lambda: np.ones(3))
    inward: bool = False

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        o = np.broadcast_to(o, d.shape)
        t_near = np.full(len(d), -np.inf)
        t_far = np.full(len(d), np.inf)
        # Slab test, one axis at a time: column-wise min/max is much faster than reductions over a length-3 axis.
        for a in range(3):
            inv = 1.0 / _safe_dir(d[:, a])
            t1 = (-self.half[a] - o[:, a]) * inv
            t2 = (self.half[a] - o[:, a]) * inv
            np.maximum(t_near, np.minimum(t1, t2), out=t_near)
            np.minimum(t_far, np.maximum(t1, t2), out=t_far)
        ok = t_near <= t_far
        if self.inward:
            t = np.where(ok & (t_far > EPS), t_far, np.inf)
        else:
            t = np.where(ok & (t_near > EPS), t_near, np.inf)
        return t

    def local_half_extent(self) -> np.ndarray | None:
        return None if self.inward else np.asarray(self.half, dtype=np.float64)

    def _axis(self, p: np.ndarray) -> np.ndarray:
        return np.argmax(np.abs(p) / self.half, axis=-1)

    def normal(self, p: np.ndarray, d: np.ndarray) -> np.ndarray:
        axis = self._axis(p)
        n = np.zeros_like(p)
        rows = np.arange(len(p))
        n[rows, axis] = np.sign(p[rows, axis])
        return _face_towards(n, d)

    def face_ids(self, p: np.ndarray) -> np.ndarray:
        axis = self._axis(p)
        positive = p[np.arange(len(p)), axis] > 0
        return 2 * axis + positive.astype(np.int64)


@dataclass
class Sphere(Primitive):
    """Sphere of ``radius`` centred at the local origin."""

    radius: float = 1.0

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        a = np.einsum("ij,ij->i", d, d)
        o = np.broadcast_to(o, d.shape)
        b = np.einsum("ij,ij->i", o, d)
        c = np.einsum("ij,ij->i", o, o) - self.radius**2
        disc = b * b - a * c
        sq = np.sqrt(np.maximum(disc, 0.0))
        t0 = (-b - sq) / a
        t1 = (-b + sq) / a
        t = np.where(t0 > EPS, t0, np.where(t1 > EPS, t1, np.inf))
        return np.where(disc >= 0, t, np.inf)

    def local_half_extent(self) -> np.ndarray | None:
        return np.full(3, float(self.radius))

    def normal(self, p: np.ndarray, d: np.ndarray) -> np.ndarray:
        return _face_towards(p / np.linalg.norm(p, axis=-1, keepdims=True), d)


@dataclass
class Cylinder(Primitive):
    """Closed cylinder along the local z axis: ``x^2 + y^2 <= radius^2``, ``|z| <= half_height``.

    Face ids: 0 the side, 1 the caps.
    """

    radius: float = 1.0
    half_height: float = 1.0

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        o = np.broadcast_to(o, d.shape)
        a = d[:, 0] ** 2 + d[:, 1] ** 2
        b = o[:, 0] * d[:, 0] + o[:, 1] * d[:, 1]
        c = o[:, 0] ** 2 + o[:, 1] ** 2 - self.radius**2
        disc = b * b - a * c
        sq = np.sqrt(np.maximum(disc, 0.0))
        a_safe = np.where(a > 1e-18, a, 1e-18)
        t_best = np.full(len(d), np.inf)
        for t_side in ((-b - sq) / a_safe, (-b + sq) / a_safe):
            z = o[:, 2] + t_side * d[:, 2]
            ok = (disc >= 0) & (a > 1e-18) & (t_side > EPS) & (np.abs(z) <= self.half_height)
            t_best = np.where(ok & (t_side < t_best), t_side, t_best)
        dz = _safe_dir(d[:, 2])
        for zc in (-self.half_height, self.half_height):
            t_cap = (zc - o[:, 2]) / dz
            x = o[:, 0] + t_cap * d[:, 0]
            y = o[:, 1] + t_cap * d[:, 1]
            ok = (t_cap > EPS) & (x * x + y * y <= self.radius**2)
            t_best = np.where(ok & (t_cap < t_best), t_cap, t_best)
        return t_best

    def local_half_extent(self) -> np.ndarray | None:
        return np.array([self.radius, self.radius, self.half_height], dtype=np.float64)

    def _is_cap(self, p: np.ndarray) -> np.ndarray:
        # Nearer to a cap plane (relative) than to the side surface.
        r = np.hypot(p[:, 0], p[:, 1])
        return np.abs(np.abs(p[:, 2]) - self.half_height) < np.abs(r - self.radius)

    def normal(self, p: np.ndarray, d: np.ndarray) -> np.ndarray:
        cap = self._is_cap(p)
        n = np.zeros_like(p)
        n[:, :2] = p[:, :2]
        n[cap] = 0.0
        n[cap, 2] = np.sign(p[cap, 2])
        n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
        return _face_towards(n, d)

    def face_ids(self, p: np.ndarray) -> np.ndarray:
        return self._is_cap(p).astype(np.int64)


@dataclass
class Quad(Primitive):
    """Two-sided rectangle in the local plane ``z = 0``, ``|x| <= half[0]``, ``|y| <= half[1]`` (inf = a plane)."""

    half: tuple[float, float] = (1.0, 1.0)

    def intersect(self, o: np.ndarray, d: np.ndarray) -> np.ndarray:
        o = np.broadcast_to(o, d.shape)
        t = -o[:, 2] / _safe_dir(d[:, 2])
        x = o[:, 0] + t * d[:, 0]
        y = o[:, 1] + t * d[:, 1]
        ok = (t > EPS) & (np.abs(x) <= self.half[0]) & (np.abs(y) <= self.half[1])
        return np.where(ok, t, np.inf)

    def local_half_extent(self) -> np.ndarray | None:
        if not np.all(np.isfinite(self.half)):
            return None
        return np.array([self.half[0], self.half[1], 1e-6], dtype=np.float64)

    def normal(self, p: np.ndarray, d: np.ndarray) -> np.ndarray:
        n = np.zeros_like(p)
        n[:, 2] = 1.0
        return _face_towards(n, d)
