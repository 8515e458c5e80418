"""Scene exports: ``.glb``, ``.ply``, COLMAP, nerfstudio ``transforms.json``, ``.npz``.

``export(scene, path)`` picks the format from the extension (``.glb``, ``.ply``, ``.npz``) or from ``format``
(required for the folder formats ``colmap`` and ``nerfstudio``). Every output is written atomically: into a
temporary sibling renamed onto ``path`` at the end, so a failure leaves nothing behind. Conventions per
format: ``docs/exports.md`` and each writer's module docstring. This package consumes ``recon.types.Scene``
only; it never imports a network.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recon.export._atomic import OverwriteRefusedError, check_overwritable, check_parent
from recon.export._images import check_sources, image_names
from recon.scene import (
    DEFAULT_CLEAN_TOL,
    check_scene,
    clean_scene,
    gather_points,
    registered_mask,
    resolve_conf_thr,
    sample_masks,
    save_scene,
    valid_masks,
)
from recon.types import Scene

logger = logging.getLogger(__name__)

FORMATS = ("glb", "ply", "colmap", "nerfstudio", "npz")
_BY_SUFFIX = {".glb": "glb", ".ply": "ply", ".npz": "npz"}
_FOLDER_FORMATS = ("colmap", "nerfstudio")
# Default point budget of the COLMAP points3D and the nerfstudio point cloud (a 3DGS initialisation needs no
# more; a dense scene of 50 views at 512x384 has ~10M pixels).
DEFAULT_SPARSE_POINTS = 200_000


def resolve_format(path: Path, format: str | None = None) -> str:
    """The export format of ``path``: ``format`` when given (checked against the extension), else the extension."""
    suffix = path.suffix.lower()
    if format is not None:
        fmt = format.lower()
        if fmt not in FORMATS:
            raise ValueError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
        if fmt in _BY_SUFFIX.values() and suffix in _BY_SUFFIX and _BY_SUFFIX[suffix] != fmt:
            raise ValueError(f"format {fmt!r} does not match the extension of {path.name!r}")
        return fmt
    if suffix in _BY_SUFFIX:
        return _BY_SUFFIX[suffix]
    raise ValueError(
        f"cannot tell the export format from {path.name!r}: use a .glb, .ply or .npz name, or pass "
        f"format='colmap' / 'nerfstudio' for a folder"
    )


def check_destination(path: str | os.PathLike, format: str | None = None) -> str:
    """The checks ``export`` makes on its destination, for a front-end to run *before* a long reconstruction.

    Returns:
        The resolved format.

    Raises:
        ValueError: unknown format. FileNotFoundError: the parent folder is missing.
        OverwriteRefusedError: a file output would replace a file recon did not write, or a folder output is a file.
    """
    path = Path(path)
    fmt = resolve_format(path, format)
    check_parent(path)
    if fmt in _FOLDER_FORMATS:
        if path.exists() and not path.is_dir():
            raise OverwriteRefusedError(f"{path} exists and is not a folder; remove it or choose another path")
    else:
        check_overwritable(path, fmt)  # folder exports check file by file when publishing (export_dir)
    return fmt


def export(
    scene: Scene,
    path: str | os.PathLike,
    format: str | None = None,
    *,
    conf_thr: float | None = None,
    clean_depth: bool = True,
    clean_tol: float = DEFAULT_CLEAN_TOL,
    as_mesh: bool = False,
    show_cameras: bool = True,
    textured_cameras: bool = True,
    cam_size: float | None = None,
    glb_frame: str = "first_camera",
    images: Sequence[str | os.PathLike] | None = None,
    link_images: bool = False,
    max_points: int | None = None,
    multi_view_tracks: bool = True,
    point_cloud: bool = True,
    seed: int = 0,
    tsdf_thresh: float = 0.0,
) -> Path:
    """Export ``scene`` to ``path``.

    Args:
        scene: the reconstruction.
        path: output file (``.glb``, ``.ply``, ``.npz``) or folder (``colmap``, ``nerfstudio``). Its parent
            folder must exist (checked before any work). An existing file is replaced only if recon wrote it; in a
            folder, only files recon wrote are replaced (``recon.export._atomic``).
        format: one of ``FORMATS``; default from the extension.
        conf_thr: export pixels whose confidence is strictly above this; ``None`` = the default of the demo whose
            scale ``scene.conf`` is in (1.5 for sparse alignment as the MASt3R demo, 3 for dense as DUSt3R).
        clean_depth: demote floaters first (``recon.scene.cleaned_conf``); the input scene is not modified.
        clean_tol: relative depth tolerance of that cleaning.
        as_mesh: ``.glb`` / ``.ply``: pixel-grid meshes instead of points.
        show_cameras: ``.glb``: one frustum per registered camera.
        textured_cameras: ``.glb``: each frustum shows its image.
        cam_size: ``.glb``: frustum depth in scene units (default: from the camera spacing).
        glb_frame: ``.glb``: ``"first_camera"`` (default) or ``"world"``; see ``recon.export.glb``.
        images: N source photo paths in scene order, copied into COLMAP / nerfstudio ``images/`` folders and
            naming their views there.
        link_images: symlink the photos instead of copying them.
        max_points: random subset of at most this many points (reproducible with ``seed``). Default: all
            for ``.glb`` / ``.ply``, ``DEFAULT_SPARSE_POINTS`` for COLMAP and nerfstudio.
        multi_view_tracks: COLMAP: observe each point in every view that sees it, not only its source view.
        point_cloud: nerfstudio: write ``sparse_pc.ply`` and reference it as ``ply_file_path``.
        seed: seed of the point subset (and of the TSDF samples).
        tsdf_thresh: > 0 refines the depth maps first with the fused TSDF of all views (``recon.tsdf``, the MASt3R
            demo's "TSDF Threshold", in scene units); 0 (default, as the demo) leaves them alone.

    Returns:
        The path written.
    """
    path = Path(path)
    fmt = check_destination(path, format)
    check_scene(scene)
    if tsdf_thresh:
        from recon.tsdf import tsdf_refine

        scene = tsdf_refine(scene, tsdf_thresh, seed=seed)
    if fmt == "npz":
        return save_scene(scene, path)
    if not registered_mask(scene).any():
        raise ValueError("the scene has no registered camera; nothing to export")
    if images is not None and fmt in _FOLDER_FORMATS:
        # Bad photo lists fail here, before the O(N^2 HW) cleaning.
        reg = np.flatnonzero(registered_mask(scene))
        image_names(images, scene.names, reg)
        check_sources(images, reg)

    source = clean_scene(scene, tol=clean_tol) if clean_depth else scene
    conf_thr = resolve_conf_thr(scene, conf_thr)
    masks = valid_masks(source, conf_thr)
    budget = max_points if max_points is not None or fmt not in _FOLDER_FORMATS else DEFAULT_SPARSE_POINTS
    # A mesh needs every pixel of its grid; subsampling would punch holes in it.
    sampled = masks if as_mesh else sample_masks(masks, budget, seed)

    if fmt == "glb":
        from recon.export.glb import write_glb

        return write_glb(
            path,
            scene,
            sampled,
            as_mesh=as_mesh,
            show_cameras=show_cameras,
            textured_cameras=textured_cameras,
            cam_size=cam_size,
            frame=glb_frame,
            extras={"conf_thr": conf_thr, "clean_depth": clean_depth},
        )
    if fmt == "ply":
        if as_mesh:
            from recon.export.ply import write_mesh_ply

            return write_mesh_ply(path, scene, masks)
        from recon.export.ply import write_ply

        xyz, rgb, _, _ = gather_points(scene, sampled)
        return write_ply(path, xyz, rgb)
    if fmt == "colmap":
        from recon.export.colmap import write_colmap

        return write_colmap(
            path,
            scene,
            sampled,
            images=images,
            link_images=link_images,
            multi_view_tracks=multi_view_tracks,
            track_masks=masks,
        )
    from recon.export.nerfstudio import write_nerfstudio

    points = gather_points(scene, sampled)[:2] if point_cloud else None
    return write_nerfstudio(path, scene, images=images, link_images=link_images, points=points)


__all__ = ["FORMATS", "OverwriteRefusedError", "check_destination", "export", "resolve_format"]
