"""Scenes, VGGT-style sequence sampling and normalised targets for the feed-forward recipe.

Scene sources (``DatasetConfig.kind``):

- ``synthetic``: ``tools.synth.render_scene`` scenes (exact cameras and depth);
- ``folder``: ``root/<scene>/`` folders in recon's camera-folder layout (docs/synth.md): images, ``cameras.json``
  with ``K`` (pixels) and ``T_world_cam`` (camera-to-world, OpenCV) per image, ``depth/<view>.npz`` with
  ``depth [H, W]`` z-depth and ``mask [H, W]`` (valid pixels). Frames are centre-cropped to a multiple of the
  patch size (the principal point moves with the crop); all scenes must then share one image size.

Sampling (VGGT): each batch draws one sequence length S uniformly in ``data.views`` and holds
``frame_budget // S`` sequences; each sequence picks a scene (datasets by weight, scenes uniformly) and S distinct
frames of it in random order (with repetition only when the scene has fewer than S frames). The first frame is the
reference. Batches are pure functions of ``(seed, iteration, rank)``, so a resumed run sees the same data.

Targets (VGGT's normalisation): cameras and points in the first camera's frame, scaled so that the valid points of
the sequence lie at mean distance 1 from its origin; predictions are not normalised (the network learns the scale).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from recon.feedforward.camera import encode_pose
from recon.geometry import invert, transform, unproject
from training.common.config import DataConfigError
from training.feedforward.config import DataConfig, DatasetConfig
from training.feedforward.losses import Targets

logger = logging.getLogger(__name__)


@dataclass
class SceneFrames:
    """One scene held in memory: ``F`` frames of ``H x W``.

    Attributes:
        name: scene name.
        images: ``[F, H, W, 3]`` uint8 RGB.
        K: ``[F, 3, 3]`` float64 intrinsics in pixels.
        T_world_cam: ``[F, 4, 4]`` float64 camera-to-world (OpenCV).
        depth: ``[F, H, W]`` float32 z-depth.
        valid: ``[F, H, W]`` bool.
    """

    name: str
    images: np.ndarray
    K: np.ndarray
    T_world_cam: np.ndarray
    depth: np.ndarray
    valid: np.ndarray

    @property
    def size_hw(self) -> tuple[int, int]:
        return int(self.images.shape[1]), int(self.images.shape[2])


def _from_views(name: str, views, patch_size: int) -> SceneFrames:
    """Stack ``SynthView`` s, centre-cropped to a multiple of ``patch_size``."""
    H, W = views[0].rgb.shape[:2]
    Hc, Wc = H // patch_size * patch_size, W // patch_size * patch_size
    if Hc == 0 or Wc == 0:
        raise DataConfigError(f"scene {name}: {W}x{H} images are smaller than the patch size {patch_size}")
    y0, x0 = (H - Hc) // 2, (W - Wc) // 2
    images, Ks, depth, valid = [], [], [], []
    for v in views:
        if v.rgb.shape[:2] != (H, W):
            raise DataConfigError(f"scene {name}: frames of different sizes ({v.rgb.shape[:2]} and {(H, W)})")
        if v.depth is None:
            raise DataConfigError(f"scene {name}: view {v.name} has no depth (the recipe needs depth and mask)")
        images.append(v.rgb[y0 : y0 + Hc, x0 : x0 + Wc])
        K = np.array(v.K, dtype=np.float64)
        K[0, 2] -= x0
        K[1, 2] -= y0
        Ks.append(K)
        depth.append(v.depth[y0 : y0 + Hc, x0 : x0 + Wc])
        mask = v.mask if v.mask is not None else v.depth > 0
        valid.append(mask[y0 : y0 + Hc, x0 : x0 + Wc] & (depth[-1] > 0))
    return SceneFrames(
        name, np.stack(images), np.stack(Ks), np.stack([v.T_world_cam for v in views]), np.stack(depth), np.stack(valid)
    )


def load_scenes(d: DatasetConfig, patch_size: int) -> list[SceneFrames]:
    """Every scene of one dataset, in memory.

    Raises:
        DataConfigError: missing folder, no scene, a scene without depth.
    """
    if d.kind == "synthetic":
        from tools.synth import render_scene

        options = {"arc_deg": d.arc_deg} if d.layout == "orbit" else {}
        return [
            _from_views(
                f"{d.name}_{k}", render_scene(d.layout, d.views, d.size, seed=d.seed + k, **options), patch_size
            )
            for k in range(d.scenes)
        ]
    from pathlib import Path

    from tools.synth import CamerasFileError, read_folder

    root = Path(d.root)
    if not root.is_dir():
        raise DataConfigError(f"dataset {d.name}: folder not found: {root}")
    scenes = []
    for sub in sorted(p for p in root.iterdir() if (p / "cameras.json").is_file()):
        try:
            scenes.append(_from_views(sub.name, read_folder(sub), patch_size))
        except CamerasFileError as err:
            raise DataConfigError(f"dataset {d.name}: {err}") from None
    if not scenes:
        raise DataConfigError(f"dataset {d.name}: no scene folder with a cameras.json under {root}")
    return scenes


def normalised_targets(scene: SceneFrames, idx: np.ndarray) -> tuple[torch.Tensor, Targets]:
    """Images ``[S, 3, H, W]`` in [0, 1] and the normalised targets (batch dim 1) of frames ``idx`` of ``scene``."""
    T = scene.T_world_cam[idx]
    T_ref = invert(T[0]) @ T  # S 4 4: cameras in the first camera's frame
    depth = scene.depth[idx].astype(np.float64)
    valid = scene.valid[idx]
    S, H, W = depth.shape
    pts = transform(T_ref, unproject(depth, scene.K[idx]))  # S H W 3, in the first camera's frame
    dist = np.linalg.norm(pts[valid], axis=-1)
    scale = float(dist.mean()) if dist.size and dist.mean() > 0 else 1.0
    T_ref[:, :3, 3] /= scale
    pose = encode_pose(torch.from_numpy(T_ref), torch.from_numpy(scene.K[idx]), (H, W))
    images = torch.from_numpy(scene.images[idx]).permute(0, 3, 1, 2).float() / 255
    targets = Targets(
        pose_enc=pose.float()[None],
        depth=torch.from_numpy(np.where(valid, depth / scale, 0.0)).float()[None],
        pts3d=torch.from_numpy(np.where(valid[..., None], pts / scale, 0.0)).float()[None],
        valid=torch.from_numpy(valid)[None],
    )
    return images, targets


def cat_targets(items: list[Targets]) -> Targets:
    return Targets(*(torch.cat([getattr(t, f) for t in items]) for f in ("pose_enc", "depth", "pts3d", "valid")))


class SequenceSampler:
    """VGGT-style batches over in-memory scenes (see the module doc).

    Args:
        datasets: per dataset, its scenes.
        weights: per dataset, its sampling weight.
        data: batch shapes.
        seed: run seed.
        rank: this process's rank (different data per rank).
    """

    def __init__(
        self, datasets: list[list[SceneFrames]], weights: list[float], data: DataConfig, seed: int, rank: int = 0
    ) -> None:
        sizes = {s.size_hw for scenes in datasets for s in scenes}
        if len(sizes) != 1:
            raise DataConfigError(f"all scenes must share one image size after cropping, got {sorted(sizes)}")
        lo, hi = data.views
        if not 1 <= lo <= hi or hi > data.frame_budget:
            raise DataConfigError(f"data.views {data.views} must satisfy 1 <= min <= max <= frame_budget")
        self.datasets, self.data, self.seed, self.rank = datasets, data, seed, rank
        w = np.asarray(weights, dtype=np.float64)
        self.p = w / w.sum()

    def batch(self, it: int) -> tuple[torch.Tensor, Targets]:
        """Batch of iteration ``it``: images ``[n, S, 3, H, W]`` and targets."""
        rng = np.random.default_rng((self.seed, it, self.rank))
        S = int(rng.integers(self.data.views[0], self.data.views[1] + 1))
        images, targets = [], []
        for _ in range(max(1, self.data.frame_budget // S)):
            scenes = self.datasets[int(rng.choice(len(self.datasets), p=self.p))]
            scene = scenes[int(rng.integers(len(scenes)))]
            F = scene.images.shape[0]
            idx = rng.choice(F, size=S, replace=F < S)
            img, tgt = normalised_targets(scene, idx)
            images.append(img)
            targets.append(tgt)
        return torch.stack(images), cat_targets(targets)
