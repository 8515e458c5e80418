"""COLMAP sparse model writer (``cameras``, ``images``, ``points3D`` as ``.bin`` and ``.txt``), no pycolmap needed.

Layout written by ``write_colmap(folder, ...)`` (what COLMAP, gsplat, 3DGS and nerfstudio's colmap parser read)::

    folder/
      images/                  the photos, when given (copied or symlinked; photos already there are kept)
      .recon-export.json       what recon wrote here (so that a rerun replaces only its own files)
      sparse/0/cameras.bin     cameras.txt
      sparse/0/images.bin      images.txt
      sparse/0/points3D.bin    points3D.txt

Conventions:

- One ``PINHOLE`` camera per registered view (``camera_id = image_id = view index + 1``), ``fx fy cx cy`` in
  *original* pixels (``Scene.K_orig``; width/height from ``orig_sizes``). COLMAP puts the centre of the top-left
  pixel at (0.5, 0.5) where we put it at (0, 0), so ``cx = K_orig[0, 2] + 0.5`` and likewise ``cy``.
- Poses are world-to-camera: ``qw qx qy qz`` (Hamilton, ``qw >= 0``) of ``R = R_world_cam^T`` and
  ``t = -R @ centre``.
- ``points3D`` are sampled from the dense depth (confidence-thresholded, optionally cleaned, at most
  ``max_points``). Each has a real track: its source pixel is added to its image's ``POINTS2D`` (mapped to
  original pixels, +0.5). With ``multi_view_tracks`` the point is also added to every other registered view
  where it projects inside the image onto a valid pixel whose depth agrees within ``track_tol`` (relative);
  that observation is recorded at the projected position. Projecting any point through its camera and pose
  therefore lands on each of its observations (reprojection error 0 up to float rounding, written as ``ERROR``).
- Unregistered views are left out of the model (COLMAP lists registered images only).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from recon.export._atomic import export_dir
from recon.export._images import check_sources, image_names, place_image
from recon.scene import gather_points, registered_mask
from recon.types import Scene

logger = logging.getLogger(__name__)

PINHOLE_MODEL_ID = 1
# Marker COLMAP uses for "no 3D point" in POINTS2D.
NO_POINT = -1


@dataclass
class ColmapModel:
    """A sparse model as flat arrays (R registered images, P points, O observations).

    Attributes:
        image_ids: ``[R]`` int64 (also the camera ids).
        view_index: ``[R]`` int64 scene view of each image.
        names: R image names.
        sizes_wh: ``[R, 2]`` int64 camera width, height.
        params: ``[R, 4]`` float64 PINHOLE ``fx fy cx cy`` (COLMAP pixel convention).
        qvec: ``[R, 4]`` float64 world-to-camera quaternion ``qw qx qy qz``.
        tvec: ``[R, 3]`` float64 world-to-camera translation.
        points2D: R arrays ``[M_r, 2]`` float64 observations ``x y`` (COLMAP pixel convention).
        points2D_ids: R arrays ``[M_r]`` int64 point3D id of each observation.
        point_ids: ``[P]`` int64.
        xyz: ``[P, 3]`` float64.
        rgb: ``[P, 3]`` uint8.
        error: ``[P]`` float64 mean reprojection error.
        obs_point: ``[O]`` int64 index (not id) of the point of each observation, sorted.
        obs_image: ``[O]`` int64 image id of each observation.
        obs_idx: ``[O]`` int64 POINT2D_IDX of each observation in its image.
    """

    image_ids: np.ndarray
    view_index: np.ndarray
    names: list[str]
    sizes_wh: np.ndarray
    params: np.ndarray
    qvec: np.ndarray
    tvec: np.ndarray
    points2D: list[np.ndarray]
    points2D_ids: list[np.ndarray]
    point_ids: np.ndarray
    xyz: np.ndarray
    rgb: np.ndarray
    error: np.ndarray
    obs_point: np.ndarray
    obs_image: np.ndarray
    obs_idx: np.ndarray


def rotmat_to_qvec(R: np.ndarray) -> np.ndarray:
    """``[..., 3, 3]`` rotation matrices -> ``[..., 4]`` quaternions ``(qw, qx, qy, qz)`` with ``qw >= 0``."""
    R = np.asarray(R, dtype=np.float64)
    err = np.abs(np.swapaxes(R, -1, -2) @ R - np.eye(3)).max() if R.size else 0.0
    if err > 1e-4 or (R.size and np.any(np.linalg.det(R) < 0)):
        raise ValueError(f"T_world_cam holds a rotation that is not orthonormal (max |R^T R - I| = {err:.2e})")
    xyzw = Rotation.from_matrix(R.reshape(-1, 3, 3)).as_quat()
    q = np.concatenate([xyzw[:, 3:], xyzw[:, :3]], axis=1)
    q *= np.where(q[:, :1] < 0, -1.0, 1.0)
    return q.reshape(*R.shape[:-2], 4)


def _to_colmap_pixels(net_to_orig: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """``[M, 2]`` network pixels (centre of top-left = 0) -> original pixels, COLMAP convention (centre = 0.5)."""
    A = net_to_orig
    x, y = xy[:, 0], xy[:, 1]
    return np.stack([A[0, 0] * x + A[0, 1] * y + A[0, 2], A[1, 0] * x + A[1, 1] * y + A[1, 2]], axis=-1) + 0.5


def build_colmap_model(
    scene: Scene,
    masks: list[np.ndarray],
    names: Sequence[str],
    *,
    multi_view_tracks: bool = True,
    track_masks: list[np.ndarray] | None = None,
    track_tol: float = 0.01,
) -> ColmapModel:
    """Assemble the model of the module docstring from ``scene``.

    Args:
        scene: the scene.
        masks: N bool ``[H_k, W_k]``: the pixels that become points3D (thresholded, cleaned, subsampled).
        names: one image name per registered view (in view order).
        multi_view_tracks: also observe each point in the other views that see it (see module docstring).
        track_masks: N bool ``[H_k, W_k]`` pixels allowed to hold such extra observations (default ``masks``).
        track_tol: relative depth agreement needed for an extra observation.
    """
    reg = np.flatnonzero(registered_mask(scene))
    n_img = len(reg)
    if len(names) != n_img:
        raise ValueError(f"{len(names)} names for {n_img} registered views")
    K_orig = scene.K_orig
    A = [np.eye(3) if scene.net_to_orig is None else np.asarray(scene.net_to_orig[k], np.float64) for k in reg]
    if np.any(np.abs(K_orig[reg, 0, 1]) > 1e-9 * np.abs(K_orig[reg, 0, 0])):
        raise ValueError("PINHOLE cannot hold a skewed K (K_orig[0, 1] != 0)")
    if scene.orig_sizes is not None:
        sizes_wh = np.array([[scene.orig_sizes[k][1], scene.orig_sizes[k][0]] for k in reg], dtype=np.int64)
    else:
        sizes_wh = np.array([np.shape(scene.depth[k])[::-1] for k in reg], dtype=np.int64).reshape(-1, 2)
    params = np.stack(
        [K_orig[reg, 0, 0], K_orig[reg, 1, 1], K_orig[reg, 0, 2] + 0.5, K_orig[reg, 1, 2] + 0.5], axis=1
    ).reshape(-1, 4)
    cam_from_world = np.linalg.inv(np.asarray(scene.T_world_cam, dtype=np.float64))
    qvec = rotmat_to_qvec(cam_from_world[reg, :3, :3]).reshape(-1, 4)
    tvec = cam_from_world[reg, :3, 3].reshape(-1, 3)

    masks = [m & bool(r) for m, r in zip(masks, registered_mask(scene), strict=True)]
    xyz, rgb, view, pix = gather_points(scene, masks)
    n_pts = len(xyz)
    slot = np.full(len(scene), -1, dtype=np.int64)
    slot[reg] = np.arange(n_img)

    # Observations as (point index, image slot, x, y) in COLMAP pixels; the source pixel first.
    obs_pt = [np.arange(n_pts)]
    obs_slot = [slot[view]]
    obs_xy = [np.zeros((n_pts, 2))]
    for r, k in enumerate(reg):
        sel = view == k
        obs_xy[0][sel] = _to_colmap_pixels(A[r], pix[sel].astype(np.float64))
    if multi_view_tracks and n_pts:
        allowed = masks if track_masks is None else track_masks
        xyz_rows = np.ascontiguousarray(xyz.T)  # 3 P: row expressions beat a [P,3] @ [3,3] matmul in numpy
        for r, j in enumerate(reg):
            cand = np.flatnonzero(view != j)
            X, Y, Z = xyz_rows[:, cand]
            # World -> pixels of j; the third row is the z-depth in j since K's last row is (0, 0, 1).
            P = np.asarray(scene.K[j], dtype=np.float64) @ cam_from_world[j, :3]
            z = P[2, 0] * X + P[2, 1] * Y + P[2, 2] * Z + P[2, 3]
            with np.errstate(divide="ignore", invalid="ignore"):
                uv = np.stack([P[c, 0] * X + P[c, 1] * Y + P[c, 2] * Z + P[c, 3] for c in range(2)], -1) / z[:, None]
            H, W = np.shape(scene.depth[j])
            ui, vi = np.rint(uv[:, 0]), np.rint(uv[:, 1])
            ok = (z > 0) & (ui >= 0) & (ui < W) & (vi >= 0) & (vi < H)
            idx = np.flatnonzero(ok)
            ui, vi = ui[idx].astype(np.intp), vi[idx].astype(np.intp)
            d = np.asarray(scene.depth[j], dtype=np.float64)[vi, ui]
            seen = allowed[j][vi, ui] & (np.abs(d - z[idx]) <= track_tol * z[idx])
            idx = idx[seen]
            obs_pt.append(cand[idx])
            obs_slot.append(np.full(len(idx), r, dtype=np.int64))
            obs_xy.append(_to_colmap_pixels(A[r], uv[idx]))
    obs_pt_a = np.concatenate(obs_pt)
    obs_slot_a = np.concatenate(obs_slot)
    obs_xy_a = np.concatenate(obs_xy)

    # POINT2D_IDX: rank of each observation within its image (stable: source pixels first).
    order = np.argsort(obs_slot_a, kind="stable")
    counts = np.bincount(obs_slot_a, minlength=n_img)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    obs_idx = np.empty_like(obs_pt_a)
    obs_idx[order] = np.arange(len(order)) - np.repeat(starts, counts)
    point_ids = np.arange(1, n_pts + 1, dtype=np.int64)
    points2D = [obs_xy_a[order[s : s + c]] for s, c in zip(starts, counts, strict=True)]
    points2D_ids = [point_ids[obs_pt_a[order[s : s + c]]] for s, c in zip(starts, counts, strict=True)]

    by_point = np.lexsort((obs_slot_a, obs_pt_a))
    image_ids = (reg + 1).astype(np.int64)
    return ColmapModel(
        image_ids=image_ids,
        view_index=reg.astype(np.int64),
        names=list(names),
        sizes_wh=sizes_wh,
        params=params,
        qvec=qvec,
        tvec=tvec,
        points2D=points2D,
        points2D_ids=points2D_ids,
        point_ids=point_ids,
        xyz=xyz,
        rgb=rgb,
        error=np.zeros(n_pts),
        obs_point=obs_pt_a[by_point],
        obs_image=image_ids[obs_slot_a[by_point]],
        obs_idx=obs_idx[by_point],
    )


# ---- binary ----------------------------------------------------------------------------------------------------


def _write_cameras_bin(path: Path, m: ColmapModel) -> None:
    rec = np.dtype([("id", "<u4"), ("model", "<i4"), ("w", "<u8"), ("h", "<u8"), ("params", "<f8", (4,))])
    arr = np.empty(len(m.image_ids), dtype=rec)
    arr["id"], arr["model"], arr["w"], arr["h"] = m.image_ids, PINHOLE_MODEL_ID, m.sizes_wh[:, 0], m.sizes_wh[:, 1]
    arr["params"] = m.params
    with open(path, "wb") as f:
        f.write(np.uint64(len(arr)).tobytes())
        f.write(arr.tobytes())


def _write_images_bin(path: Path, m: ColmapModel) -> None:
    head = np.dtype([("id", "<u4"), ("q", "<f8", (4,)), ("t", "<f8", (3,)), ("cam", "<u4")])
    obs = np.dtype([("x", "<f8"), ("y", "<f8"), ("id", "<i8")])
    with open(path, "wb") as f:
        f.write(np.uint64(len(m.image_ids)).tobytes())
        for r, image_id in enumerate(m.image_ids):
            h = np.empty(1, dtype=head)
            h["id"], h["q"], h["t"], h["cam"] = image_id, m.qvec[r], m.tvec[r], image_id
            f.write(h.tobytes())
            f.write(m.names[r].encode("utf-8") + b"\0")
            o = np.empty(len(m.points2D[r]), dtype=obs)
            o["x"], o["y"], o["id"] = m.points2D[r][:, 0], m.points2D[r][:, 1], m.points2D_ids[r]
            f.write(np.uint64(len(o)).tobytes())
            f.write(o.tobytes())


def _track_groups(m: ColmapModel):
    """Yield ``(L, point indices, [n, L, 2] (image_id, point2D_idx))`` per track length (file order is free)."""
    lengths = np.bincount(m.obs_point, minlength=len(m.point_ids))
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    for L in np.unique(lengths):
        pts = np.flatnonzero(lengths == L)
        at = starts[pts][:, None] + np.arange(L)[None]  # n L
        yield int(L), pts, np.stack([m.obs_image[at], m.obs_idx[at]], axis=-1)


def _write_points3D_bin(path: Path, m: ColmapModel) -> None:
    with open(path, "wb") as f:
        f.write(np.uint64(len(m.point_ids)).tobytes())
        for L, pts, track in _track_groups(m):
            rec = np.dtype(
                [("id", "<u8"), ("xyz", "<f8", (3,)), ("rgb", "u1", (3,)), ("err", "<f8"), ("n", "<u8"),
                 ("track", "<u4", (L, 2))]
            )  # fmt: skip
            arr = np.empty(len(pts), dtype=rec)
            arr["id"], arr["xyz"], arr["rgb"], arr["err"] = m.point_ids[pts], m.xyz[pts], m.rgb[pts], m.error[pts]
            arr["n"], arr["track"] = L, track
            f.write(arr.tobytes())


# ---- text ------------------------------------------------------------------------------------------------------


def _format_rows(row_fmt: str, columns: Sequence[np.ndarray]) -> str:
    """``row_fmt % row`` for every row of ``columns``, in one C-level ``%`` (4x faster than a generator of
    f-strings on millions of observations).

    Args:
        row_fmt: printf format of one row, including its separator / newline.
        columns: equal-length 1-D arrays, one per field of ``row_fmt``.
    """
    n = len(columns[0]) if columns else 0
    if n == 0:
        return ""
    table = np.empty((n, len(columns)), dtype=object)
    for c, col in enumerate(columns):
        table[:, c] = np.asarray(col).tolist()  # Python ints / floats: exact %d and %.17g
    return (row_fmt * n) % tuple(table.ravel())


def _write_cameras_txt(path: Path, m: ColmapModel) -> None:
    lines = [
        "# Camera list with one line of data per camera:",
        "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]",
        f"# Number of cameras: {len(m.image_ids)}",
    ]
    for r, cid in enumerate(m.image_ids):
        params = " ".join(f"{p:.17g}" for p in m.params[r])
        lines.append(f"{cid} PINHOLE {m.sizes_wh[r, 0]} {m.sizes_wh[r, 1]} {params}")
    path.write_text("\n".join(lines) + "\n")


def _write_images_txt(path: Path, m: ColmapModel) -> None:
    n_obs = sum(len(p) for p in m.points2D)
    lines = [
        "# Image list with two lines of data per image:",
        "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME",
        "#   POINTS2D[] as (X, Y, POINT3D_ID)",
        f"# Number of images: {len(m.image_ids)}, mean observations per image: {n_obs / max(len(m.image_ids), 1)}",
    ]
    for r, iid in enumerate(m.image_ids):
        pose = " ".join(f"{v:.17g}" for v in (*m.qvec[r], *m.tvec[r]))
        lines.append(f"{iid} {pose} {iid} {m.names[r]}")
        xy = m.points2D[r]
        lines.append(_format_rows("%.17g %.17g %d ", [xy[:, 0], xy[:, 1], m.points2D_ids[r]]).rstrip(" "))
    path.write_text("\n".join(lines) + "\n")


def _write_points3D_txt(path: Path, m: ColmapModel) -> None:
    n = len(m.point_ids)
    with open(path, "w") as f:
        f.write("# 3D point list with one line of data per point:\n")
        f.write("#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n")
        f.write(f"# Number of points: {n}, mean track length: {len(m.obs_point) / max(n, 1)}\n")
        for L, pts, track in _track_groups(m):
            fmt = "%d %.17g %.17g %.17g %d %d %d %.17g" + " %d %d" * L + "\n"
            xyz, rgb, flat_track = m.xyz[pts], m.rgb[pts], track.reshape(len(pts), -1)
            columns = [m.point_ids[pts], *xyz.T, *rgb.T, m.error[pts], *flat_track.T]
            # Chunks bound the size of the temporary tuple of Python objects.
            for start in range(0, len(pts), 100_000):
                f.write(_format_rows(fmt, [c[start : start + 100_000] for c in columns]))


def write_model(folder: Path, model: ColmapModel) -> None:
    """Write ``cameras``, ``images``, ``points3D`` in both ``.bin`` and ``.txt`` into an existing ``folder``."""
    _write_cameras_bin(folder / "cameras.bin", model)
    _write_images_bin(folder / "images.bin", model)
    _write_points3D_bin(folder / "points3D.bin", model)
    _write_cameras_txt(folder / "cameras.txt", model)
    _write_images_txt(folder / "images.txt", model)
    _write_points3D_txt(folder / "points3D.txt", model)


def colmap_names(scene: Scene, images: Sequence[str | os.PathLike] | None) -> list[str]:
    """Image names of the registered views; whitespace becomes ``_`` (COLMAP's text format splits on spaces)."""
    reg = np.flatnonzero(registered_mask(scene))
    names = [re.sub(r"\s", "_", n) for n in image_names(images, scene.names, reg)]
    if len(set(names)) != len(names):
        raise ValueError("image names collide once whitespace is replaced by '_'; rename the photos")
    return names


def write_colmap(
    folder: Path,
    scene: Scene,
    masks: list[np.ndarray],
    *,
    images: Sequence[str | os.PathLike] | None = None,
    link_images: bool = False,
    multi_view_tracks: bool = True,
    track_masks: list[np.ndarray] | None = None,
    track_tol: float = 0.01,
) -> Path:
    """Write a COLMAP folder (layout and conventions in the module docstring) atomically.

    Args:
        folder: destination folder; files recon did not write there are never deleted or overwritten (``export_dir``).
        scene: the scene.
        masks: N bool ``[H_k, W_k]`` pixels that become points3D.
        images: N source photo paths (scene order) to place in ``images/``; ``None`` writes no images.
        link_images: symlink the photos instead of copying them.
        multi_view_tracks, track_masks, track_tol: see ``build_colmap_model``.

    Returns:
        ``folder``.
    """
    folder = Path(folder)
    reg = np.flatnonzero(registered_mask(scene))
    names = colmap_names(scene, images)
    if images is not None:
        check_sources(images, reg)
    model = build_colmap_model(
        scene, masks, names, multi_view_tracks=multi_view_tracks, track_masks=track_masks, track_tol=track_tol
    )
    with export_dir(folder) as tmp:
        sparse = tmp / "sparse" / "0"
        sparse.mkdir(parents=True)
        write_model(sparse, model)
        if images is not None:
            (tmp / "images").mkdir()
            for r, k in enumerate(reg):
                hw = tuple(scene.orig_sizes[k]) if scene.orig_sizes is not None else np.shape(scene.depth[k])
                place_image(
                    Path(images[k]), tmp / "images" / names[r], hw, link=link_images, final=folder / "images" / names[r]
                )
    logger.info(
        "wrote COLMAP model to %s: %d images, %d points, %d observations",
        folder,
        len(model.image_ids),
        len(model.point_ids),
        len(model.obs_point),
    )
    return folder
