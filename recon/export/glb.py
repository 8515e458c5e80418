"""``.glb`` (binary glTF) export through trimesh: coloured points or a mesh, plus one frustum per camera.

Frame of the file: glTF is y-up with viewers looking down -z, our cameras are OpenCV (y down, z forward). All
geometry is therefore baked through ``glb_from_world = OPENGL @ inv(T_world_cam[ref])``: the scene is expressed
in the first registered camera's frame, then y and z are flipped, so a viewer's default camera (at +z looking
down -z, y up) looks at the scene the way photo ``ref`` did, upright. (The official demo applies
``inv(c2w[0] @ OPENGL @ R_y(180))``, which additionally turns the scene half a turn about y; we don't.)
``frame="world"`` keeps the world origin and applies only the flip. The matrix is stored in the file as scene
extras ``recon.glb_from_world`` (row-major 4x4), so ``world = inv(glb_from_world) @ glb`` undoes it.

Meshes: one pixel-grid mesh per view (``recon.export.mesh``) with vertex colours and a *double-sided*
material. The official demo duplicates every triangle reversed to defeat back-face culling; glTF's
``doubleSided`` flag does the same in every conforming viewer at half the triangles and file size.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Literal

import numpy as np
import trimesh
from PIL import Image
from trimesh.visual import TextureVisuals
from trimesh.visual.material import PBRMaterial

from recon.export._atomic import write_bytes_atomic
from recon.export.mesh import scene_mesh
from recon.geometry import unproject_points
from recon.scene import gather_points, registered_mask, unregistered_names
from recon.types import Scene

logger = logging.getLogger(__name__)

# OpenCV camera axes (x right, y down, z forward) -> OpenGL/glTF (x right, y up, z backward).
OPENGL = np.diag([1.0, -1.0, -1.0, 1.0])

# Frustum colours cycle through this palette (RGB), chosen to stay distinct on light and dark backgrounds.
CAMERA_COLORS = np.array(
    [
        (230, 25, 75),
        (60, 180, 75),
        (0, 130, 200),
        (245, 130, 48),
        (145, 30, 180),
        (70, 240, 240),
        (240, 50, 230),
        (210, 245, 60),
        (250, 190, 190),
        (0, 128, 128),
    ],
    dtype=np.uint8,
)

GlbFrame = Literal["first_camera", "world"]


def glb_transform(scene: Scene, frame: GlbFrame = "first_camera") -> np.ndarray:
    """``[4, 4]`` rigid map from world coordinates to the ``.glb``'s coordinates (see the module docstring)."""
    if frame == "world":
        return OPENGL.copy()
    if frame != "first_camera":
        raise ValueError(f"frame must be 'first_camera' or 'world', got {frame!r}")
    reg = np.flatnonzero(registered_mask(scene))
    if reg.size == 0:
        raise ValueError("the scene has no registered camera")
    return OPENGL @ np.linalg.inv(np.asarray(scene.T_world_cam[reg[0]], dtype=np.float64))


def _apply(T: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """``[P, 3]`` points through the rigid ``[4, 4]`` ``T`` (row expressions: numpy's [P,3] @ [3,3] is slow)."""
    x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]
    return np.stack([T[r, 0] * x + T[r, 1] * y + T[r, 2] * z + T[r, 3] for r in range(3)], axis=-1)


def _rgba(rgb: np.ndarray) -> np.ndarray:
    """``[P, 3]`` uint8 -> ``[P, 4]`` uint8 opaque."""
    return np.concatenate([rgb, np.full((len(rgb), 1), 255, np.uint8)], axis=1)


def auto_cam_size(scene: Scene, masks: list[np.ndarray]) -> float:
    """Frustum depth: 1/3 of the median nearest-neighbour distance between registered cameras.

    Falls back to 5% of the median valid depth with a single camera (or coincident ones), and to 0.1.
    """
    reg = np.flatnonzero(registered_mask(scene))
    centres = np.asarray(scene.T_world_cam, dtype=np.float64)[reg, :3, 3]
    if len(centres) >= 2:
        d = np.linalg.norm(centres[:, None] - centres[None], axis=-1)
        np.fill_diagonal(d, np.inf)
        nn = float(np.median(d.min(axis=1)))
        if nn > 0 and np.isfinite(nn):
            return nn / 3
    depths = np.concatenate([np.asarray(scene.depth[k])[m] for k, m in enumerate(masks)] + [np.zeros(0)])
    if depths.size:
        return 0.05 * float(np.median(depths))
    return 0.1


def frustum_corners(K: np.ndarray, hw: tuple[int, int], depth: float) -> np.ndarray:
    """``[4, 3]`` camera-frame corners of the image border at z = ``depth`` (tl, tr, br, bl).

    The border runs along the outer pixel edges, i.e. pixel coordinates -0.5 and W-0.5 / H-0.5.
    """
    H, W = hw
    corners = np.array([[-0.5, -0.5], [W - 0.5, -0.5], [W - 0.5, H - 0.5], [-0.5, H - 0.5]])
    return unproject_points(corners, np.full(4, float(depth)), K)


def _tube_quads(starts: np.ndarray, ends: np.ndarray, width: float) -> tuple[np.ndarray, np.ndarray]:
    """Each segment as two crossed flat quads (visible from any side). Returns vertices ``[8S,3]``, faces."""
    e = ends - starts
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    helper = np.where(np.abs(e[:, :1]) < 0.9, [[1.0, 0, 0]], [[0, 1.0, 0]])
    n1 = np.cross(e, helper)
    n1 /= np.linalg.norm(n1, axis=1, keepdims=True)
    n2 = np.cross(e, n1)
    verts, faces = [], []
    for n in (n1, n2):
        w = 0.5 * width * n
        quad = np.stack([starts - w, starts + w, ends + w, ends - w], axis=1)  # S 4 3
        base = sum(len(v) for v in verts) + 4 * np.arange(len(starts))[:, None]
        faces.append(np.concatenate([base + [0, 1, 2], base + [0, 2, 3]]))
        verts.append(quad.reshape(-1, 3))
    return np.concatenate(verts), np.concatenate(faces)


def _color_material_visual(n_vertices: int, rgba: np.ndarray) -> TextureVisuals:
    """Vertex colours under a white, double-sided, matte material (COLOR_0 multiplies the base colour)."""
    material = PBRMaterial(
        baseColorFactor=[255, 255, 255, 255], metallicFactor=0.0, roughnessFactor=1.0, doubleSided=True
    )
    visual = TextureVisuals(material=material)
    visual.vertex_attributes["color"] = np.broadcast_to(rgba, (n_vertices, 4)).astype(np.uint8)
    return visual


def camera_meshes(
    T_glb_cam: np.ndarray,
    K: np.ndarray,
    hw: tuple[int, int],
    size: float,
    color: np.ndarray,
    image: np.ndarray | None = None,
) -> list[trimesh.Trimesh]:
    """A wireframe frustum (apex at the optical centre, base at depth ``size``) and optionally the image on its base.

    Args:
        T_glb_cam: ``[4, 4]`` camera-to-glb transform (OpenCV camera).
        K: ``[3, 3]`` intrinsics of the image ``hw``.
        hw: ``(H, W)``.
        size: frustum depth in scene units.
        color: ``[3]`` uint8 RGB.
        image: ``[H, W, 3]`` uint8 texture for the base, or ``None``.

    Returns:
        ``[frustum]`` or ``[frustum, image quad]``.
    """
    corners = _apply(T_glb_cam, frustum_corners(K, hw, size))
    apex = T_glb_cam[:3, 3]
    starts = np.concatenate([np.repeat(apex[None], 4, axis=0), corners])
    ends = np.concatenate([corners, np.roll(corners, -1, axis=0)])
    verts, faces = _tube_quads(starts, ends, width=0.02 * size)
    frustum = trimesh.Trimesh(verts, faces, process=False)
    frustum.visual = _color_material_visual(len(verts), np.append(color, 255))
    out = [frustum]
    if image is not None:
        # trimesh's uv origin is bottom-left: the top-left pixel is at v = 1.
        uv = np.array([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])
        material = PBRMaterial(
            baseColorTexture=Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)),
            metallicFactor=0.0,
            roughnessFactor=1.0,
            doubleSided=True,
        )
        quad = trimesh.Trimesh(corners, np.array([[0, 1, 2], [0, 2, 3]]), process=False)
        quad.visual = TextureVisuals(uv=uv, material=material)
        out.append(quad)
    return out


def build_glb_scene(
    scene: Scene,
    masks: list[np.ndarray],
    *,
    as_mesh: bool = False,
    show_cameras: bool = True,
    textured_cameras: bool = True,
    cam_size: float | None = None,
    frame: GlbFrame = "first_camera",
    extras: dict | None = None,
) -> trimesh.Scene:
    """The ``trimesh.Scene`` written by ``write_glb``.

    Geometry names: ``points`` (or ``mesh``), ``camera_{k:03d}`` (frustum of view k, registered views only),
    ``camera_{k:03d}_image`` (its textured image). Scene extras ``recon`` hold ``glb_from_world``, ``frame``,
    ``cam_size`` and the view names.

    Args:
        scene: the scene.
        masks: N bool ``[H_k, W_k]`` pixels to export (already thresholded / cleaned / subsampled).
        as_mesh: pixel-grid meshes instead of points.
        show_cameras: add the camera frustums.
        textured_cameras: put each view's image on its frustum's base.
        cam_size: frustum depth in scene units (``None``: ``auto_cam_size``).
        frame: ``"first_camera"`` or ``"world"`` (see the module docstring).
        extras: more JSON-serialisable values for the ``recon`` extras.
    """
    A = glb_transform(scene, frame)
    out = trimesh.Scene()
    if as_mesh:
        verts, faces, colors = scene_mesh(scene, masks)
        if len(faces):
            mesh = trimesh.Trimesh(_apply(A, verts), faces, process=False)
            mesh.visual = _color_material_visual(
                len(verts), np.concatenate([colors, np.full((len(colors), 1), 255, np.uint8)], 1)
            )
            out.add_geometry(mesh, geom_name="mesh")
        else:
            logger.warning("no valid triangle to export (all views empty after thresholding)")
    else:
        xyz, rgb, _, _ = gather_points(scene, masks)
        if len(xyz):
            out.add_geometry(trimesh.PointCloud(_apply(A, xyz), colors=_rgba(rgb)), geom_name="points")
        else:
            logger.warning("no valid point to export (all views empty after thresholding)")
    size = float(cam_size) if cam_size is not None else auto_cam_size(scene, masks)
    if show_cameras:
        for i, k in enumerate(np.flatnonzero(registered_mask(scene))):
            colors = np.asarray(scene.colors[k])
            meshes = camera_meshes(
                A @ np.asarray(scene.T_world_cam[k], dtype=np.float64),
                np.asarray(scene.K[k], dtype=np.float64),
                colors.shape[:2],
                size,
                CAMERA_COLORS[i % len(CAMERA_COLORS)],
                image=colors if textured_cameras else None,
            )
            out.add_geometry(meshes[0], geom_name=f"camera_{k:03d}")
            if len(meshes) > 1:
                out.add_geometry(meshes[1], geom_name=f"camera_{k:03d}_image")
    out.metadata["recon"] = {
        "glb_from_world": A.tolist(),
        "frame": frame,
        "cam_size": size,
        "names": [str(n) for n in scene.names],
        "unregistered": unregistered_names(scene),  # views the alignment could not place: not in this file
        **(extras or {}),
    }
    return out


def write_glb(path: Path, scene: Scene, masks: list[np.ndarray], **kwargs) -> Path:
    """Write ``build_glb_scene(scene, masks, **kwargs)`` to ``path`` atomically; returns ``path``."""
    glb = build_glb_scene(scene, masks, **kwargs)
    data = glb.export(file_type="glb")
    write_bytes_atomic(Path(path), data)
    logger.info("wrote %s (%.1f MB)", path, len(data) / 1e6)
    return Path(path)
