"""Post-processing of a reconstructed ``Scene``: validity masks, depth cleaning, point extraction, ``.npz`` I/O.

Everything here is pure numpy over ``recon.types.Scene`` and never mutates its input: functions that change
confidences return new arrays (the official ``clean_pointcloud`` lowers ``im_conf`` in place, so re-exporting
the same scene cleaned it again and again; we don't repeat that).

Conventions (DESIGN.md): ``T_world_cam`` camera-to-world with OpenCV cameras, ``K`` in network pixels, pixel
``(x, y)`` with the centre of the top-left pixel at ``(0, 0)``.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from backbone import fileio
from recon.errors import UserError
from recon.geometry import transform, unproject
from recon.types import Scene

logger = logging.getLogger(__name__)

# Minimum confidence of an exported point when the scene does not say which aligner made it: the MASt3R demo's
# "min_conf_thr" default. A scene from recon.align uses its method's demo default (resolve_conf_thr).
DEFAULT_CONF_THR = 1.5
# Relative depth tolerance of the cleaning rule (official ``clean_pointcloud(tol=0.001)``).
DEFAULT_CLEAN_TOL = 1e-3
# Version tag stored in scene files, checked on load.
SCENE_FORMAT = "recon.scene/1"


class SceneError(UserError, ValueError):
    """A ``Scene`` whose fields are inconsistent (shapes, lengths, dtypes), or a scene file that is not ours."""


def check_scene(scene: Scene) -> None:
    """Raise ``SceneError`` naming the field when ``scene``'s fields disagree in shape or length.

    Checks: ``T_world_cam [N,4,4]``, ``K [N,3,3]``, N ``depth [H_k,W_k]``, ``conf [H_k,W_k]``,
    ``colors [H_k,W_k,3]``, N names, and, when present, N ``net_to_orig [3,3]``, N ``orig_sizes``,
    ``registered [N]`` and N ``paths`` (each a string or ``None``).
    """
    T = np.asarray(scene.T_world_cam)
    if T.ndim != 3 or T.shape[1:] != (4, 4):
        raise SceneError(f"T_world_cam must be [N,4,4], got {T.shape}")
    n = T.shape[0]
    if np.asarray(scene.K).shape != (n, 3, 3):
        raise SceneError(f"K must be [N,3,3] with N={n} (from T_world_cam), got {np.asarray(scene.K).shape}")
    for field_name in ("depth", "conf", "colors", "names"):
        if len(getattr(scene, field_name)) != n:
            raise SceneError(f"scene.{field_name} has {len(getattr(scene, field_name))} entries, expected N={n}")
    for k in range(n):
        hw = np.shape(scene.depth[k])
        if len(hw) != 2:
            raise SceneError(f"depth[{k}] must be [H,W], got {hw}")
        if np.shape(scene.conf[k]) != hw:
            raise SceneError(f"conf[{k}] has shape {np.shape(scene.conf[k])}, depth[{k}] has {hw}")
        if np.shape(scene.colors[k]) != (*hw, 3):
            raise SceneError(f"colors[{k}] has shape {np.shape(scene.colors[k])}, expected {(*hw, 3)}")
        if np.asarray(scene.colors[k]).dtype != np.uint8:
            raise SceneError(f"colors[{k}] must be uint8 RGB, got {np.asarray(scene.colors[k]).dtype}")
    if scene.net_to_orig is not None and (
        len(scene.net_to_orig) != n or any(np.shape(a) != (3, 3) for a in scene.net_to_orig)
    ):
        raise SceneError(f"net_to_orig must be N={n} arrays [3,3]")
    if scene.orig_sizes is not None and (len(scene.orig_sizes) != n or any(len(s) != 2 for s in scene.orig_sizes)):
        raise SceneError(f"orig_sizes must be N={n} pairs (H0, W0)")
    if scene.registered is not None and np.shape(scene.registered) != (n,):
        raise SceneError(f"registered must be [N]={n} booleans, got shape {np.shape(scene.registered)}")
    if scene.paths is not None and (
        len(scene.paths) != n or not all(p is None or isinstance(p, str) for p in scene.paths)
    ):
        raise SceneError(f"paths must be N={n} strings or None, got {scene.paths!r:.120}")


def registered_mask(scene: Scene) -> np.ndarray:
    """``[N]`` bool: the views that alignment placed (all of them when ``scene.registered`` is ``None``)."""
    if scene.registered is None:
        return np.ones(len(scene), dtype=bool)
    return np.asarray(scene.registered, dtype=bool).copy()


def unregistered_names(scene: Scene) -> list[str]:
    """Names of the views the alignment could not place (exports leave them out and say so in their metadata)."""
    return [str(n) for n, ok in zip(scene.names, registered_mask(scene), strict=True) if not ok]


def resolve_conf_thr(scene: Scene, conf_thr: float | None) -> float:
    """``conf_thr``, or when ``None`` the default of the demo whose confidence scale ``scene.conf`` is in (MASt3R
    sparse 1.5, DUSt3R dense 3; ``recon.align.confidence``)."""
    if conf_thr is not None:
        return float(conf_thr)
    from recon.align.confidence import default_conf_thr

    return default_conf_thr(scene)


def valid_masks(scene: Scene, conf_thr: float | None = None) -> list[np.ndarray]:
    """Per-view masks of the pixels worth exporting.

    A pixel is valid when its view is registered, its depth is finite and positive and its confidence is
    strictly above ``conf_thr`` (strict as in the official demos' ``conf > min_conf_thr``).

    Args:
        scene: the scene.
        conf_thr: confidence threshold; ``None`` = the aligner's demo default (``resolve_conf_thr``).

    Returns:
        N bool arrays ``[H_k, W_k]``.
    """
    conf_thr = resolve_conf_thr(scene, conf_thr)
    reg = registered_mask(scene)
    masks = []
    for k in range(len(scene)):
        depth = np.asarray(scene.depth[k])
        m = np.isfinite(depth) & (depth > 0) & (np.asarray(scene.conf[k]) > conf_thr)
        masks.append(m & bool(reg[k]))
    return masks


def world_points(scene: Scene, k: int) -> np.ndarray:
    """``[H_k, W_k, 3]`` float64 world points of view ``k`` (``Scene.pts3d_world`` without the float32 cast).

    Uses the full ``K`` (skew included), so exports that reproject these points land on their pixels exactly.
    """
    K = np.asarray(scene.K[k], dtype=np.float64)
    return transform(np.asarray(scene.T_world_cam[k], dtype=np.float64), unproject(scene.depth[k], K))


def cleaned_conf(scene: Scene, tol: float = DEFAULT_CLEAN_TOL, bad_conf: float = 0.0) -> list[np.ndarray]:
    """Confidences with "floating" points demoted, following the official ``clean_pointcloud`` rule.

    A point of view ``i`` is *bad* when, projected into another registered view ``j`` (nearest pixel, inside the
    image, in front of the camera), it lies in front of ``j``'s depth at that pixel by more than the relative
    tolerance (``z_in_j < (1 - tol) * depth_j``) and is less confident than ``j`` there. Such a point would
    hide a surface that ``j`` sees with more confidence, so it is a floater; its confidence becomes
    ``min(conf, bad_conf)``. Points *behind* another view's surface (plain occlusion) are kept.

    Deliberate difference from the official code: every comparison uses the *input* confidences, so the result
    does not depend on the order of the views (the official loop compares against confidences it has already
    lowered). The input scene is not modified.

    Cost: one vectorised projection per ordered pair of registered views, O(N^2 H W).

    Args:
        scene: the scene.
        tol: relative depth tolerance, in [0, 1).
        bad_conf: confidence ceiling given to bad points.

    Returns:
        N float32 arrays ``[H_k, W_k]``: the new confidences (copies; unregistered views unchanged).
    """
    if not 0.0 <= tol < 1.0:
        raise ValueError(f"tol must be in [0, 1), got {tol}")
    check_scene(scene)
    reg = np.flatnonzero(registered_mask(scene))
    T = np.asarray(scene.T_world_cam, dtype=np.float64)
    K = np.asarray(scene.K, dtype=np.float64)
    cam_from_world = np.linalg.inv(T)
    depth = [np.asarray(d, dtype=np.float32) for d in scene.depth]
    conf = [np.asarray(c) for c in scene.conf]
    out = [c.astype(np.float32, copy=True) for c in conf]
    for i in reg:
        # Points in camera i (magnitudes ~ depth, whatever the world's offset) are exact enough in float32 for a
        # relative tolerance of 1e-3, and float32 halves the memory traffic of this O(N^2 H W) loop.
        # Coordinates as three contiguous rows: numpy's [P,3] @ [3,3] matmul is several times slower than
        # three fused row expressions on a structure-of-arrays layout.
        pts = np.ascontiguousarray(unproject(depth[i], K[i]).astype(np.float32).reshape(-1, 3).T)  # 3 P
        conf_i = conf[i].reshape(-1)
        cand = np.flatnonzero(np.isfinite(pts).all(axis=0))  # points not yet found bad
        pts_c, conf_c = pts[:, cand], conf_i[cand]
        bad = np.zeros(pts.shape[1], dtype=bool)
        for j in reg:
            if j == i or cand.size == 0:
                continue
            Hj, Wj = depth[j].shape
            # Camera i -> pixels of j in one 3x4 matrix; its third row is the z-depth in j (K's last row is 001).
            proj = (K[j] @ (cam_from_world[j] @ T[i])[:3]).astype(np.float32)
            X, Y, Z = pts_c
            z = proj[2, 0] * X + proj[2, 1] * Y + proj[2, 2] * Z + proj[2, 3]
            with np.errstate(divide="ignore", invalid="ignore"):
                u = np.rint((proj[0, 0] * X + proj[0, 1] * Y + proj[0, 2] * Z + proj[0, 3]) / z)
                v = np.rint((proj[1, 0] * X + proj[1, 1] * Y + proj[1, 2] * Z + proj[1, 3]) / z)
            sel = np.flatnonzero((z > 0) & (u >= 0) & (u < Wj) & (v >= 0) & (v < Hj))
            uj, vj = u[sel].astype(np.intp), v[sel].astype(np.intp)
            flag = (z[sel] < (1.0 - tol) * depth[j][vj, uj]) & (conf_c[sel] < conf[j][vj, uj])
            if flag.any():
                hit = sel[flag]
                bad[cand[hit]] = True
                still = np.ones(cand.size, dtype=bool)
                still[hit] = False
                cand, pts_c, conf_c = cand[still], pts_c[:, still], conf_c[still]
        flat = out[i].reshape(-1)
        flat[bad] = np.minimum(flat[bad], bad_conf)
        logger.debug("view %d: %d of %d points demoted by depth cleaning", i, int(bad.sum()), bad.size)
    return out


def clean_scene(scene: Scene, tol: float = DEFAULT_CLEAN_TOL, bad_conf: float = 0.0) -> Scene:
    """A shallow copy of ``scene`` whose ``conf`` is ``cleaned_conf(scene, tol, bad_conf)``; the input is untouched."""
    return replace(scene, conf=cleaned_conf(scene, tol=tol, bad_conf=bad_conf))


def point_masks(
    scene: Scene, conf_thr: float | None = None, clean: bool = True, tol: float = DEFAULT_CLEAN_TOL
) -> list[np.ndarray]:
    """``valid_masks`` of the scene, after depth cleaning when ``clean`` is true. N bool ``[H_k, W_k]``."""
    return valid_masks(clean_scene(scene, tol=tol) if clean else scene, conf_thr)


def sample_masks(masks: list[np.ndarray], max_points: int | None, seed: int = 0) -> list[np.ndarray]:
    """Keep at most ``max_points`` of the ``True`` pixels of ``masks``, uniformly at random (reproducible).

    Args:
        masks: N bool arrays ``[H_k, W_k]``.
        max_points: budget over all views; ``None`` keeps everything.
        seed: seed of the random choice.

    Returns:
        N new bool arrays, a subset of the input masks.
    """
    total = int(sum(int(m.sum()) for m in masks))
    if max_points is None or total <= max_points:
        return [m.copy() for m in masks]
    if max_points < 0:
        raise ValueError(f"max_points must be >= 0 or None, got {max_points}")
    keep = np.zeros(total, dtype=bool)
    keep[np.random.default_rng(seed).choice(total, size=max_points, replace=False)] = True
    out, start = [], 0
    for m in masks:
        n = int(m.sum())
        sub = np.zeros_like(m, dtype=bool)
        sub[m] = keep[start : start + n]
        out.append(sub)
        start += n
    return out


def gather_points(scene: Scene, masks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """World points, colours, view index and pixel of the ``True`` pixels of ``masks``.

    Returns:
        xyz: ``[P, 3]`` float64 world points.
        rgb: ``[P, 3]`` uint8 colours.
        view_index: ``[P]`` int64 view of each point.
        pixel: ``[P, 2]`` int64 ``(x, y)`` network pixel of each point.
    """
    xyz, rgb, view, pix = [], [], [], []
    for k, m in enumerate(masks):
        if not m.any():
            continue
        y, x = np.nonzero(m)
        xyz.append(world_points(scene, k)[m])
        rgb.append(np.asarray(scene.colors[k])[m].astype(np.uint8))
        view.append(np.full(x.shape[0], k, dtype=np.int64))
        pix.append(np.stack([x, y], axis=-1).astype(np.int64))
    if not xyz:
        return (np.zeros((0, 3)), np.zeros((0, 3), np.uint8), np.zeros(0, np.int64), np.zeros((0, 2), np.int64))
    return np.concatenate(xyz), np.concatenate(rgb), np.concatenate(view), np.concatenate(pix)


def scene_points(
    scene: Scene,
    conf_thr: float | None = None,
    clean: bool = True,
    *,
    tol: float = DEFAULT_CLEAN_TOL,
    max_points: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The scene's coloured point cloud: every valid pixel of every registered view, in world coordinates.

    Args:
        scene: the scene.
        conf_thr: keep pixels whose confidence is strictly above this (``None``: the aligner's demo default).
        clean: apply ``cleaned_conf`` (floater removal) before thresholding.
        tol: relative depth tolerance of the cleaning.
        max_points: random subset of at most this many points (``None``: all).
        seed: seed of that subset.

    Returns:
        xyz: ``[P, 3]`` float32 world points (equal to ``scene.pts3d_world(k)[y, x]``).
        rgb: ``[P, 3]`` uint8 colours.
        view_index: ``[P]`` int64 view of each point.
        pixel: ``[P, 2]`` int64 ``(x, y)`` network pixel of each point.
    """
    check_scene(scene)
    masks = sample_masks(point_masks(scene, conf_thr, clean, tol), max_points, seed)
    xyz, rgb, view, pix = gather_points(scene, masks)
    return xyz.astype(np.float32), rgb, view, pix


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    logger.warning("scene.info value of type %s is stored as its repr", type(obj).__name__)
    return repr(obj)


def scene_to_arrays(scene: Scene) -> dict[str, np.ndarray]:
    """Every field of ``scene`` as plain numpy arrays (no objects), the content of a scene ``.npz``.

    Keys: ``format``, ``T_world_cam``, ``K``, ``names``, ``depth_{k:05d}``, ``conf_{k:05d}``,
    ``colors_{k:05d}``, ``info_json``, and when set ``net_to_orig [N,3,3]``, ``orig_sizes [N,2]``,
    ``registered [N]``, ``paths [N]`` (``""`` for a view without a file). ``info`` is stored as JSON (numpy values
    become lists / numbers).
    """
    check_scene(scene)
    n = len(scene)
    arrays: dict[str, np.ndarray] = {
        "format": np.array(SCENE_FORMAT),
        "T_world_cam": np.asarray(scene.T_world_cam),
        "K": np.asarray(scene.K),
        "names": np.array([str(s) for s in scene.names], dtype=np.str_).reshape(n),
        "info_json": np.array(json.dumps(scene.info, default=_json_default)),
    }
    for k in range(n):
        arrays[f"depth_{k:05d}"] = np.asarray(scene.depth[k])
        arrays[f"conf_{k:05d}"] = np.asarray(scene.conf[k])
        arrays[f"colors_{k:05d}"] = np.asarray(scene.colors[k])
    if scene.net_to_orig is not None:
        arrays["net_to_orig"] = np.stack([np.asarray(a) for a in scene.net_to_orig]).reshape(n, 3, 3)
    if scene.orig_sizes is not None:
        arrays["orig_sizes"] = np.asarray(scene.orig_sizes, dtype=np.int64).reshape(n, 2)
    if scene.registered is not None:
        arrays["registered"] = np.asarray(scene.registered)
    if scene.paths is not None:
        arrays["paths"] = np.array([p or "" for p in scene.paths], dtype=np.str_).reshape(n)
    return arrays


def scene_from_arrays(arrays) -> Scene:
    """Inverse of ``scene_to_arrays`` (accepts a dict or an open ``NpzFile``); older files without ``paths`` load
    with ``paths=None``."""
    keys = set(arrays.keys())
    if "format" not in keys or str(arrays["format"]) != SCENE_FORMAT:
        found = str(arrays["format"]) if "format" in keys else "no 'format' entry"
        raise SceneError(f"not a recon scene file (expected format {SCENE_FORMAT!r}, found {found})")
    T = arrays["T_world_cam"]
    n = T.shape[0]

    def per_view(prefix: str) -> list[np.ndarray]:
        missing = [f"{prefix}_{k:05d}" for k in range(n) if f"{prefix}_{k:05d}" not in keys]
        if missing:
            raise SceneError(f"scene file is missing {missing[:3]}{'...' if len(missing) > 3 else ''}")
        return [arrays[f"{prefix}_{k:05d}"] for k in range(n)]

    scene = Scene(
        T_world_cam=T,
        K=arrays["K"],
        depth=per_view("depth"),
        conf=per_view("conf"),
        colors=per_view("colors"),
        names=[str(s) for s in arrays["names"]],
        net_to_orig=list(arrays["net_to_orig"]) if "net_to_orig" in keys else None,
        orig_sizes=[(int(h), int(w)) for h, w in arrays["orig_sizes"]] if "orig_sizes" in keys else None,
        registered=arrays["registered"] if "registered" in keys else None,
        paths=[str(p) or None for p in arrays["paths"]] if "paths" in keys else None,
        info=json.loads(str(arrays["info_json"])) if "info_json" in keys else {},
    )
    check_scene(scene)
    return scene


def save_scene(scene: Scene, path: str | os.PathLike) -> Path:
    """Write ``scene`` to an ``.npz`` of plain arrays (see ``scene_to_arrays``), atomically.

    Args:
        scene: the scene.
        path: destination file (any name; ``.npz`` is conventional). Its folder must exist.

    Returns:
        The path written.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder {path.parent} does not exist; create it first")
    arrays = scene_to_arrays(scene)
    # Write through the file object: np.savez given a *name* appends ".npz" to it.
    with fileio.atomic_file(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    return path


def load_scene(path: str | os.PathLike) -> Scene:
    """Read a scene written by ``save_scene`` (``allow_pickle=False``: a scene file cannot run code)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"scene file not found: {path}")
    with np.load(path, allow_pickle=False) as data:
        return scene_from_arrays({k: data[k] for k in data.files})
