"""Pair geometry for decoder finetuning: crops and resizes that keep intrinsics right, point maps, GT matches.

Conventions (DESIGN.md): ``K`` in pixels with pixel centres on integer coordinates (the image spans
``[-0.5, W - 0.5]``), ``T_world_cam`` a 4x4 OpenCV camera-to-world, ``depth`` a z-depth with 0 where invalid.

- ``crop_resize``: one crop around the principal point with the target's aspect ratio, then one resize to the
  target. The principal point stays (to half a pixel) at the centre, as DUSt3R's ``crop_resize_if_necessary``
  does with its centred crops. Colours are resampled with PIL (Lanczos down, bicubic up); depth, masks and the
  world points are sampled at the nearest source pixel, so no value is ever interpolated across a depth edge
  and every output pixel carries a true surface point.
- ``reciprocal_matches``: ground-truth correspondences from the two point maps and cameras: view-1 pixels
  projected into view 2 whose hit, projected back, lands on the same view-1 pixel and agrees in depth.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace

import numpy as np

logger = logging.getLogger(__name__)


@dataclass
class Frame:
    """One training view before batching.

    Attributes:
        rgb: ``[H, W, 3]`` uint8.
        depth: ``[H, W]`` float32 z-depth, 0 where invalid.
        K: ``[3, 3]`` float64 intrinsics in pixels of this image.
        T_world_cam: ``[4, 4]`` float64 camera-to-world (OpenCV).
        sky: ``[H, W]`` bool, pixels known to be sky (no surface at any distance); ``None`` = none known.
        pts3d: ``[H, W, 3]`` float32 world points (filled by ``with_points`` / ``crop_resize``).
    """

    rgb: np.ndarray
    depth: np.ndarray
    K: np.ndarray
    T_world_cam: np.ndarray
    sky: np.ndarray | None = None
    pts3d: np.ndarray | None = None

    @property
    def size(self) -> tuple[int, int]:
        """``(W, H)``."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])

    @property
    def valid(self) -> np.ndarray:
        """``[H, W]`` bool: finite positive depth."""
        return np.isfinite(self.depth) & (self.depth > 0)


def depth_to_world(depth: np.ndarray, K: np.ndarray, T_world_cam: np.ndarray) -> np.ndarray:
    """Unproject a z-depth map: ``[H, W]`` -> world points ``[H, W, 3]`` float32 (garbage where depth is 0)."""
    H, W = depth.shape
    x, y = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    z = depth.astype(np.float64)
    X = (x - K[0, 2]) / K[0, 0] * z
    Y = (y - K[1, 2]) / K[1, 1] * z
    cam = np.stack([X, Y, z], axis=-1)  # H W 3
    world = cam @ T_world_cam[:3, :3].T + T_world_cam[:3, 3]
    return world.astype(np.float32)


def with_points(frame: Frame) -> Frame:
    """``frame`` with ``pts3d`` computed from its depth (a no-op when already present)."""
    if frame.pts3d is not None:
        return frame
    return replace(frame, pts3d=depth_to_world(frame.depth, frame.K, frame.T_world_cam))


def crop_box(
    size: tuple[int, int], K: np.ndarray, target: tuple[int, int], zoom: float = 1.0
) -> tuple[int, int, int, int]:
    """Integer crop ``(x0, y0, w, h)`` centred on the principal point, with ``target``'s aspect ratio.

    The largest box centred on ``(cx, cy)`` that fits in the image is found first; inside it, the largest box of
    aspect ``target`` (``W_t / H_t``), shrunk by ``1 / zoom`` (``zoom >= 1`` zooms in).

    Raises:
        ValueError: the principal point lies outside the image, or the box would be empty.
    """
    W, H = size
    cx, cy = float(K[0, 2]), float(K[1, 2])
    half_w = min(cx + 0.5, W - 0.5 - cx)  # distance from the principal point to the nearer image edge
    half_h = min(cy + 0.5, H - 0.5 - cy)
    if half_w <= 0 or half_h <= 0:
        raise ValueError(f"principal point ({cx:.1f}, {cy:.1f}) lies outside the {W}x{H} image")
    aspect = target[0] / target[1]
    bw, bh = 2 * half_w, 2 * half_h
    if bw / bh > aspect:
        bw = bh * aspect
    else:
        bh = bw / aspect
    bw, bh = bw / zoom, bh / zoom
    w, h = max(1, int(math.floor(bw))), max(1, int(math.floor(bh)))
    x0 = int(round(cx + 0.5 - w / 2))
    y0 = int(round(cy + 0.5 - h / 2))
    x0, y0 = min(max(x0, 0), W - w), min(max(y0, 0), H - h)
    return x0, y0, w, h


def _nearest_index(n_out: int, n_in: int) -> np.ndarray:
    """Source index of each output pixel's centre for a resize of ``n_in`` -> ``n_out`` samples."""
    return np.minimum(np.floor((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.int64), n_in - 1)


def crop_resize(frame: Frame, target: tuple[int, int], zoom: float = 1.0) -> Frame:
    """Crop around the principal point to ``target``'s aspect and resize to ``target = (W, H)`` exactly.

    Intrinsics follow the crop (``c -= offset``) and the resize (``f *= s``, ``c = (c + 0.5) * s - 0.5`` with the
    per-axis scale ``s``). Depth is recomputed from the sampled world points, so it stays the z of a true surface
    point in the new camera.

    Args:
        frame: source view (``pts3d`` is computed if absent).
        target: ``(W, H)`` output size.
        zoom: ``>= 1``; crop a ``1 / zoom`` smaller box around the principal point (scale augmentation).

    Returns:
        The new ``Frame`` (arrays are copies).
    """
    from PIL import Image

    frame = with_points(frame)
    W_t, H_t = int(target[0]), int(target[1])
    x0, y0, w, h = crop_box(frame.size, frame.K, (W_t, H_t), zoom)
    sx, sy = W_t / w, H_t / h
    K = frame.K.astype(np.float64).copy()
    K[0, 2] -= x0
    K[1, 2] -= y0
    K[0, 0] *= sx
    K[1, 1] *= sy
    K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    # Lanczos filters over the source footprint when downscaling (antialiased); bicubic when upscaling.
    resample = Image.Resampling.LANCZOS if sx < 1 or sy < 1 else Image.Resampling.BICUBIC
    image = Image.fromarray(frame.rgb).resize((W_t, H_t), resample, box=(x0, y0, x0 + w, y0 + h))
    rows = y0 + _nearest_index(H_t, h)
    cols = x0 + _nearest_index(W_t, w)
    valid = frame.valid[np.ix_(rows, cols)]
    pts = frame.pts3d[np.ix_(rows, cols)]
    T_cam_world = np.linalg.inv(frame.T_world_cam)
    z = pts.astype(np.float64) @ T_cam_world[2, :3] + T_cam_world[2, 3]
    depth = np.where(valid & (z > 0), z, 0.0).astype(np.float32)
    sky = frame.sky[np.ix_(rows, cols)] if frame.sky is not None else None
    return Frame(np.asarray(image), depth, K, frame.T_world_cam.copy(), sky, pts.astype(np.float32))


def project(points: np.ndarray, K: np.ndarray, T_world_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points ``[..., 3]`` -> pixel coordinates ``[..., 2]`` and camera z ``[...]`` (float64)."""
    T_cam_world = np.linalg.inv(T_world_cam)
    cam = points.astype(np.float64) @ T_cam_world[:3, :3].T + T_cam_world[:3, 3]
    z = cam[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = (cam[..., :2] / z[..., None]) @ K[:2, :2].T + K[:2, 2]
    return uv, z


def _lookup(frame: Frame, points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For world points, the nearest pixel of ``frame`` they project to: ``(x [N], y [N], ok [N])``, ``ok`` =
    in front of the camera, inside the image, on a valid pixel whose depth agrees within 5 %."""
    W, H = frame.size
    uv, z = project(points, frame.K, frame.T_world_cam)
    finite = np.isfinite(uv).all(-1) & (z > 0)
    x = np.where(finite, np.round(uv[:, 0]), -1).astype(np.int64)
    y = np.where(finite, np.round(uv[:, 1]), -1).astype(np.int64)
    inside = finite & (x >= 0) & (x < W) & (y >= 0) & (y < H)
    xc, yc = np.clip(x, 0, W - 1), np.clip(y, 0, H - 1)
    d = frame.depth[yc, xc]
    # Occlusion test: the surface seen at that pixel must be (nearly) the projected point itself.
    ok = inside & (d > 0) & (np.abs(d - z) <= 0.05 * np.maximum(z, 1e-9))
    return xc, yc, ok


def reciprocal_matches(frame1: Frame, frame2: Frame) -> np.ndarray:
    """Ground-truth pixel correspondences between two views with point maps.

    A valid view-1 pixel ``p`` matches view-2 pixel ``q`` when ``q`` is where ``p``'s point projects (nearest
    pixel, visible: depth agrees within 5 %) and ``q``'s point projects back onto ``p`` (reciprocity, as
    MASt3R's ground truth from reciprocal nearest neighbours).

    Returns:
        ``[M, 4]`` int64 rows ``(x1, y1, x2, y2)``.
    """
    frame1, frame2 = with_points(frame1), with_points(frame2)
    W1, H1 = frame1.size
    ys, xs = np.nonzero(frame1.valid)
    if xs.size == 0:
        return np.zeros((0, 4), dtype=np.int64)
    x2, y2, ok = _lookup(frame2, frame1.pts3d[ys, xs])
    xs, ys, x2, y2 = xs[ok], ys[ok], x2[ok], y2[ok]
    bx, by, back = _lookup(frame1, frame2.pts3d[y2, x2])
    keep = back & (bx == xs) & (by == ys)
    return np.stack([xs[keep], ys[keep], x2[keep], y2[keep]], axis=1).astype(np.int64)


def sample_correspondences(
    matches: np.ndarray, n: int, neg_fraction: float, size1: tuple[int, int], size2: tuple[int, int], rng
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A fixed number of correspondences for batching: true matches plus random non-matching negatives.

    MASt3R samples ``n_corres`` per pair with a share ``nneg`` of random pixel pairs marked invalid; the
    InfoNCE loss uses them only as extra negatives. When fewer true matches exist, negatives fill the rest.

    Args:
        matches: ``[M, 4]`` from ``reciprocal_matches``.
        n: correspondences returned.
        neg_fraction: share of negatives (at least; more if there are not enough matches).
        size1, size2: ``(W, H)`` of the views (negatives are drawn uniformly).
        rng: ``numpy.random.Generator``.

    Returns:
        ``corres1 [n, 2]`` and ``corres2 [n, 2]`` int64 ``(x, y)``, ``valid [n]`` bool.
    """
    n_pos = min(len(matches), int(round(n * (1.0 - neg_fraction))))
    pos = matches[rng.choice(len(matches), size=n_pos, replace=False)] if n_pos else np.zeros((0, 4), np.int64)
    n_neg = n - n_pos
    neg = np.stack(
        [
            rng.integers(0, size1[0], n_neg),
            rng.integers(0, size1[1], n_neg),
            rng.integers(0, size2[0], n_neg),
            rng.integers(0, size2[1], n_neg),
        ],
        axis=1,
    ).astype(np.int64)
    allc = np.concatenate([pos, neg], axis=0)
    valid = np.concatenate([np.ones(n_pos, bool), np.zeros(n_neg, bool)])
    order = rng.permutation(n)
    allc, valid = allc[order], valid[order]
    return allc[:, :2].copy(), allc[:, 2:].copy(), valid
