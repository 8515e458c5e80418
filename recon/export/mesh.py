"""Per-view pixel-grid meshes: each 2x2 block of valid pixels gives two triangles."""

from __future__ import annotations

import logging

import numpy as np

from recon.scene import world_points
from recon.types import Scene

logger = logging.getLogger(__name__)


def grid_faces(mask: np.ndarray) -> np.ndarray:
    """Triangles of the pixel grid whose three vertices are all valid.

    Each quad ``(tl, tr, bl, br)`` gives ``(tl, bl, tr)`` and ``(tr, bl, br)``. With an OpenCV camera (y down)
    this winding makes normals point towards the camera that saw the surface.

    Args:
        mask: ``[H, W]`` bool valid pixels.

    Returns:
        ``[F, 3]`` int64 indices into the row-major ``H*W`` pixel grid.
    """
    H, W = mask.shape
    idx = np.arange(H * W).reshape(H, W)
    tl, tr, bl, br = idx[:-1, :-1], idx[:-1, 1:], idx[1:, :-1], idx[1:, 1:]
    m_tl, m_tr, m_bl, m_br = mask[:-1, :-1], mask[:-1, 1:], mask[1:, :-1], mask[1:, 1:]
    first = np.stack([tl, bl, tr], axis=-1)[m_tl & m_bl & m_tr]
    second = np.stack([tr, bl, br], axis=-1)[m_tr & m_bl & m_br]
    return np.concatenate([first, second]).astype(np.int64)


def scene_mesh(scene: Scene, masks: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One mesh from every view's pixel grid, world coordinates, only referenced (valid) vertices kept.

    Args:
        scene: the scene.
        masks: N bool ``[H_k, W_k]`` valid pixels.

    Returns:
        vertices: ``[V, 3]`` float64 world points.
        faces: ``[F, 3]`` int64.
        colors: ``[V, 3]`` uint8 vertex colours.
    """
    verts, faces, cols = [], [], []
    offset = 0
    for k, mask in enumerate(masks):
        if not mask.any():
            continue
        f = grid_faces(mask)
        # Re-index the full grid onto the valid pixels only.
        remap = np.full(mask.size, -1, dtype=np.int64)
        remap[mask.reshape(-1)] = np.arange(int(mask.sum()))
        verts.append(world_points(scene, k)[mask])
        cols.append(np.asarray(scene.colors[k])[mask].astype(np.uint8))
        faces.append(remap[f] + offset)
        offset += int(mask.sum())
    if not verts:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64), np.zeros((0, 3), np.uint8)
    return np.concatenate(verts), np.concatenate(faces), np.concatenate(cols)
