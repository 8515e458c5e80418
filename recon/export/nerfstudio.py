"""nerfstudio ``transforms.json`` (the nerfstudio data format, also read by gsplat / splatfacto).

Layout written by ``write_nerfstudio(folder, ...)``::

    folder/
      transforms.json
      images/         the photos, when given (copied or symlinked; photos already there are kept)
      sparse_pc.ply   the point cloud, when asked (referenced by ``ply_file_path``)

Conventions (https://docs.nerf.studio/quickstart/data_conventions.html):

- ``transform_matrix`` is camera-to-world with an OpenGL/Blender camera (x right, y up, z back):
  ``T_world_cam @ diag(1, -1, -1, 1)``, i.e. our matrix with its y and z columns negated. The world frame is
  ours, unchanged (nerfstudio's parser re-orients and re-centres the world itself by default).
- Intrinsics ``fl_x fl_y cx cy w h`` in *original* pixels. nerfstudio shoots the ray of pixel (0, 0) through
  coordinate (0.5, 0.5), like COLMAP, so ``cx = K_orig[0, 2] + 0.5`` (ours puts that centre at 0).
  They sit at the top level when every frame shares them, else in each frame.
- ``camera_model`` is ``"OPENCV"`` with ``k1 k2 p1 p2 = 0`` (our cameras are undistorted pinholes).
- Unregistered views are left out.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recon.export._atomic import export_dir
from recon.export._images import check_sources, image_names, place_image
from recon.export.ply import ply_bytes
from recon.scene import registered_mask, unregistered_names
from recon.types import Scene

logger = logging.getLogger(__name__)

# OpenCV camera axes -> OpenGL/nerfstudio camera axes (flip y and z), applied on the right of T_world_cam.
GL_FROM_CV = np.diag([1.0, -1.0, -1.0, 1.0])
PLY_NAME = "sparse_pc.ply"
_INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h")


def transforms_dict(scene: Scene, file_paths: Sequence[str], ply_file_path: str | None = None) -> dict:
    """The content of ``transforms.json`` (module docstring), one frame per registered view.

    Args:
        scene: the scene.
        file_paths: one path (relative to the folder) per registered view, in view order.
        ply_file_path: relative path of a point cloud to reference, or ``None``.
    """
    reg = np.flatnonzero(registered_mask(scene))
    if len(file_paths) != len(reg):
        raise ValueError(f"{len(file_paths)} file paths for {len(reg)} registered views")
    K_orig = scene.K_orig
    frames = []
    for r, k in enumerate(reg):
        if scene.orig_sizes is not None:
            h, w = scene.orig_sizes[k]
        else:
            h, w = np.shape(scene.depth[k])
        c2w_gl = np.asarray(scene.T_world_cam[k], dtype=np.float64) @ GL_FROM_CV
        frames.append(
            {
                "file_path": file_paths[r],
                "transform_matrix": c2w_gl.tolist(),
                "fl_x": float(K_orig[k, 0, 0]),
                "fl_y": float(K_orig[k, 1, 1]),
                "cx": float(K_orig[k, 0, 2]) + 0.5,
                "cy": float(K_orig[k, 1, 2]) + 0.5,
                "w": int(w),
                "h": int(h),
            }
        )
    out: dict = {"camera_model": "OPENCV"}
    shared = len(frames) > 0 and all(all(f[key] == frames[0][key] for key in _INTRINSIC_KEYS) for f in frames)
    if shared:
        out.update({key: frames[0][key] for key in _INTRINSIC_KEYS})
        for f in frames:
            for key in _INTRINSIC_KEYS:
                del f[key]
    out.update({"k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0})
    if ply_file_path is not None:
        out["ply_file_path"] = ply_file_path
    out["frames"] = frames
    missing = unregistered_names(scene)
    if missing:  # views the alignment could not place have no frame; say which (nerfstudio ignores extra keys)
        out["unregistered"] = missing
    return out


def write_nerfstudio(
    folder: Path,
    scene: Scene,
    *,
    images: Sequence[str | os.PathLike] | None = None,
    link_images: bool = False,
    points: tuple[np.ndarray, np.ndarray] | None = None,
) -> Path:
    """Write a nerfstudio folder (layout and conventions in the module docstring) atomically.

    Args:
        folder: destination folder; files recon did not write there are never deleted or overwritten (``export_dir``).
        scene: the scene.
        images: N source photo paths (scene order) copied into ``images/``. Without them ``file_path`` is
            ``images/<view name>`` and the photos must be put there by hand.
        link_images: symlink the photos instead of copying them.
        points: ``(xyz [P,3], rgb [P,3] uint8)`` written to ``sparse_pc.ply`` and referenced by
            ``ply_file_path``; ``None`` writes no point cloud.

    Returns:
        ``folder``.
    """
    folder = Path(folder)
    reg = np.flatnonzero(registered_mask(scene))
    names = image_names(images, scene.names, reg)
    if images is not None:
        check_sources(images, reg)
    else:
        logger.warning("no source images given: put the photos in %s/images/ under their view names", folder)
    meta = transforms_dict(scene, [f"images/{n}" for n in names], PLY_NAME if points is not None else None)
    with export_dir(folder) as tmp:
        (tmp / "transforms.json").write_text(json.dumps(meta, indent=2) + "\n")
        if points is not None:
            (tmp / PLY_NAME).write_bytes(ply_bytes(*points))
        if images is not None:
            (tmp / "images").mkdir()
            for r, k in enumerate(reg):
                hw = tuple(scene.orig_sizes[k]) if scene.orig_sizes is not None else np.shape(scene.depth[k])
                place_image(
                    Path(images[k]), tmp / "images" / names[r], hw, link=link_images, final=folder / "images" / names[r]
                )
    logger.info("wrote nerfstudio transforms.json with %d frames to %s", len(reg), folder)
    return folder
