"""``Mast3rSfmConfig``: the knobs of the official MASt3R-SfM sparse global alignment, by their official names."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal

# scipy.cluster.hierarchy.linkage methods accepted after "hclust-" (the official splits the mode on "-").
HCLUST_LINKAGES = ("single", "complete", "average", "weighted", "centroid", "median", "ward")
KINEMATIC_MODES = ("mst", *(f"hclust-{m}" for m in HCLUST_LINKAGES))


@dataclass(frozen=True)
class Mast3rSfmConfig:
    """Knobs of ``mast3r_sfm_align``; names and defaults are those of the official
    ``mast3r.cloud_opt.sparse_ga.sparse_global_alignment`` / ``sparse_scene_optimizer`` (reference/mast3r.md §8).

    The MASt3R demo uses the same values except ``matching_conf_thr=0.0`` (its slider's default) and, for its
    "coarse" / "refine" levels, ``niter2=0`` / ``opt_depth=False``.
    """

    subsample: int = 8
    """Anchor grid stride and matcher seed stride in pixels: one optimised depth per ``subsample``² block."""
    kinematic_mode: str = "hclust-ward"
    """Kinematic tree of the relative poses: ``"mst"`` (maximum spanning tree of the match counts) or
    ``"hclust-<linkage>"`` (hierarchical clustering of the normalised match counts, scipy linkage method)."""
    shared_intrinsics: bool = False
    """Optimise one focal / principal point for all views (init: average weighted by mean canonical conf)."""
    lr1: float = 0.07
    """Peak learning rate of the coarse stage (3D matching; poses and per-view scales only)."""
    niter1: int = 300
    """Iterations of the coarse stage."""
    loss1: float = 1.5
    """Gamma of the coarse stage's robust loss (official ``loss1=gamma_loss(1.5)``)."""
    lr2: float = 0.01
    """Peak learning rate of the fine stage (2D reprojection; adds intrinsics and anchor depths)."""
    niter2: int = 300
    """Iterations of the fine stage; 0 skips it (the demo's "coarse" level)."""
    loss2: float = 0.5
    """Gamma of the fine stage's robust loss (official ``loss2=gamma_loss(0.5)``)."""
    lossd: float = 1.1
    """Gamma of the DUSt3R-regression fallback loss (official ``lossd=gamma_loss(1.1)``)."""
    opt_pp: bool = True
    """Optimise the principal points in the fine stage."""
    opt_depth: bool = True
    """Optimise the anchor depths in the fine stage (the demo's "refine+depth")."""
    schedule: Literal["cosine", "linear"] = "cosine"
    """Learning-rate schedule from the stage's peak down to 0 (official ``cosine_schedule``)."""
    depth_mode: Literal["add", "mul"] = "add"
    """How anchor depths combine with the camera's focal-plane distance: ``z + (d - 1) * median * size`` or
    ``z * d``."""
    exp_depth: bool = False
    """Parametrise the anchor depths by their log."""
    matching_conf_thr: float = 5.0
    """A pair whose best match confidence is at or below this uses the DUSt3R regression loss instead of its
    matches (the demo passes 0.0)."""
    loss_dust3r_w: float = 0.01
    """Weight of the DUSt3R regression fallback loss."""
    clean_depth: bool = True
    """Lower the output confidence of points floating in front of a more confident view
    (official ``get_dense_pts3d(clean_depth=True)`` -> ``clean_pointcloud(tol=0.001, bad_conf=0)``)."""
    dtype: Literal["float32", "float64"] = "float32"
    """Precision of the optimisation (the official runs float32; its float64 path crashes)."""
    device: str = "cpu"
    """Torch device."""

    def __post_init__(self) -> None:
        if self.kinematic_mode not in KINEMATIC_MODES:
            raise ValueError(f"kinematic_mode must be one of {', '.join(KINEMATIC_MODES)}; got {self.kinematic_mode!r}")
        if self.subsample < 1:
            raise ValueError(f"subsample must be >= 1, got {self.subsample}")
        if self.niter1 < 0 or self.niter2 < 0:
            raise ValueError(f"niter1 and niter2 must be >= 0, got {self.niter1} and {self.niter2}")
        if self.schedule not in ("cosine", "linear"):
            raise ValueError(f"schedule must be 'cosine' or 'linear', got {self.schedule!r}")
        if self.depth_mode not in ("add", "mul"):
            raise ValueError(f"depth_mode must be 'add' or 'mul', got {self.depth_mode!r}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {self.dtype!r}")
        for name in ("loss1", "loss2", "lossd"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} (a gamma) must be > 0, got {getattr(self, name)}")

    @classmethod
    def from_kwargs(cls, **kw) -> Mast3rSfmConfig:
        """Build from official keyword names; an unknown name is a ``TypeError`` that lists the known ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kw) - known)
        if unknown:
            raise TypeError(f"unknown mast3r-sfm option(s) {unknown}; known: {sorted(known)}")
        return cls(**kw)
