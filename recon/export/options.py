"""What each export format can be asked for: one frozen dataclass per format, checked when it is made.

``export(scene, path, GlbOptions(mesh=True))`` writes a ``.glb``: the type of the options names the format, so a
setting that a format does not have cannot be passed to it. A value out of range, or settings that contradict each
other (a point budget for a mesh, a frustum size without frustums), raise ``ExportOptionsError`` with one line
naming the field, at construction: before any work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from recon.errors import UserError
from recon.scene import DEFAULT_CLEAN_TOL

# Default point budget of the COLMAP points3D and the nerfstudio point cloud (a 3DGS initialisation needs no
# more; a dense scene of 50 views at 512x384 has ~10M pixels).
DEFAULT_SPARSE_POINTS = 200_000
GLB_FRAMES = ("first_camera", "world")


class ExportOptionsError(UserError, ValueError):
    """Export settings out of range or contradicting each other; the message names the field."""


def _at_least(name: str, value, minimum: float, *, strict: bool = False, integer: bool = False) -> None:
    if value is None:
        return
    kind = "an integer" if integer else "a finite number"
    number = isinstance(value, int) if integer else isinstance(value, (int, float)) and math.isfinite(value)
    if isinstance(value, bool) or not number or (value <= minimum if strict else value < minimum):
        raise ExportOptionsError(f"{name} must be {kind} {'>' if strict else '>='} {minimum:g}, got {value!r}")


@dataclass(frozen=True)
class _SceneOptions:
    tsdf_thresh: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        _at_least("tsdf_thresh", self.tsdf_thresh, 0)
        _at_least("seed", self.seed, 0, integer=True)


@dataclass(frozen=True)
class NpzOptions(_SceneOptions):
    """The whole scene as an ``.npz`` of plain arrays (``recon.scene.save_scene``), reloadable for re-export.

    Attributes:
        tsdf_thresh: > 0 stores the depth maps refined with the fused TSDF of all views (``recon.tsdf``, scene
            units); 0 = as reconstructed.
        seed: seed of the TSDF samples.
    """


@dataclass(frozen=True)
class PointOptions(_SceneOptions):
    """Which pixels become points; shared by the ``.glb``, ``.ply``, COLMAP and nerfstudio exports.

    Attributes:
        conf_thr: export pixels whose confidence is strictly above this; ``None`` = the default of the demo whose
            scale ``scene.conf`` is in (1.5 for sparse alignment as the MASt3R demo, 3 for dense as DUSt3R).
        clean_depth: demote floaters first (``recon.scene.cleaned_conf``); the input scene is not modified.
        clean_tol: relative depth tolerance of that cleaning.
        max_points: random subset of at most this many points (reproducible with ``seed``); ``None`` = all.
        tsdf_thresh, seed: as ``NpzOptions`` (``seed`` also draws the point subset).
    """

    conf_thr: float | None = None
    clean_depth: bool = True
    clean_tol: float = DEFAULT_CLEAN_TOL
    max_points: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least("conf_thr", self.conf_thr, 0)
        _at_least("clean_tol", self.clean_tol, 0, strict=True)
        _at_least("max_points", self.max_points, 1, integer=True)


@dataclass(frozen=True)
class _MeshOptions(PointOptions):
    mesh: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mesh and self.max_points is not None:
            raise ExportOptionsError("max_points cannot apply to a mesh: a mesh needs every pixel of its grid")


@dataclass(frozen=True)
class GlbOptions(_MeshOptions):
    """A ``.glb`` for viewers (``recon.export.glb``).

    Attributes:
        mesh: pixel-grid meshes instead of points.
        cameras: one frustum per registered camera.
        textured_cameras: each frustum shows its image.
        cam_size: frustum depth in scene units; ``None`` = from the camera spacing.
        frame: ``"first_camera"`` (the first registered camera at the origin, as the demos) or ``"world"``.
    """

    cameras: bool = True
    textured_cameras: bool = True
    cam_size: float | None = None
    frame: str = "first_camera"

    def __post_init__(self) -> None:
        super().__post_init__()
        _at_least("cam_size", self.cam_size, 0, strict=True)
        if self.cam_size is not None and not self.cameras:
            raise ExportOptionsError("cam_size is the size of the camera frustums, but cameras=False leaves them out")
        if self.frame not in GLB_FRAMES:
            raise ExportOptionsError(f"frame must be one of {', '.join(GLB_FRAMES)}, got {self.frame!r}")


@dataclass(frozen=True)
class PlyOptions(_MeshOptions):
    """A ``.ply`` point cloud, or with ``mesh`` the pixel-grid meshes (``recon.export.ply``)."""


@dataclass(frozen=True)
class _PhotoOptions(PointOptions):
    max_points: int | None = DEFAULT_SPARSE_POINTS
    photos: bool = True
    link_images: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.link_images and not self.photos:
            raise ExportOptionsError("link_images links the photos, but photos=False leaves them out")


@dataclass(frozen=True)
class ColmapOptions(_PhotoOptions):
    """A COLMAP sparse model folder (``recon.export.colmap``).

    Attributes:
        max_points: the points3D budget (default ``DEFAULT_SPARSE_POINTS``; ``None`` = every point).
        photos: copy each view's photo (``Scene.paths``) into ``images/`` and name the view after it; a scene
            without a file for every registered view (video frames) names the views ``Scene.names`` instead.
        link_images: symlink the photos instead of copying them.
        multi_view_tracks: observe each point in every view that sees it, not only its source view.
    """

    multi_view_tracks: bool = True


@dataclass(frozen=True)
class NerfstudioOptions(_PhotoOptions):
    """A nerfstudio ``transforms.json`` folder (``recon.export.nerfstudio``).

    Attributes:
        max_points: the ``sparse_pc.ply`` budget (default ``DEFAULT_SPARSE_POINTS``; ``None`` = every point).
        photos, link_images: as ``ColmapOptions``.
        point_cloud: write ``sparse_pc.ply`` and reference it as ``ply_file_path``.
    """

    point_cloud: bool = True


ExportOptions = GlbOptions | PlyOptions | ColmapOptions | NerfstudioOptions | NpzOptions
OPTIONS_BY_FORMAT: dict[str, type] = {
    "glb": GlbOptions,
    "ply": PlyOptions,
    "colmap": ColmapOptions,
    "nerfstudio": NerfstudioOptions,
    "npz": NpzOptions,
}
FORMATS = tuple(OPTIONS_BY_FORMAT)


def format_of(options: ExportOptions) -> str:
    """The format name of an options object (``"glb"`` for ``GlbOptions`` ...)."""
    for fmt, kind in OPTIONS_BY_FORMAT.items():
        if type(options) is kind:
            return fmt
    raise TypeError(f"export options must be one of {', '.join(k.__name__ for k in OPTIONS_BY_FORMAT.values())}")
