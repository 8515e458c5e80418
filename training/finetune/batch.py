"""A batch of training pairs, typed: what ``PairDataset`` samples collate into and what the criterion compares with.

``PairBatch.from_collated(default_collate(samples))`` holds the two views as ``ViewBatch`` es. The ground truth the
losses need (both views' points in the first view's camera, masks, matches) comes from ``in_frame_of_view1()``;
MASt3R's symmetrised batches are ``batch.cat(batch.swapped())``, in the order the network predicts them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from training.finetune.losses import to_camera


@dataclass(frozen=True)
class ViewBatch:
    """One view of every pair of a batch (``B`` pairs, the view ``H x W``, ``n`` correspondences per pair)."""

    img: Tensor
    """``[B, 3, H, W]`` RGB in [0, 1]."""
    pts3d: Tensor
    """``[B, H, W, 3]`` world points (re-centred on view 1's camera; 0 where not valid)."""
    valid: Tensor
    """``[B, H, W]`` bool: pixels with ground-truth depth."""
    sky: Tensor
    """``[B, H, W]`` bool: known sky (never valid)."""
    K: Tensor
    """``[B, 3, 3]`` intrinsics."""
    T_world_cam: Tensor
    """``[B, 4, 4]`` camera-to-world poses."""
    corres: Tensor
    """``[B, n, 2]`` int64 pixel ``(x, y)`` of each correspondence in this view."""

    @classmethod
    def from_collated(cls, view: Mapping[str, Tensor]) -> ViewBatch:
        """From a collated view dict (extra keys, such as ``depth``, are dropped)."""
        return cls(**{f.name: view[f.name] for f in dataclasses.fields(cls)})

    def map(self, fn, *others: ViewBatch) -> ViewBatch:
        """``fn`` applied to every field (with the same field of each of ``others`` as further arguments)."""
        names = [f.name for f in dataclasses.fields(self)]
        return ViewBatch(**{n: fn(getattr(self, n), *(getattr(o, n) for o in others)) for n in names})


@dataclass(frozen=True)
class PairBatch:
    """``B`` training pairs: the two views, which correspondences are true matches, which samples are metric."""

    view1: ViewBatch
    view2: ViewBatch
    valid_corres: Tensor
    """``[B, n]`` bool: true matches (the others are negatives)."""
    is_metric: Tensor
    """``[B]`` bool: the sample's source is in metric units."""

    @classmethod
    def from_collated(cls, raw: Mapping) -> PairBatch:
        """From ``default_collate`` of ``PairDataset`` samples (``view1``, ``view2``, ``valid_corres``,
        ``is_metric``)."""
        v1 = ViewBatch.from_collated(raw["view1"])
        metric = torch.as_tensor(raw["is_metric"], dtype=torch.bool, device=v1.pts3d.device)
        return cls(v1, ViewBatch.from_collated(raw["view2"]), raw["valid_corres"], metric.reshape(-1))

    def to(self, device: torch.device) -> PairBatch:
        """Every tensor on ``device``."""
        move = lambda x: x.to(device, non_blocking=True)  # noqa: E731
        return PairBatch(self.view1.map(move), self.view2.map(move), move(self.valid_corres), move(self.is_metric))

    def swapped(self) -> PairBatch:
        """The pairs ``(b, a)``: views exchanged, their correspondences with them."""
        return PairBatch(self.view2, self.view1, self.valid_corres, self.is_metric)

    def cat(self, other: PairBatch) -> PairBatch:
        """``self``'s pairs then ``other``'s (same view sizes)."""
        join = lambda a, b: torch.cat([a, b])  # noqa: E731
        return PairBatch(
            self.view1.map(join, other.view1),
            self.view2.map(join, other.view2),
            torch.cat([self.valid_corres, other.valid_corres]),
            torch.cat([self.is_metric, other.is_metric]),
        )

    def in_frame_of_view1(self) -> dict[str, Tensor]:
        """What ``losses.criterion`` compares with: ``pts1``, ``pts2`` (both in view 1's camera), ``valid1/2``,
        ``sky1/2``, ``is_metric``, ``corres1/2``, ``valid_corres``."""
        v1, v2 = self.view1, self.view2
        return {
            "pts1": to_camera(v1.pts3d, v1.T_world_cam), "pts2": to_camera(v2.pts3d, v1.T_world_cam),
            "valid1": v1.valid, "valid2": v2.valid, "sky1": v1.sky, "sky2": v2.sky, "is_metric": self.is_metric,
            "corres1": v1.corres, "corres2": v2.corres, "valid_corres": self.valid_corres,
        }  # fmt: skip
