"""Binary little-endian PLY of a coloured point cloud (``x y z`` float32, ``red green blue`` uint8).

Hand-written (one header, one structured array) so it needs nothing but numpy; readers: trimesh, Open3D,
MeshLab, CloudCompare, nerfstudio's ``ply_file_path``. Coordinates are world coordinates, unflipped.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from recon.export._atomic import atomic_file

logger = logging.getLogger(__name__)

_VERTEX = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])


def ply_bytes(xyz: np.ndarray, rgb: np.ndarray) -> bytes:
    """Encode a point cloud as binary little-endian PLY.

    Args:
        xyz: ``[P, 3]`` points (stored as float32).
        rgb: ``[P, 3]`` uint8 colours.

    Returns:
        The file's bytes.
    """
    xyz = np.asarray(xyz)
    rgb = np.asarray(rgb)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or rgb.shape != xyz.shape:
        raise ValueError(f"xyz and rgb must both be [P,3], got {xyz.shape} and {rgb.shape}")
    vertices = np.empty(xyz.shape[0], dtype=_VERTEX)
    for axis, name in enumerate("xyz"):
        vertices[name] = xyz[:, axis]
    for axis, name in enumerate(("red", "green", "blue")):
        vertices[name] = rgb[:, axis]
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment written by recon3r\n"
        f"element vertex {xyz.shape[0]}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    )
    return header.encode("ascii") + vertices.tobytes()


def mesh_ply_bytes(vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray) -> bytes:
    """Encode a vertex-coloured triangle mesh as binary little-endian PLY.

    Args:
        vertices: ``[V, 3]`` points (stored as float32).
        faces: ``[F, 3]`` vertex indices (stored as int32, list length uchar 3).
        colors: ``[V, 3]`` uint8 vertex colours.
    """
    body = ply_bytes(vertices, colors)
    head, verts = body.split(b"end_header\n", 1)
    face_rec = np.dtype([("n", "u1"), ("v", "<i4", (3,))])
    tri = np.empty(len(faces), dtype=face_rec)
    tri["n"], tri["v"] = 3, faces
    head += f"element face {len(faces)}\nproperty list uchar int vertex_indices\n".encode("ascii")
    return head + b"end_header\n" + verts + tri.tobytes()


def write_mesh_ply(path: Path, scene, masks: list[np.ndarray]) -> Path:
    """Write the per-view pixel-grid meshes of ``scene`` (``recon.export.mesh``) to ``path`` atomically."""
    from recon.export.mesh import scene_mesh

    vertices, faces, colors = scene_mesh(scene, masks)
    data = mesh_ply_bytes(vertices, faces, colors)
    with atomic_file(Path(path)) as tmp:
        tmp.write_bytes(data)
    logger.info("wrote a mesh of %d vertices, %d faces to %s", len(vertices), len(faces), path)
    return Path(path)


def write_ply(path: Path, xyz: np.ndarray, rgb: np.ndarray) -> Path:
    """Write a coloured point cloud to ``path`` atomically (see ``ply_bytes``); returns ``path``."""
    data = ply_bytes(xyz, rgb)
    with atomic_file(Path(path)) as tmp:
        tmp.write_bytes(data)
    logger.info("wrote %d points to %s", xyz.shape[0], path)
    return Path(path)
