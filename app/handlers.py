"""What the viewer does, without any Gradio: run a reconstruction in a workspace, re-export it, tabulate it.

The UI (``app.ui``) only wires these functions to components, so the error paths and the session isolation are
tested here without a browser. User mistakes raise ``RunError`` whose message is shown as is; nothing here
ever returns a traceback to the user.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.config import AppLimits
from app.workspace import Workspace

logger = logging.getLogger(__name__)

# (stage, fraction in [0, 1], message); the stages are STAGES in order.
ProgressFn = Callable[[str, float, str], None]
STAGES = ("load", "pairs", "inference", "matching", "alignment", "export")
GRAPHS = ("auto", "complete", "swin-3", "logwin-3", "oneref-0", "retrieval")


class RunError(RuntimeError):
    """A reconstruction that cannot be done as asked; the message tells the user what to change."""


@dataclass(frozen=True)
class RunSettings:
    """The pipeline knobs offered in the UI (see ``recon.pipeline.ReconstructConfig`` / ``UserPriors``).

    Attributes:
        graph: scene graph (``auto``, ``complete``, ``swin-k``, ``logwin-k``, ``oneref-i``, ``retrieval-k``).
        align: ``sparse`` or ``dense``.
        image_size: network input long side; None = the model's native size.
        subsample: seed-grid step of the matcher (larger: fewer matches, faster).
        match_conf_thr: minimum descriptor confidence of a match.
        shared_intrinsics: all photos come from one camera.
        focal: known focal length in pixels of the original photos (None: estimate).
        use_exif: use EXIF focal lengths when present.
        seed: seed of the random choices.
    """

    graph: str = "auto"
    align: str = "sparse"
    image_size: int | None = None
    subsample: int = 8
    match_conf_thr: float = 0.0
    shared_intrinsics: bool = False
    focal: float | None = None
    use_exif: bool = True
    seed: int = 0


@dataclass(frozen=True)
class ViewSettings:
    """How the cached result is exported and shown (changing these never re-runs inference).

    Attributes:
        conf_thr: show points whose confidence is above this.
        clean_depth: hide points occluded in other views (floaters).
        as_mesh: pixel-grid meshes instead of points.
        show_cameras: camera frustums in the 3D view.
    """

    conf_thr: float = 1.5
    clean_depth: bool = True
    as_mesh: bool = False
    show_cameras: bool = True


@dataclass
class ExportSet:
    """Files of one export, all inside the workspace."""

    glb: Path
    ply: Path
    colmap_zip: Path
    transforms: Path
    settings: ViewSettings
    n_points: int = 0

    @property
    def downloads(self) -> list[Path]:
        return [self.glb, self.ply, self.colmap_zip, self.transforms]


@dataclass
class RunResult:
    """A finished reconstruction cached in the workspace (``scene`` is re-exported on demand)."""

    scene: object  # recon.types.Scene
    report: object  # recon.pipeline.RunReport
    image_paths: list[Path | None]
    exports: ExportSet | None = None
    cleaned: object | None = None  # the scene with floaters demoted, computed once on first use

    def cleaned_scene(self):
        from recon.scene import clean_scene

        if self.cleaned is None:
            self.cleaned = clean_scene(self.scene)
        return self.cleaned


def _check_settings(s: RunSettings, limits: AppLimits) -> None:
    if s.align not in ("sparse", "dense"):
        raise RunError(f"alignment must be 'sparse' or 'dense', not {s.align!r}")
    if s.image_size is not None and not 64 <= s.image_size <= 1024:
        raise RunError(f"image size must be between 64 and 1024 pixels, got {s.image_size}")
    if s.subsample < 1:
        raise RunError(f"match subsampling must be >= 1, got {s.subsample}")
    if s.focal is not None and not (math.isfinite(s.focal) and s.focal > 0):
        raise RunError(f"the known focal length must be a positive number of pixels, got {s.focal}")


def run_reconstruction(
    ws: Workspace,
    model,
    settings: RunSettings,
    limits: AppLimits,
    *,
    view: ViewSettings = ViewSettings(),
    device: str = "auto",
    progress: ProgressFn | None = None,
) -> RunResult:
    """Reconstruct the workspace's inputs with ``model`` and export the result into the workspace.

    Args:
        ws: the session's workspace (inputs ingested by ``app.uploads``).
        model: a loaded ``ReconModel``.
        settings: pipeline knobs.
        limits: upload limits (``max_images``, ``video_fps`` and ``max_pixels`` apply here).
        view: the first export's settings.
        device: torch device.
        progress: callback ``(stage, fraction, message)`` over ``STAGES``.

    Returns:
        The result, also stored as ``ws.result``.

    Raises:
        RunError: no or too few usable images, bad settings, or a reconstruction that failed on this input.
    """
    from recon.align import AlignmentError
    from recon.images import ImageLoadError, load_images
    from recon.pipeline import ReconstructConfig, ReconstructionError, UserPriors, reconstruct

    def report(stage: str, frac: float, msg: str) -> None:
        if progress is not None:
            progress(stage, frac, msg)

    _check_settings(settings, limits)
    if not ws.inputs:
        raise RunError("upload photos (at least 2), a zip of photos or a short video first")
    ws.result = None
    t0 = time.perf_counter()
    report("load", 0.0, f"loading {len(ws.inputs)} file(s)")
    video = len(ws.inputs) == 1 and ws.inputs[0].name.startswith("video")
    try:
        views, skipped = load_images(
            str(ws.inputs[0]) if video else [str(p) for p in ws.inputs],
            size=settings.image_size or model.image_size,
            patch_size=model.patch_size,
            square_ok=model.patch_size != 16,
            max_images=limits.max_images,
            video_fps=limits.video_fps,
            max_pixels=limits.max_pixels,
        )
    except ImageLoadError as err:
        raise RunError(str(err)) from None
    skipped = [(Path(str(p)).name, str(why)) for p, why in skipped]
    if len(views) < 2:
        why = "; ".join(f"{n}: {r}" for n, r in skipped) or "only one was given"
        raise RunError(f"need at least 2 usable images, got {len(views)} ({why})")
    load_s = time.perf_counter() - t0
    report("load", 1.0, f"{len(views)} images loaded, {len(skipped)} skipped")

    config = ReconstructConfig(
        graph=settings.graph.strip(),
        align=settings.align,
        image_size=settings.image_size,
        match_conf_thr=settings.match_conf_thr,
        subsample=int(settings.subsample),
        device=device,
        seed=int(settings.seed),
        progress=False,
    )
    priors = UserPriors(focal=settings.focal, shared_intrinsics=settings.shared_intrinsics, use_exif=settings.use_exif)

    def forward(stage: str, frac: float, msg: str) -> None:
        if stage != "load":  # our own loading above already reported it
            report(stage, frac, msg)

    try:
        scene, run_report = reconstruct(views, model, config=config, priors=priors, progress=forward)
    except (ReconstructionError, AlignmentError) as err:
        raise RunError(str(err)) from None
    except ValueError as err:  # a scene graph the pairing step does not understand, and similar settings
        raise RunError(f"cannot run with these settings: {err}") from None
    run_report.skipped = skipped + list(run_report.skipped)
    run_report.stage_seconds["load"] = run_report.stage_seconds.get("load", 0.0) + load_s
    # Video frames have no file of their own (their ``path`` is the video): exports then name views only.
    paths = [None if video or not v.path else Path(v.path) for v in views]
    result = RunResult(scene=scene, report=run_report, image_paths=paths)
    ws.result = result
    report("export", 0.0, "writing GLB, PLY, COLMAP and transforms.json")
    t1 = time.perf_counter()
    export_result(ws, view)
    run_report.stage_seconds["export"] = time.perf_counter() - t1
    report("export", 1.0, "export done")
    return result


def export_result(ws: Workspace, view: ViewSettings) -> ExportSet:
    """(Re-)export the cached result with ``view`` settings into a fresh folder of the workspace.

    Raises:
        RunError: no result is cached (run first), or nothing is left to export at these settings.
    """
    from recon.export import export
    from recon.scene import valid_masks

    result = ws.result
    if not isinstance(result, RunResult):
        raise RunError("no reconstruction in this session yet: run one first")
    if not (math.isfinite(view.conf_thr) and view.conf_thr >= 0):
        raise RunError(f"the confidence threshold must be >= 0, got {view.conf_thr}")
    out = ws.new_output_dir()
    kw = dict(conf_thr=view.conf_thr, clean_depth=False)
    images = result.image_paths if all(p is not None for p in result.image_paths) else None
    try:
        # Cleaning does not depend on the threshold: do it once per result, not per export and slider move.
        scene = result.cleaned_scene() if view.clean_depth else result.scene
        glb = export(scene, out / "scene.glb", as_mesh=view.as_mesh, show_cameras=view.show_cameras, **kw)
        ply = export(scene, out / "scene.ply", as_mesh=view.as_mesh, **kw)
        colmap = export(scene, out / "colmap", format="colmap", images=images, **kw)
        ns = export(scene, out / "nerfstudio", format="nerfstudio", images=None, point_cloud=False, **kw)
    except ValueError as err:  # e.g. no registered camera
        raise RunError(f"cannot export this result: {err}") from None
    colmap_zip = Path(shutil.make_archive(str(out / "colmap"), "zip", root_dir=colmap))
    shutil.rmtree(colmap)
    transforms = out / "transforms.json"
    (ns / "transforms.json").replace(transforms)
    shutil.rmtree(ns)
    n_points = int(sum(int(m.sum()) for m in valid_masks(scene, view.conf_thr)))
    result.exports = ExportSet(glb, ply, colmap_zip, transforms, view, n_points)
    return result.exports


TABLE_HEADERS = ["#", "image", "registered", "focal (px)", "mean confidence", "size (px)"]


def image_table(result: RunResult | None) -> list[list]:
    """One row per view: index, name, registered, focal (original pixels), mean confidence, original size.

    Focal and confidence are left empty for views the alignment could not register."""
    if result is None:
        return []
    scene = result.scene
    K = scene.K_orig
    reg = scene.registered if scene.registered is not None else np.ones(len(scene), dtype=bool)
    rows = []
    for k, name in enumerate(scene.names):
        conf = scene.conf[k]
        valid = conf > 0
        H, W = scene.orig_sizes[k] if scene.orig_sizes else conf.shape
        if reg[k]:
            focal = f"{np.sqrt(K[k, 0, 0] * K[k, 1, 1]):.1f}"
            mean_conf = f"{conf[valid].mean():.3f}" if valid.any() else ""
        else:  # an unregistered view has no meaningful camera or depth
            focal = mean_conf = ""
        rows.append([k, name, "yes" if reg[k] else "no", focal, mean_conf, f"{W}x{H}"])
    return rows


def stage_counts(result: RunResult) -> dict[str, str]:
    """Per stage, what it did (counts) and how long it took, for the stage log of a finished run."""
    r = result.report
    ex = result.exports
    text = {
        "load": f"{r.n_images} images used, {len(r.skipped)} skipped",
        "pairs": f"{r.n_pairs} pair{'s' if r.n_pairs != 1 else ''} (scene graph {r.graph})",
        "inference": f"{r.n_encoder_images} encoder passes, {2 * r.n_pairs} decoder passes",
        "matching": f"{r.n_matches:,} matches" if r.n_matches else "no matches (dense alignment)",
        "alignment": f"{r.registered}/{r.n_images} cameras registered",
        "export": f"{ex.n_points:,} points above confidence {ex.settings.conf_thr:g}" if ex else "not exported",
    }
    return {s: f"{text[s]} ({r.stage_seconds[s]:.1f} s)" if s in r.stage_seconds else text[s] for s in STAGES}


def summary_markdown(result: RunResult) -> str:
    """Counts and per-stage times of a finished run, as Markdown."""
    r = result.report
    pairs = f"{r.n_pairs} pair{'s' if r.n_pairs != 1 else ''}"
    lines = [
        f"**Done.** {r.registered}/{r.n_images} cameras registered; scene graph `{r.graph}`: {pairs}, "
        f"{r.n_matches} matches; mean confidence {r.mean_conf:.2f}.",
    ]
    total = sum(r.stage_seconds.get(s, 0.0) for s in STAGES)
    lines.append(f"Total time {total:.1f} s.")
    if r.skipped:
        lines.append(f"Skipped {len(r.skipped)}: " + "; ".join(f"`{n}` ({why})" for n, why in r.skipped[:10]))
    return "\n".join(lines)
