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

from recon.geometry import invert, pixel_grid, transform, unproject
from recon.geometry import project as project_cam

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


def with_points(frame: Frame) -> Frame:
    """``frame`` with ``pts3d`` computed from its depth (a no-op when already present)."""
    if frame.pts3d is not None:
        return frame
    pts3d = transform(frame.T_world_cam, unproject(frame.depth, frame.K))  # garbage where depth is 0
    return replace(frame, pts3d=pts3d.astype(np.float32))


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
    T_cam_world = invert(frame.T_world_cam)
    z = pts.astype(np.float64) @ T_cam_world[2, :3] + T_cam_world[2, 3]
    depth = np.where(valid & (z > 0), z, 0.0).astype(np.float32)
    sky = frame.sky[np.ix_(rows, cols)] if frame.sky is not None else None
    return Frame(np.asarray(image), depth, K, frame.T_world_cam.copy(), sky, pts.astype(np.float32))


def project(points: np.ndarray, K: np.ndarray, T_world_cam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World points ``[..., 3]`` -> pixel coordinates ``[..., 2]`` and camera z ``[...]`` (float64)."""
    cam = transform(invert(np.asarray(T_world_cam, np.float64)), points.astype(np.float64))
    return project_cam(cam, K), cam[..., 2]


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


# ---------------------------------------------------------------------------------------------- MASt3R aug_crop
def aug_crop_amount(size: tuple[int, int], target: tuple[int, int], aug_crop: float | str) -> float:
    """MASt3R's ``aug_crop`` in pixels: ``'auto'`` = ``max(0.1 S, S (S - R) // R)`` with ``S`` the image's and ``R``
    the target's shorter side (scale augmentation of at least 10 %, more when the image is much larger)."""
    if aug_crop == "auto":
        S, R = min(size), min(target)
        return float(max(0.1 * S, S * (S - R) // R))
    return float(aug_crop)


def random_crops(
    size: tuple[int, int], target: tuple[int, int], aug_crop: float, n: int, rng: np.random.Generator
) -> np.ndarray:
    """``n`` random crop boxes ``[n, 4]`` = ``(x0, y0, x1, y1)`` (pixel edges: the image spans ``[-0.5, W - 0.5]``).

    MASt3R's ``gen_random_crops``: the largest box of the target's aspect that fits the image is placed uniformly in
    the image virtually upscaled by ``s = exp(U(0, log(1 + aug_crop / min(size))))``, then mapped back, so a crop
    zooms in by ``s`` (one ``s`` for the ``n`` boxes).
    """
    size_a, target_a = np.asarray(size, np.float64), np.asarray(target, np.float64)
    box = target_a * min(size_a / target_a)
    s = float(np.exp(rng.uniform(0.0, np.log(1.0 + aug_crop / min(size)))))
    top_left = rng.random((n, 2)) * (np.floor(size_a * s) - box)
    return np.concatenate([top_left, top_left + box], axis=1) / s - 0.5


def _rotation_between(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The smallest rotation ``R`` with ``R @ a_hat = b_hat`` (Rodrigues about ``a x b``)."""
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    v, c = np.cross(a, b), float(a @ b)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1.0 + c)


def crop_homography(frame: Frame, crop: np.ndarray, target: tuple[int, int]) -> Frame:
    """Crop ``(x0, y0, x1, y1)`` rendered through a virtual camera that keeps the principal point centred.

    MASt3R ``crop_to_homography``: the new camera has the old centre, the old focal scaled by
    ``min(target / crop size)``, its principal point at the image centre, and is rotated (``R``, new -> old camera)
    so that the crop corner farthest from the old principal point lands on the matching corner of the output. Output
    pixel ``p`` shows source pixel ``K R K2^-1 p``. Colours are warped bicubically; world points, validity and sky are
    taken at the nearest source pixel and depth recomputed in the new camera, so depth stays exact.

    Args:
        frame: source view (``pts3d`` computed if absent).
        crop: ``[4]`` box in the source's pixel-edge coordinates (``random_crops``).
        target: ``(W, H)`` output size.
    """
    from PIL import Image

    frame = with_points(frame)
    W_t, H_t = int(target[0]), int(target[1])
    K = frame.K.astype(np.float64)
    x0, y0, x1, y1 = (float(v) for v in crop)
    scale = min(W_t / (x1 - x0), H_t / (y1 - y0))
    K2 = np.array([[K[0, 0] * scale, 0, (W_t - 1) / 2], [0, K[1, 1] * scale, (H_t - 1) / 2], [0, 0, 1]])
    # Per axis, the crop edge farther from the principal point, and the output edge it must map to.
    fx_far = x0 if abs(x0 - K[0, 2]) > abs(x1 - K[0, 2]) else x1
    fy_far = y0 if abs(y0 - K[1, 2]) > abs(y1 - K[1, 2]) else y1
    ox = -0.5 if fx_far == x0 else W_t - 0.5
    oy = -0.5 if fy_far == y0 else H_t - 0.5
    R = _rotation_between(np.linalg.solve(K2, [ox, oy, 1.0]), np.linalg.solve(K, [fx_far, fy_far, 1.0]))
    Hm = K @ R @ np.linalg.inv(K2)  # output pixel -> source pixel (homogeneous, OpenCV pixel centres)
    # PIL samples at pixel centres +0.5: conjugate by the half-pixel shift.
    shift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1]])
    Hp = shift @ Hm @ np.linalg.inv(shift)
    coeffs = (Hp / Hp[2, 2]).ravel()[:8].tolist()
    rgb = np.asarray(
        Image.fromarray(frame.rgb).transform((W_t, H_t), Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BICUBIC)
    )
    src = pixel_grid(H_t, W_t, homogeneous=True) @ Hm.T
    u, v = src[..., 0] / src[..., 2], src[..., 1] / src[..., 2]
    W, H = frame.size
    ui, vi = np.round(u).astype(np.int64), np.round(v).astype(np.int64)
    inside = (src[..., 2] > 0) & (ui >= 0) & (ui < W) & (vi >= 0) & (vi < H)
    ui, vi = np.clip(ui, 0, W - 1), np.clip(vi, 0, H - 1)
    T = frame.T_world_cam.astype(np.float64).copy()
    T[:3, :3] = T[:3, :3] @ R
    pts = frame.pts3d[vi, ui]
    valid = inside & frame.valid[vi, ui]
    T_cam_world = invert(T)
    z = pts.astype(np.float64) @ T_cam_world[2, :3] + T_cam_world[2, 3]
    depth = np.where(valid & (z > 0), z, 0.0).astype(np.float32)
    sky = (inside & frame.sky[vi, ui]) if frame.sky is not None else None
    return Frame(rgb, depth, K2, T, sky, pts.astype(np.float32))


def best_crop_pair(
    frame1: Frame, frame2: Frame, target: tuple[int, int], aug_crop: float | str, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """MASt3R's crop choice: ``n`` random crops per view; the pair that keeps the most ground-truth correspondences
    of the full views inside both crops wins (ties: the first). Returns the two boxes."""
    crops1 = random_crops(frame1.size, target, aug_crop_amount(frame1.size, target, aug_crop), n, rng)
    crops2 = random_crops(frame2.size, target, aug_crop_amount(frame2.size, target, aug_crop), n, rng)
    m = reciprocal_matches(frame1, frame2).astype(np.float64)

    def inside(points: np.ndarray, crops: np.ndarray) -> np.ndarray:  # [M, n]
        p = points[:, None, :]
        return ((p >= crops[None, :, :2]) & (p < crops[None, :, 2:])).all(-1)

    shared = inside(m[:, :2], crops1).T.astype(np.float64) @ inside(m[:, 2:], crops2).astype(np.float64)  # n x n
    i, j = np.unravel_index(int(np.argmax(shared)), shared.shape)
    return crops1[i], crops2[j]
