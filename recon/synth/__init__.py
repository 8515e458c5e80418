"""Synthetic multi-view scenes with exact cameras and depth, and writers for the dataset layouts recon reads.

``render_scene`` ray-casts textured analytic primitives on the CPU (numpy + scipy only); ``write_folder`` /
``read_folder`` handle recon's plain folder layout, ``write_co3d`` the CO3Dv2 layout and ``write_re10k`` the
RealEstate10K camera files.
"""

from recon.synth.render import SynthScene, SynthView, render_view
from recon.synth.scenes import LAYOUTS, iter_render_scene, make_scene, render_scene

__all__ = [
    "LAYOUTS",
    "SynthScene",
    "SynthView",
    "iter_render_scene",
    "make_scene",
    "render_scene",
    "render_view",
]
