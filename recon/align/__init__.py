"""Global alignment: from pair predictions (and matches) to cameras and depth maps in one world frame.

- ``sparse_align``: MASt3R-SfM style (anchors, kinematic-tree start, 3D then 2D losses on matches);
- ``dense_align``: DUSt3R style (confidence-weighted point-map alignment with per-pair similarities);
- ``mast3r_sfm_align``: the official MASt3R-SfM sparse global alignment reproduced (``method="mast3r-sfm"``);
- ``dust3r_align``: DUSt3R's official PointCloudOptimizer reproduced (``method="dust3r"``);
- ``pairwise_align``: the closed-form two-view solution;
- ``align``: the dispatcher the pipeline calls.

See ``docs/alignment.md`` for the algorithms and their knobs.
"""

from recon.align.api import align
from recon.align.config import DenseAlignConfig, SparseAlignConfig
from recon.align.dense import dense_align
from recon.align.dust3r import Dust3rConfig, dust3r_align
from recon.align.mast3r_sfm import Mast3rSfmConfig, mast3r_sfm_align
from recon.align.pairwise import pairwise_align
from recon.align.problem import AlignmentError
from recon.align.sparse import sparse_align

__all__ = [
    "AlignmentError",
    "DenseAlignConfig",
    "Dust3rConfig",
    "Mast3rSfmConfig",
    "SparseAlignConfig",
    "align",
    "dense_align",
    "dust3r_align",
    "mast3r_sfm_align",
    "pairwise_align",
    "sparse_align",
]
