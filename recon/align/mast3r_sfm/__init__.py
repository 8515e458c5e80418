"""The official MASt3R-SfM sparse global alignment (``mast3r.cloud_opt.sparse_ga``), reproduced clean-room.

``recon.align.align(views, preds, method="mast3r-sfm", **official_knobs)`` runs it; the knobs are the fields of
``Mast3rSfmConfig`` (official names and defaults). recon's own ``method="sparse"`` is a different algorithm.
"""

from recon.align.mast3r_sfm.align import mast3r_sfm_align
from recon.align.mast3r_sfm.config import KINEMATIC_MODES, Mast3rSfmConfig

__all__ = ["KINEMATIC_MODES", "Mast3rSfmConfig", "mast3r_sfm_align"]
