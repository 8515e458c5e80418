"""Synthetic multi-view scenes with exact cameras and depth, and writers for the dataset layouts recon reads.

``render_scene`` ray-casts textured analytic primitives on the CPU (numpy + scipy only); ``write_folder`` /
``read_folder`` handle recon's plain folder layout, ``write_co3d`` the CO3Dv2 layout and ``write_re10k`` the
RealEstate10K camera files. See docs/synth.md.
"""

from tools.synth.co3d import (
    Co3dSequence,
    synth_co3d_sequences,
    write_co3d,
)
from tools.synth.folder import CamerasFileError, read_folder, write_folder
from tools.synth.re10k import read_re10k_clip, write_re10k
from tools.synth.render import SynthScene, SynthView, render_view
from tools.synth.scenes import LAYOUTS, iter_render_scene, make_scene, render_scene

__all__ = [
    "LAYOUTS",
    "CamerasFileError",
    "Co3dSequence",
    "SynthScene",
    "SynthView",
    "iter_render_scene",
    "make_scene",
    "read_folder",
    "read_re10k_clip",
    "render_scene",
    "render_view",
    "synth_co3d_sequences",
    "write_co3d",
    "write_folder",
    "write_re10k",
]
