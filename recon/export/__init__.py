"""Scene exports: ``.glb``, ``.ply``, COLMAP, nerfstudio ``transforms.json``, ``.npz``.

``export(scene, path, options)`` writes one format; the type of ``options`` names it (``GlbOptions``,
``PlyOptions``, ``ColmapOptions``, ``NerfstudioOptions``, ``NpzOptions``, see ``recon.export.options``). Without
options the format comes from the extension (``.glb``, ``.ply``, ``.npz``) with that format's defaults; the
folder formats (COLMAP, nerfstudio) need their options. Every output is written atomically: into a temporary
sibling renamed onto ``path`` at the end, so a failure leaves nothing behind. Conventions per format:
``docs/exports.md`` and each writer's module docstring. This package consumes ``recon.types.Scene`` only; it
never imports a network.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from recon.export._atomic import OverwriteRefusedError, check_overwritable, check_parent
from recon.export._images import check_sources, image_names
from recon.export.options import (
    DEFAULT_SPARSE_POINTS,
    FORMATS,
    OPTIONS_BY_FORMAT,
    ColmapOptions,
    ExportOptions,
    ExportOptionsError,
    GlbOptions,
    NerfstudioOptions,
    NpzOptions,
    PlyOptions,
    format_of,
)
from recon.scene import (
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

_BY_SUFFIX = {".glb": "glb", ".ply": "ply", ".npz": "npz"}
_FOLDER_FORMATS = ("colmap", "nerfstudio")


def resolve_options(path: str | os.PathLike, options: ExportOptions | None = None) -> ExportOptions:
    """``options``, checked against the extension of ``path``; without options, the defaults of its extension.

    Raises:
        ExportOptionsError: options of another format than the extension says, or no options and an extension
            that names no format.
    """
    path = Path(path)
    by_suffix = _BY_SUFFIX.get(path.suffix.lower())
    if options is None:
        if by_suffix is None:
            raise ExportOptionsError(
                f"cannot tell the export format from {path.name!r}: use a .glb, .ply or .npz name, or pass "
                "ColmapOptions() / NerfstudioOptions() for a folder"
            )
        return OPTIONS_BY_FORMAT[by_suffix]()
    fmt = format_of(options)
    if by_suffix is not None and by_suffix != fmt:
        raise ExportOptionsError(f"{type(options).__name__} writes {fmt}, which does not match the name {path.name!r}")
    return options


def check_destination(path: str | os.PathLike, options: ExportOptions | None = None) -> ExportOptions:
    """The checks ``export`` makes on its destination, for a front-end to run *before* a long reconstruction.

    Returns:
        The options ``export`` will use (``resolve_options``).

    Raises:
        ExportOptionsError: options and extension disagree. FileNotFoundError: the parent folder is missing.
        OverwriteRefusedError: a file output would replace a file recon did not write, or a folder output is a file.
    """
    path = Path(path)
    options = resolve_options(path, options)
    fmt = format_of(options)
    check_parent(path)
    if fmt in _FOLDER_FORMATS:
        if path.exists() and not path.is_dir():
            raise OverwriteRefusedError(f"{path} exists and is not a folder; remove it or choose another path")
    else:
        check_overwritable(path, fmt)  # folder exports check file by file when publishing (export_dir)
    return options


def _photos(scene: Scene, options: ColmapOptions | NerfstudioOptions) -> list[str | None] | None:
    """The photos a folder export copies (``scene.paths``), checked before any work; ``None`` = name views only."""
    reg = np.flatnonzero(registered_mask(scene))
    if not options.photos or scene.paths is None or not all(scene.paths[k] for k in reg):
        if options.photos:
            logger.info("not every view has a photo file (video frames?): views are named without photos")
        return None
    image_names(scene.paths, scene.names, reg)  # Bad photo lists fail here, before the O(N^2 HW) cleaning.
    check_sources(scene.paths, reg)
    return scene.paths


def export(scene: Scene, path: str | os.PathLike, options: ExportOptions | None = None) -> Path:
    """Export ``scene`` to ``path`` in the format of ``options`` (see ``recon.export.options``).

    Args:
        scene: the reconstruction.
        path: output file (``.glb``, ``.ply``, ``.npz``) or folder (COLMAP, nerfstudio). Its parent folder must
            exist (checked before any work). An existing file is replaced only if recon wrote it; in a folder,
            only files recon wrote are replaced (``recon.export._atomic``).
        options: ``GlbOptions``, ``PlyOptions``, ``ColmapOptions``, ``NerfstudioOptions`` or ``NpzOptions``;
            ``None`` = the defaults of the format of ``path``'s extension.

    Returns:
        The path written.

    Raises:
        ExportOptionsError: options that do not fit ``path``. FileNotFoundError: missing parent folder or photo.
        OverwriteRefusedError: see ``check_destination``. ValueError: a scene with no registered camera.
    """
    path = Path(path)
    options = check_destination(path, options)
    check_scene(scene)
    photos = None
    if isinstance(options, (ColmapOptions, NerfstudioOptions)) and registered_mask(scene).any():
        photos = _photos(scene, options)
    if options.tsdf_thresh:
        from recon.tsdf import tsdf_refine

        scene = tsdf_refine(scene, options.tsdf_thresh, seed=options.seed)
    if isinstance(options, NpzOptions):
        return save_scene(scene, path)
    if not registered_mask(scene).any():
        raise ValueError("the scene has no registered camera; nothing to export")

    source = clean_scene(scene, tol=options.clean_tol) if options.clean_depth else scene
    conf_thr = resolve_conf_thr(scene, options.conf_thr)
    masks = valid_masks(source, conf_thr)
    if options.conf_thr is None and not any(m.any() for m in masks):
        # The demo default leaves nothing (a model whose confidence head is nowhere confident, e.g. recon-tiny):
        # an empty scene helps nobody, so keep every point and say so. An explicit threshold is always obeyed.
        logger.warning(
            "no pixel is above the default confidence threshold %g: exporting every pixel instead (the model is "
            "not confident anywhere; choose a threshold with --conf-thr)",
            conf_thr,
        )
        conf_thr = 0.0
        masks = valid_masks(source, conf_thr)
    mesh = isinstance(options, (GlbOptions, PlyOptions)) and options.mesh
    # A mesh needs every pixel of its grid; subsampling would punch holes in it.
    sampled = masks if mesh else sample_masks(masks, options.max_points, options.seed)

    if isinstance(options, GlbOptions):
        from recon.export.glb import write_glb

        return write_glb(
            path,
            scene,
            sampled,
            as_mesh=options.mesh,
            show_cameras=options.cameras,
            textured_cameras=options.textured_cameras,
            cam_size=options.cam_size,
            frame=options.frame,
            extras={"conf_thr": conf_thr, "clean_depth": options.clean_depth},
        )
    if isinstance(options, PlyOptions):
        if options.mesh:
            from recon.export.ply import write_mesh_ply

            return write_mesh_ply(path, scene, masks)
        from recon.export.ply import write_ply

        xyz, rgb, _, _ = gather_points(scene, sampled)
        return write_ply(path, xyz, rgb)
    if isinstance(options, ColmapOptions):
        from recon.export.colmap import write_colmap

        return write_colmap(
            path,
            scene,
            sampled,
            images=photos,
            link_images=options.link_images,
            multi_view_tracks=options.multi_view_tracks,
            track_masks=masks,
        )
    from recon.export.nerfstudio import write_nerfstudio

    points = gather_points(scene, sampled)[:2] if options.point_cloud else None
    return write_nerfstudio(path, scene, images=photos, link_images=options.link_images, points=points)


__all__ = [
    "DEFAULT_SPARSE_POINTS",
    "FORMATS",
    "ColmapOptions",
    "ExportOptions",
    "ExportOptionsError",
    "GlbOptions",
    "NerfstudioOptions",
    "NpzOptions",
    "OverwriteRefusedError",
    "PlyOptions",
    "check_destination",
    "export",
    "resolve_options",
]
