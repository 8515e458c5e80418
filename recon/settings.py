"""The settings of ``reconstruct``: ``ReconstructConfig`` (how to run) and ``UserPriors`` (what the user knows).

Plain frozen dataclasses, torch-free, so that ``recon run`` builds its flags from them (``recon.config``) without
importing torch; ``recon.pipeline`` re-exports both. Each checks its fields at construction
(``recon.plan.check_config`` / ``check_priors``), raising a ``UserError`` that names the field.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass(frozen=True)
class UserPriors:
    """Camera knowledge given by the user, in ORIGINAL image pixels (as the user knows them).

    Attributes:
        focal: one focal length (pixels of the original images) for every image.
        intrinsics_file: JSON of per-image intrinsics (``K`` or ``fx, fy, cx, cy``; see ``read_camera_file``).
        poses_file: JSON of per-image camera-to-world poses ``T_world_cam`` (4x4, OpenCV); held fixed.
        shared_intrinsics: all images were taken with one camera (one focal / principal point is optimised).
        use_exif: start from the EXIF focal length of images that have one and no other prior; it is then
            optimised like any focal (EXIF is often wrong after crops or digital zoom).
        fix_focal: hold the EXIF focal lengths fixed instead of optimising them.
    """

    focal: float | None = None
    intrinsics_file: Path | None = None
    poses_file: Path | None = None
    shared_intrinsics: bool = False
    use_exif: bool = True
    fix_focal: bool = False

    def __post_init__(self):
        from recon.plan import check_priors

        check_priors(self)


@dataclass(frozen=True)
class ReconstructConfig:
    """Settings of ``reconstruct``; every field has a sensible default.

    Attributes:
        graph: scene graph (``auto``, ``complete``, ``swin-k``, ``logwin-k``, ``oneref-i``, ``retrieval-Na-k``);
            ``auto`` is ``complete`` while its predictions fit the memory budget, else a sparser graph whose
            name and reason go to the log and to ``RunReport.graph_reason``.
        align: ``sparse`` (recon's MASt3R-SfM-style variant), ``dense`` (recon's DUSt3R-style variant),
            ``mast3r-sfm`` (the official MASt3R-SfM sparse global alignment reproduced; it matches the descriptors
            itself), ``dust3r`` (DUSt3R's PointCloudOptimizer reproduced; docs/alignment.md), ``feedforward``
            (one pass of a feed-forward model, ``feedforward_final.pth``; docs/feedforward.md) or
            ``feedforward+sparse`` (``sparse`` started from the cameras of ``feedforward_model``).
        image_size: network input size (long side); ``None`` = the model's native size.
        match_conf_thr: minimum descriptor confidence of a match.
        subsample: seed-grid step of the reciprocal matcher.
        batch_size: ordered pairs per decoder call.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda[:k]``.
        cache_dir: where pair predictions are spilled / cached for resuming; ``None`` = RAM only.
        max_ram_gb: RAM budget of the whole run: the pair predictions keep what the process and the largest
            stage's working set leave (``recon.plan.prediction_ram_bytes``), the rest spills to ``cache_dir`` or to
            a temporary folder removed at the end; 0 spills every prediction (and bounds nothing else).
        seed: seeds the retrieval graph and the optimisers.
        progress: show progress bars.
        align_config: a ``recon.align.SparseAlignConfig`` / ``DenseAlignConfig`` (iterations, learning rates,
            optimisation level); ``None`` = the aligner's defaults.
        precision: ``float16`` stores point maps and descriptors in half precision (confidences are always
            float32); ``float32`` turns reduced precision off.
        two_view: with two images, ``optimise`` runs the same alignment as for N; ``pairwise`` the closed form.
        retrieval_model: the released ``*_retrieval_trainingfree.pth`` (its ``*_codebook.pkl`` beside it): a
            ``retrieval`` graph then ranks images with its ASMK scores (``recon.asmk``) instead of pooled tokens.
        feedforward_model: ``align = "feedforward+sparse"``: the feed-forward model (a ``FeedForwardModel`` or a
            ``feedforward_final.pth``) whose cameras start the sparse alignment.
        max_decodes: refuse (``ReconstructionError``) a graph that plans more decoder passes for the loaded images;
            ``None`` = no limit.

    Raises:
        UserError: a field out of its range (``recon.plan.check_config``), at construction.
    """

    graph: str = "auto"
    align: Literal["sparse", "dense", "mast3r-sfm", "dust3r", "feedforward", "feedforward+sparse"] = "sparse"
    image_size: int | None = None
    match_conf_thr: float = 0.0
    subsample: int = 8
    batch_size: int = 8
    device: str = "auto"
    cache_dir: Path | None = None
    max_ram_gb: float = 4.0
    seed: int = 0
    progress: bool = True
    align_config: object | None = None
    precision: Literal["float16", "float32"] = "float16"
    two_view: Literal["optimise", "pairwise"] = "optimise"
    retrieval_model: Path | None = None
    max_decodes: int | None = None
    feedforward_model: object | None = None

    def __post_init__(self):
        from recon.plan import check_config

        check_config(self)
