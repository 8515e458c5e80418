"""Typed records passed between the steps of a reconstruction.

Every step of ``images -> pairs -> inference -> matching -> align -> export`` takes and returns these plain
dataclasses, so each step can be tested alone and ``recon.align`` / ``recon.export`` never need a network.

Conventions (see DESIGN.md): ``T_world_cam`` is a 4x4 camera-to-world matrix with an OpenCV camera (x right,
y down, z forward); ``K`` is 3x3 in pixels of the image the network saw unless its name says ``orig``;
``depth`` is z-depth; per-pixel arrays are channels-last. Pixel coordinates are ``(x, y)`` with the centre of
the top-left pixel at ``(0, 0)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from recon.geometry import transform, unproject


@dataclass
class View:
    """One input image, prepared for the network.

    Attributes:
        image: ``[3, H, W]`` float32 RGB in [0, 1], ``H`` and ``W`` multiples of the backbone's patch size.
        idx: position of this view in the reconstruction (0..N-1).
        name: display name (file name, or ``frame_000123`` for video frames).
        path: source file, if the image came from one of its own (``None`` for a video frame).
        orig_size: ``(H0, W0)`` of the original image after EXIF orientation.
        net_to_orig: ``[3, 3]`` float64 affine map from network pixels to original pixels
            (``x_orig = net_to_orig @ [x, y, 1]``); so ``K_orig = net_to_orig @ K``.
        focal_exif: focal length in *original* pixels read from EXIF, if the file had one.
    """

    image: torch.Tensor
    idx: int
    name: str
    path: str | None = None
    orig_size: tuple[int, int] | None = None
    net_to_orig: np.ndarray = field(default_factory=lambda: np.eye(3))
    focal_exif: float | None = None

    @property
    def true_shape(self) -> tuple[int, int]:
        """``(H, W)`` of the network input."""
        return int(self.image.shape[-2]), int(self.image.shape[-1])


@dataclass
class PairPrediction:
    """The decoder's output for one *ordered* pair ``(i, j)``; both point maps are in camera ``i``'s frame.

    Stored compactly (float16 by default); ``desc`` / ``desc_conf`` are ``None`` for DUSt3R heads.

    Attributes:
        i, j: view indices; ``i`` is the reference (view 1) of the pair.
        pts3d_i: ``[H_i, W_i, 3]`` view-i points in camera-i frame (official ``pred1.pts3d``).
        pts3d_j: ``[H_j, W_j, 3]`` view-j points in camera-i frame (official ``pred2.pts3d_in_other_view``).
        conf_i, conf_j: ``[H, W]`` point confidences (> 1).
        desc_i, desc_j: ``[H, W, D_desc]`` L2-normalised local descriptors, or ``None``.
        desc_conf_i, desc_conf_j: ``[H, W]`` descriptor confidences (> 0), or ``None``.
    """

    i: int
    j: int
    pts3d_i: torch.Tensor
    pts3d_j: torch.Tensor
    conf_i: torch.Tensor
    conf_j: torch.Tensor
    desc_i: torch.Tensor | None = None
    desc_j: torch.Tensor | None = None
    desc_conf_i: torch.Tensor | None = None
    desc_conf_j: torch.Tensor | None = None

    @property
    def key(self) -> tuple[int, int]:
        return self.i, self.j


@dataclass
class Matches:
    """Correspondences between views ``i`` and ``j``.

    Attributes:
        i, j: view indices.
        xy_i, xy_j: ``[M, 2]`` int64 pixel coordinates ``(x, y)`` in the network images of ``i`` and ``j``.
        conf: ``[M]`` float32 match confidence (e.g. the product or minimum of descriptor confidences).
    """

    i: int
    j: int
    xy_i: np.ndarray
    xy_j: np.ndarray
    conf: np.ndarray

    def __len__(self) -> int:
        return int(self.xy_i.shape[0])


@dataclass
class Priors:
    """Known camera parameters supplied by the user; any field may be left empty.

    Intrinsics here are in *network* pixels: ``recon.pipeline`` converts what the user gave in original
    pixels with each view's ``net_to_orig`` before alignment.

    Attributes:
        K: per-view ``[3, 3]`` known intrinsics (``None`` where unknown).
        focal: per-view known focal length (``None`` where unknown), held fixed; ignored where ``K`` is given.
        focal_init: per-view focal length to START from and optimise like any focal (an EXIF focal: a prior,
            not a fact); ignored where ``K`` or ``focal`` is given.
        shared_intrinsics: all views share one camera (one focal / principal point optimised).
        T_world_cam: known camera-to-world poses by view index; these poses are held fixed.
    """

    K: list[np.ndarray | None] | None = None
    focal: list[float | None] | None = None
    focal_init: list[float | None] | None = None
    shared_intrinsics: bool = False
    T_world_cam: dict[int, np.ndarray] = field(default_factory=dict)


@dataclass
class Scene:
    """A reconstructed scene: cameras plus per-view dense geometry.

    Per-pixel fields are lists because views may differ in shape (portrait and landscape mixed).

    Attributes:
        T_world_cam: ``[N, 4, 4]`` float64 camera-to-world poses (OpenCV cameras).
        K: ``[N, 3, 3]`` float64 intrinsics in network pixels.
        depth: N arrays ``[H_i, W_i]`` float32 z-depth in camera frame.
        conf: N arrays ``[H_i, W_i]`` float32 confidence (> 1 for network confidences; 0 = invalid).
        colors: N arrays ``[H_i, W_i, 3]`` uint8 RGB.
        names: N view names.
        net_to_orig: N ``[3, 3]`` maps from network to original pixels (see ``View``).
        orig_sizes: N ``(H0, W0)`` original sizes.
        registered: ``[N]`` bool, False for views the alignment could not place.
        paths: N source photo files (``View.path``), ``None`` for a view that has none (a video frame); set when
            the scene is made from the views; ``None`` as a whole when unknown (a scene file from before the field).
            COLMAP and nerfstudio exports copy the photos from here.
        info: free-form diagnostics (losses, timings) that exports may record.
    """

    T_world_cam: np.ndarray
    K: np.ndarray
    depth: list[np.ndarray]
    conf: list[np.ndarray]
    colors: list[np.ndarray]
    names: list[str]
    net_to_orig: list[np.ndarray] | None = None
    orig_sizes: list[tuple[int, int]] | None = None
    registered: np.ndarray | None = None
    paths: list[str | None] | None = None
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.T_world_cam.shape[0])

    @property
    def K_orig(self) -> np.ndarray:
        """``[N, 3, 3]`` intrinsics in original pixels."""
        if self.net_to_orig is None:
            return self.K.copy()
        return np.stack([A @ K for A, K in zip(self.net_to_orig, self.K, strict=True)])

    def pts3d_world(self, k: int) -> np.ndarray:
        """``[H_k, W_k, 3]`` world points of view ``k`` from its depth, ``K`` and ``T_world_cam``."""
        K = np.asarray(self.K[k], dtype=np.float64)
        return transform(self.T_world_cam[k], unproject(self.depth[k], K)).astype(np.float32)


def view_colors(views: list[View]) -> list[np.ndarray]:
    """Per view ``[H, W, 3]`` uint8 RGB of the network image (the colours every aligner's ``Scene`` carries)."""
    return [
        (v.image.detach().cpu().float().clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        for v in views
    ]


def scene_view_fields(views: list[View]) -> dict:
    """The ``Scene`` fields that come from the views alone (colours, names, original-image geometry, paths), the
    same for every aligner: ``Scene(T_world_cam=..., K=..., depth=..., conf=..., **scene_view_fields(views))``."""
    return {
        "colors": view_colors(views),
        "names": [v.name for v in views],
        "net_to_orig": [np.asarray(v.net_to_orig, np.float64) for v in views],
        "orig_sizes": [v.orig_size if v.orig_size is not None else v.true_shape for v in views],
        "paths": [v.path for v in views],
    }
