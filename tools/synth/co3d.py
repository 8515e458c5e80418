"""Write synthetic sequences in the CO3Dv2 layout, cameras in CO3D's own conventions.

Conventions (reference ``co3d_eval.md`` section 2.6), for an image of ``W x H`` pixels, ``s = min(W, H) / 2`` and
``F = diag(-1, -1, 1)``:

- ``viewpoint.R``, ``viewpoint.T``: PyTorch3D row-vector camera, ``X_cam = X_world @ R + T``, camera axes +X
  left, +Y up, +Z forward. From an OpenCV world-to-camera ``(R_w2c, t_w2c)``: ``R = R_w2c^T F``, ``T = F t_w2c``.
- ``"ndc_isotropic"`` (CO3Dv2): ``focal_length = (fx, fy) / s``, ``principal_point = ((W/2 - cx) / s,
  (H/2 - cy) / s)``.
- ``"ndc_norm_image_bounds"`` (legacy): ``focal_length = (fx / (W/2), fy / (H/2))``, ``principal_point =
  ((W/2 - cx) / (W/2), (H/2 - cy) / (H/2))``.
- ``image.size`` is ``[H, W]`` (height first).

Layout written under ``root``::

    category_to_subset_name_list.json            {category: ["fewview_dev"]}
    <category>/frame_annotations.jgz             gzip JSON list, one FrameAnnotation per frame
    <category>/sequence_annotations.jgz          gzip JSON list, one SequenceAnnotation per sequence
    <category>/set_lists/set_lists_fewview_dev.json   {"train": [...], "val": [], "test": [...]}
    <category>/<sequence>/images/frame%06d.jpg
    <category>/<sequence>/depths/frame%06d.jpg.geometric.png   float16 depth bits in a 16-bit PNG
    <category>/<sequence>/depth_masks/frame%06d.png            255 where the depth is valid
    <category>/<sequence>/masks/frame%06d.png                  255 on foreground objects, 0 elsewhere

Set-list entries are ``[sequence_name, frame_number, image_path]`` with ``image_path`` relative to ``root``.
File indices are ``frame_number + file_index_offset`` (1 by default, as in the published data), so readers must
join on ``frame_number``, not parse file names.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backbone.fileio import write_bytes_atomic, write_json_atomic
from recon.datasets.cameras import INTRINSICS_FORMATS, opencv_to_co3d_viewpoint
from tools.synth.io_utils import encode_image, write_image_atomic, write_jgz_atomic
from tools.synth.render import SynthView

logger = logging.getLogger(__name__)

SUBSET = "fewview_dev"
BAD_T = [1.0e5, 1.0, 0.0]  # signed sum 100001 > 1e5: the protocol drops the whole sequence
FPS = 30.0


def encode_depth_png(depth: np.ndarray) -> bytes:
    """CO3D depth PNG: float16 depth whose bits are stored as a 16-bit greyscale PNG (``[H, W]`` float)."""
    bits = np.ascontiguousarray(np.asarray(depth, dtype=np.float16)).view(np.uint16)
    return encode_image(bits, "png")


def decode_depth_png(path: str | os.PathLike, scale_adjustment: float = 1.0) -> np.ndarray:
    """Read a CO3D depth PNG back to float32 ``[H, W]`` (non-finite values become 0)."""
    from PIL import Image

    with Image.open(path) as im:
        bits = np.asarray(im).astype(np.uint16)
    depth = bits.view(np.float16).astype(np.float32) * float(scale_adjustment)
    depth[~np.isfinite(depth)] = 0.0
    return depth


@dataclass
class Co3dSequence:
    """One sequence to write.

    Attributes:
        name: sequence name (unique within its category).
        views: frames in order; ``frame_number`` is the position in this list.
        quality: ``viewpoint_quality_score``; the protocol keeps a sequence iff it is strictly above 0.5.
        split: set-list key its frames go under: ``"test"``, ``"train"`` or ``"val"``.
        bad_translation_frame: if set, that frame's ``viewpoint.T`` is overwritten with ``[1e5, 1, 0]`` (a decoy
            the protocol must drop: signed sum of T above 1e5).
        empty_mask_frames: frame numbers whose foreground mask is written all-zero (RelPose++ preprocessing
            drops such frames, VGGT's keeps them).
    """

    name: str
    views: Sequence[SynthView]
    quality: float = 1.0
    split: str = "test"
    bad_translation_frame: int | None = None
    empty_mask_frames: tuple[int, ...] = ()


def write_co3d(
    root: str | os.PathLike,
    categories: Mapping[str, Sequence[Co3dSequence]],
    intrinsics_format: str = "ndc_isotropic",
    file_index_offset: int = 1,
    quality: int = 90,
    with_depth: bool = True,
    with_masks: bool = True,
    progress=None,
) -> Path:
    """Write sequences in the CO3Dv2 layout (module docstring lists every file and field).

    Per frame annotation: ``sequence_name``, ``frame_number``, ``frame_timestamp`` (frame_number / 30),
    ``image {path, size [H, W]}``, ``depth {path, scale_adjustment 1.0, mask_path}`` (with depth),
    ``mask {path, mass}`` (with masks; mass = number of foreground pixels), ``viewpoint`` (see
    ``opencv_to_co3d_viewpoint``), ``meta {"frame_type": "<split>_known"}``. Per sequence: ``sequence_name``,
    ``category``, ``video`` null, ``point_cloud`` null, ``viewpoint_quality_score``. Masks are the views'
    ``fg_mask`` (or ``mask`` if absent).

    Args:
        root: dataset root (created).
        categories: category name -> sequences.
        intrinsics_format: ``"ndc_isotropic"`` (CO3Dv2) or ``"ndc_norm_image_bounds"``.
        file_index_offset: file index minus frame number.
        quality: JPEG quality.
        with_depth: write depth PNGs and depth masks.
        with_masks: write foreground masks.
        progress: optional callable invoked once per written frame (e.g. a tqdm ``update``).

    Returns:
        ``root``.
    """
    if intrinsics_format not in INTRINSICS_FORMATS:
        raise ValueError(f"intrinsics_format must be one of {INTRINSICS_FORMATS}, got {intrinsics_format!r}")
    root = Path(root)
    subsets = {}
    for cat, seqs in categories.items():
        names = [s.name for s in seqs]
        if len(set(names)) != len(names):
            raise ValueError(f"category {cat!r}: sequence names must be unique, got {names}")
        frames, seq_anns = [], []
        set_list: dict[str, list] = {"train": [], "val": [], "test": []}
        for seq in seqs:
            if seq.split not in set_list:
                raise ValueError(f"sequence {seq.name!r}: split must be one of {sorted(set_list)}, got {seq.split!r}")
            for fn, view in enumerate(seq.views):
                frames.append(
                    _write_frame(root, cat, seq, fn, view, intrinsics_format, file_index_offset, quality,
                                 with_depth, with_masks)
                )  # fmt: skip
                set_list[seq.split].append([seq.name, fn, frames[-1]["image"]["path"]])
                if progress is not None:
                    progress()
            seq_anns.append(
                {
                    "sequence_name": seq.name,
                    "category": cat,
                    "video": None,
                    "point_cloud": None,
                    "viewpoint_quality_score": float(seq.quality),
                }
            )
        write_jgz_atomic(root / cat / "frame_annotations.jgz", frames)
        write_jgz_atomic(root / cat / "sequence_annotations.jgz", seq_anns)
        write_json_atomic(root / cat / "set_lists" / f"set_lists_{SUBSET}.json", set_list, indent=None)
        subsets[cat] = [SUBSET]
    # Merge with an existing index so categories written by separate calls stay listed.
    index_path = root / "category_to_subset_name_list.json"
    if index_path.is_file():
        existing = json.loads(index_path.read_text(encoding="utf-8"))
        subsets = {**{k: v for k, v in existing.items() if k not in subsets}, **subsets}
    write_json_atomic(index_path, dict(sorted(subsets.items())))
    return root


def _write_frame(
    root: Path,
    cat: str,
    seq: Co3dSequence,
    fn: int,
    view: SynthView,
    intrinsics_format: str,
    offset: int,
    quality: int,
    with_depth: bool,
    with_masks: bool,
) -> dict:
    W, H = view.size
    stem = f"frame{fn + offset:06d}"
    image_path = f"{cat}/{seq.name}/images/{stem}.jpg"
    write_image_atomic(root / image_path, view.rgb, quality)
    viewpoint = opencv_to_co3d_viewpoint(view.T_world_cam, view.K, (H, W), intrinsics_format)
    if seq.bad_translation_frame == fn:
        viewpoint["T"] = list(BAD_T)
    ann = {
        "sequence_name": seq.name,
        "frame_number": fn,
        "frame_timestamp": fn / FPS,
        "image": {"path": image_path, "size": [H, W]},
        "viewpoint": viewpoint,
        "meta": {"frame_type": f"{seq.split}_known"},
    }
    if with_depth:
        if view.depth is None:
            raise ValueError(f"{cat}/{seq.name} frame {fn}: with_depth=True but the view has no depth")
        depth_path = f"{cat}/{seq.name}/depths/{stem}.jpg.geometric.png"
        dmask_path = f"{cat}/{seq.name}/depth_masks/{stem}.png"
        valid = view.mask if view.mask is not None else view.depth > 0
        write_bytes_atomic(root / depth_path, encode_depth_png(np.where(valid, view.depth, 0.0)))
        write_image_atomic(root / dmask_path, valid.astype(np.uint8) * 255)
        ann["depth"] = {"path": depth_path, "scale_adjustment": 1.0, "mask_path": dmask_path}
    if with_masks:
        fg = view.fg_mask if view.fg_mask is not None else view.mask
        if fg is None:
            raise ValueError(f"{cat}/{seq.name} frame {fn}: with_masks=True but the view has no mask")
        if fn in seq.empty_mask_frames:
            fg = np.zeros_like(fg)
        mask_path = f"{cat}/{seq.name}/masks/{stem}.png"
        write_image_atomic(root / mask_path, fg.astype(np.uint8) * 255)
        ann["mask"] = {"path": mask_path, "mass": float(fg.sum())}
    return ann


DECOYS = ("decoy_lowq", "decoy_short", "decoy_badT", "decoy_train")


def synth_co3d_sequences(
    n_sequences: int = 2,
    n_frames: int = 50,
    size: tuple[int, int] = (64, 48),
    seed: int = 0,
    decoys: bool = True,
    min_frames: int = 50,
    layout: str = "orbit",
    progress=None,
    **options,
) -> list[Co3dSequence]:
    """Render the sequences of one synthetic category: ``n_sequences`` valid orbits plus, optionally, decoys.

    Valid sequences are named ``seq_000``, ``seq_001``, ... (quality in [0.6, 1.0], ``"test"`` split). Decoys,
    which the protocol's filters must drop (reference section 3), are:

    - ``decoy_lowq``: quality exactly 0.5 (the rule is strict ``> 0.5``);
    - ``decoy_short``: ``min_frames - 1`` frames;
    - ``decoy_badT``: frame 1 has ``T = [1e5, 1, 0]``;
    - ``decoy_train``: listed under ``"train"``, not ``"test"`` (10 frames).

    Each sequence is its own scene, drawn from ``seed * 1000 + index``.

    Args:
        n_sequences: valid sequences.
        n_frames: frames per valid sequence (and per low-quality / bad-T decoy).
        size: ``(W, H)``.
        seed: base seed.
        decoys: add the four decoys.
        min_frames: the protocol's minimum, which ``decoy_short`` falls one short of.
        layout: scene layout (CO3D is object-centric: ``"orbit"``).
        progress: optional callable invoked once per rendered frame.
        **options: passed to ``render_scene``.
    """
    from tools.synth.scenes import iter_render_scene

    rng = np.random.default_rng(seed)
    plan = [(f"seq_{i:03d}", n_frames, float(np.round(rng.uniform(0.6, 1.0), 3)), "test", None) for i in
            range(n_sequences)]  # fmt: skip
    if decoys:
        plan += [
            ("decoy_lowq", n_frames, 0.5, "test", None),
            ("decoy_short", min_frames - 1, 1.0, "test", None),
            ("decoy_badT", n_frames, 1.0, "test", 1),
            ("decoy_train", 10, 1.0, "train", None),
        ]
    seqs = []
    for k, (name, n, q, split, bad) in enumerate(plan):
        views = []
        for view in iter_render_scene(layout, n_views=n, size=size, seed=seed * 1000 + k, **options):
            views.append(view)
            if progress is not None:
                progress()
        seqs.append(Co3dSequence(name, views, quality=q, split=split, bad_translation_frame=bad))
    return seqs
