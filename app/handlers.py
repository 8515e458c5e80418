"""What the viewer does, without any Gradio: run a reconstruction in a workspace, re-export it, tabulate it.

The UI (``app.ui``) only wires these functions to components, so the error paths and the session isolation are
tested here without a browser. User mistakes raise ``RunError`` whose message is shown as is; nothing here
ever returns a traceback to the user.
"""

from __future__ import annotations

import logging
import math
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from app.config import AppLimits
from app.workspace import Workspace
from recon.errors import UserError
from recon.settings import ReconstructConfig, UserPriors

logger = logging.getLogger(__name__)

# (stage, fraction in [0, 1], message); the stages are STAGES in order.
ProgressFn = Callable[[str, float, str], None]
STAGES = ("load", "pairs", "inference", "matching", "alignment", "export")
# The first entry is the default: a sliding window over the upload order keeps 10 photos near a minute on a CPU
# (20 pairs instead of 45 for ``complete``); photos of one walk-around are usually taken in order.
GRAPHS = ("swin-2", "auto", "complete", "swin-3", "logwin-3", "oneref-0", "retrieval")
# Alignment modes offered in the page; the first is the default. A new mode of ``recon.pipeline`` is one more
# entry here (and in ``_ALIGN_ITERATIONS`` if it has an iteration count the page should set).
ALIGN_MODES = ("sparse", "dense", "mast3r-sfm", "dust3r", "feedforward+sparse")
# Per mode, the fields of its ``recon.align`` config that the page's "alignment iterations" knob sets.
_ALIGN_ITERATIONS = {
    "sparse": ("niter_coarse", "niter_fine"),
    "dense": ("niter",),
    "mast3r-sfm": ("niter1", "niter2"),
    "dust3r": ("niter",),
    "feedforward+sparse": ("niter_coarse", "niter_fine"),
}


class RunError(UserError, RuntimeError):
    """A reconstruction that cannot be done as asked; the message tells the user what to change.

    Attributes:
        stage: the stage that failed (one of ``STAGES``), or None before any stage ran.
    """

    def __init__(self, message: str, stage: str | None = None):
        super().__init__(message)
        self.stage = stage


class RunCancelled(RunError):
    """The user stopped the run (Stop button, tab closed); nothing is kept."""


# Alignment iterations per phase the page starts from (the aligners' own default is 300).
DEFAULT_ITERATIONS = 100


def page_defaults(align: str = ALIGN_MODES[0]) -> ReconstructConfig:
    """The pipeline settings the page starts from, chosen for a CPU server: 10 photos take about a minute
    (measured in ``docs/app.md``): a sliding window over the upload order (``GRAPHS[0]``), 224 px instead of the
    model's native size (512 for MASt3R: 5x the pixels, and 5 min instead of seconds for 4 photos on this CPU),
    ``DEFAULT_ITERATIONS`` per alignment phase. The camera priors start from ``UserPriors()``."""
    return with_iterations(ReconstructConfig(graph=GRAPHS[0], align=align, image_size=224), DEFAULT_ITERATIONS)


def with_iterations(config: ReconstructConfig, niter: int) -> ReconstructConfig:
    """``config`` whose aligner runs ``niter`` iterations per phase (a mode without such a knob: unchanged)."""
    return replace(config, align_config=_align_config(config.align, niter))


def iterations(config: ReconstructConfig) -> int:
    """Alignment iterations per phase of ``config`` (``DEFAULT_ITERATIONS`` when its aligner has no such knob)."""
    fields = _ALIGN_ITERATIONS.get(config.align, ())
    if config.align_config is None or not fields:
        return DEFAULT_ITERATIONS
    return int(getattr(config.align_config, fields[0]))


@dataclass(frozen=True)
class ViewSettings:
    """How the cached result is exported and shown (changing these never re-runs inference).

    Attributes:
        conf_thr: show points whose confidence is above this.
        clean_depth: hide points occluded in other views (floaters).
        as_mesh: pixel-grid meshes instead of points.
        show_cameras: camera frustums in the 3D view.
        tsdf_thresh: > 0 refines the depth maps with the fused TSDF of all views first (``recon.tsdf``, the MASt3R
            demo's ``TSDF_thresh``, in scene units); 0 = off, as in the demo.
    """

    conf_thr: float = 1.5
    clean_depth: bool = True
    as_mesh: bool = False
    show_cameras: bool = True
    tsdf_thresh: float = 0.0


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
    """A finished reconstruction cached in the workspace (``scene`` is re-exported on demand).

    Attributes:
        random_weights: made by a model with random weights: the geometry is meaningless.
    """

    scene: object  # recon.types.Scene (its ``paths``: the photos COLMAP exports copy)
    report: object  # recon.pipeline.RunReport
    exports: ExportSet | None = None
    cleaned: object | None = None  # the scene with floaters demoted, computed once on first use
    random_weights: bool = False

    def cleaned_scene(self):
        from recon.scene import clean_scene

        if self.cleaned is None:
            self.cleaned = clean_scene(self.scene)
        return self.cleaned

    @property
    def unregistered(self) -> list[str]:
        """Names of the views the alignment could not place."""
        return unregistered_names(self.scene)


def unregistered_names(scene) -> list[str]:
    """The views of ``scene`` without a camera: those the aligner lists in ``scene.info["unregistered"]`` and
    those whose ``scene.registered`` is False (either alone may be filled), each once, in order."""
    named = scene.info.get("unregistered") if isinstance(scene.info, dict) else None
    names = [str(n) for n in named or []]
    if scene.registered is not None:
        names += [str(n) for n, r in zip(scene.names, scene.registered, strict=True) if not r]
    return list(dict.fromkeys(names))


def pairs_wording(n_pairs: int) -> str:
    """The one wording of pair counts used everywhere: ``20 pairs (40 decoder passes)``."""
    return f"{n_pairs} pair{'s' if n_pairs != 1 else ''} ({2 * n_pairs} decoder passes)"


# ------------------------------------------------------------------------------------------ plan and estimate
@dataclass
class UnitCosts:
    """Seconds per unit of work of one model at one image size, on this server.

    Attributes:
        encode: one image through the encoder.
        decode: one decoder pass (half a pair).
        match: matching one decoder pass's output (sparse alignment only).
        align: one alignment iteration per pair.
        export: writing one view's points to the four export formats.
        measured: "probe" (one synthetic pair) or "run" (the last real run, which replaces the probe).
    """

    encode: float
    decode: float
    match: float
    align: float
    export: float = 0.6
    measured: str = "probe"


# Alignment seconds per iteration per pair before a run has measured it (224 px, 4 to 10 demo photos, this loaded
# 2-core machine: 1e-3 to 1e-2 by load and mode).
_ALIGN_S_PER_ITER_PAIR = 4e-3


@dataclass(frozen=True)
class Plan:
    """What a run will do, known before it starts.

    Attributes:
        n_images: images to reconstruct.
        graph: the scene graph that will be used (``auto`` resolved).
        n_pairs: unordered pairs (each costs two decoder passes).
        exact: False for retrieval graphs, whose pair count is an upper bound until the images are encoded.
        stage_seconds: estimated seconds per stage (empty without a cost calibration).
    """

    n_images: int
    graph: str
    n_pairs: int
    exact: bool = True
    stage_seconds: dict = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return sum(self.stage_seconds.values())

    def message(self) -> str:
        """One Markdown line: what will run and how long it should take."""
        about = "" if self.exact else "at most "
        text = f"Plan: {self.n_images} images, scene graph `{self.graph}`: {about}{pairs_wording(self.n_pairs)}"
        if self.stage_seconds:
            text += f"; estimated **{duration_text(self.seconds)}** on this server"
        return text + "."


def duration_text(seconds: float) -> str:
    """``~45 s`` or ``~2.5 min``."""
    if seconds < 90:
        return f"~{max(1, round(seconds))} s"
    return f"~{seconds / 60:.1f} min"


def plan_run(n_images: int, config: ReconstructConfig, costs: UnitCosts | None = None) -> Plan:
    """The pairs a run of ``n_images`` with ``config`` will decode, and its estimated time from ``costs``.

    Raises:
        RunError: an unknown scene graph, or fewer than 2 images.
    """
    from recon.pairs import check_graph, choose_graph, parse_graph, plan_pairs

    if n_images < 2:
        raise RunError(f"a reconstruction needs at least 2 images, got {n_images}")
    try:
        spec = check_graph(config.graph)
        graph, exact = spec.name, True
        if spec.kind == "auto":  # the pipeline encodes the images first, so auto may pick retrieval
            graph, _ = choose_graph(n_images, has_tokens=True)
            spec = parse_graph(graph)
        if spec.kind == "retrieval":  # at most: each image with its k - 1 nearest, plus the key images together
            k = spec.k if spec.k is not None else min(n_images - 1, 10)
            na = min(spec.m if spec.m is not None else 20, n_images)
            n_pairs = min(n_images * (n_images - 1) // 2, n_images * max(k - 1, 0) + na * (na - 1) // 2)
            exact = False
        else:
            n_pairs = plan_pairs(graph, n_images).n_pairs  # exact for every graph but retrieval
    except UserError as err:
        raise RunError(f"cannot run with these settings: {err}") from None
    seconds = {}
    if costs is not None:
        passes = 2 * n_pairs
        iters = iterations(config) * len(_ALIGN_ITERATIONS.get(config.align, ("niter",)))
        seconds = {
            "inference": n_images * costs.encode + passes * costs.decode,
            "matching": passes * costs.match if config.align in ("sparse", "feedforward+sparse") else 0.0,
            # mast3r-sfm matches all four maps of each pair itself, inside its alignment stage
            "alignment": iters * n_pairs * costs.align
            + (2 * passes * costs.match if config.align == "mast3r-sfm" else 0.0),
            "export": n_images * costs.export,
        }
    return Plan(n_images, graph, n_pairs, exact, seconds)


def probe_costs(model, image_size: int, subsample: int) -> UnitCosts:
    """Time one synthetic 4:3 pair (2 encoder, 2 decoder passes, their matching) with ``model`` at ``image_size``,
    twice. A real run then replaces these figures with its own (``costs_from_run``)."""
    import torch

    from recon.inference import InferenceConfig, encode_views, run_inference
    from recon.matching import match_pair
    from recon.types import View

    p = model.patch_size
    W = max(p, image_size // p * p)
    H = max(p, (image_size * 3 // 4) // p * p)
    gen = torch.Generator().manual_seed(0)
    views = [View(image=torch.rand(3, H, W, generator=gen), idx=k, name=f"probe{k}") for k in range(2)]
    best = [math.inf] * 3
    for _ in range(2):  # the first round pays one-off allocations: keep the faster of two
        t0 = time.perf_counter()
        feats = encode_views(model, views, progress=False)
        t1 = time.perf_counter()
        preds = run_inference(model, views, [(0, 1)], InferenceConfig(batch_size=2), progress=False, feats=feats)
        t2 = time.perf_counter()
        for pred in preds:
            if pred.desc_i is not None:
                match_pair(pred, subsample=subsample)
        t3 = time.perf_counter()
        best = [min(b, t) for b, t in zip(best, (t1 - t0, t2 - t1, t3 - t2), strict=True)]
    return UnitCosts(best[0] / 2, best[1] / 2, best[2] / 2, _ALIGN_S_PER_ITER_PAIR)


def costs_from_run(report, config: ReconstructConfig) -> UnitCosts:
    """Unit costs measured by a finished run (more faithful than the probe: real images, this load)."""
    passes = max(1, 2 * report.n_pairs)
    iters = iterations(config) * len(_ALIGN_ITERATIONS.get(config.align, ("niter",)))
    sec = report.stage_seconds
    inference = sec.get("inference", 0.0) + sec.get("pairs", 0.0)
    encode = inference * 0.05 / max(1, report.n_images)  # the encoder is a small share of a pair's cost
    return UnitCosts(
        encode=encode,
        decode=max(0.0, inference - encode * report.n_images) / passes,
        match=sec.get("matching", 0.0) / passes,
        align=sec.get("alignment", 0.0) / max(1, iters * report.n_pairs),
        export=sec.get("export", 0.0) / max(1, report.n_images),
        measured="run",
    )


def overall_fraction(plan: Plan, stage: str, frac: float) -> float:
    """Fraction of the whole run done when ``stage`` is ``frac`` done, weighted by the plan's estimates."""
    weights = {s: plan.stage_seconds.get(s, 0.0) + 0.2 for s in STAGES}  # + a floor: stages never weigh 0
    total = sum(weights.values())
    before = sum(weights[s] for s in STAGES[: STAGES.index(stage)]) if stage in STAGES else 0.0
    return min(1.0, (before + frac * weights.get(stage, 0.0)) / total)


def _check_settings(config: ReconstructConfig) -> None:
    """What the page allows beyond ``ReconstructConfig``'s own checks (a server's budget, the offered modes)."""
    if config.align not in ALIGN_MODES:
        raise RunError(f"alignment must be one of {', '.join(repr(m) for m in ALIGN_MODES)}, not {config.align!r}")
    if config.image_size is not None and not 64 <= config.image_size <= 1024:
        raise RunError(f"image size must be between 64 and 1024 pixels, got {config.image_size}")
    if not 1 <= iterations(config) <= 5000:
        raise RunError(f"alignment iterations must be between 1 and 5000, got {iterations(config)}")
    if config.align == "feedforward+sparse" and not config.feedforward_model:
        raise RunError("feedforward+sparse needs the feed-forward model file (a feedforward_final.pth)")


def _align_config(align: str, niter: int):
    """The config of aligner ``align`` with ``niter`` iterations per phase (None: a mode without one)."""
    from recon.align import config as align_config

    fields = _ALIGN_ITERATIONS.get(align)
    from recon.align.dust3r import Dust3rConfig
    from recon.align.mast3r_sfm import Mast3rSfmConfig

    cls = {
        "sparse": align_config.SparseAlignConfig,
        "feedforward+sparse": align_config.SparseAlignConfig,
        "dense": align_config.DenseAlignConfig,
        "mast3r-sfm": Mast3rSfmConfig,
        "dust3r": Dust3rConfig,
    }.get(align)
    if not fields or cls is None:
        return None
    return cls(**{f: int(niter) for f in fields})


def _step_message(stage: str, done: int, total: int, detail: str) -> tuple[str, float, str]:
    """A ``recon.progress`` step as (stage of ``STAGES``, fraction, message), in the page's wording."""
    if stage == "encode":  # the encoder is a small share of the stage: each image is encoded once
        return "inference", 0.05 * done / max(total, 1), f"encoding image {done}/{total}"
    if stage == "inference":
        return stage, 0.05 + 0.95 * done / max(total, 1), f"decoder pass {done}/{total} ({total // 2} pairs)"
    if stage == "matching":
        return stage, done / max(total, 1), f"pair {done}/{total}"  # one merged match set per unordered pair
    return stage, done / max(total, 1), f"{detail + ' ' if detail else ''}iteration {done}/{total}"


def run_reconstruction(
    ws: Workspace,
    model,
    config: ReconstructConfig,
    limits: AppLimits,
    *,
    priors: UserPriors = UserPriors(),
    view: ViewSettings = ViewSettings(),
    device: str = "auto",
    progress: ProgressFn | None = None,
    cancel: threading.Event | None = None,
    random_weights: bool = False,
) -> RunResult:
    """Reconstruct the workspace's inputs with ``model`` and export the result into the workspace.

    Args:
        ws: the session's workspace (inputs ingested by ``app.uploads``).
        model: a loaded ``ReconModel``.
        config: the pipeline settings (``page_defaults()`` and the page's knobs); ``device``, ``batch_size`` and
            ``progress`` are the server's (set here).
        priors: camera knowledge the user gave.
        limits: upload limits (``max_images``, ``video_fps`` and ``max_pixels`` apply here).
        view: the first export's settings.
        device: torch device.
        progress: callback ``(stage, fraction, message)`` over ``STAGES``: at each stage's start (0) and end (1),
            and after every encoder batch, decoder batch, matched pair and alignment iteration in between.
        cancel: when set, the run stops at the next step with ``RunCancelled``.
        random_weights: the model has random weights (recorded in the result; the page says so).

    Returns:
        The result, also stored as ``ws.result``.

    Raises:
        RunError: no or too few usable images, bad settings, or a reconstruction that failed on this input;
            ``err.stage`` names the stage. A run whose alignment placed fewer than 2 views, found no match or
            met non-finite confidences is a failure, not a result.
        RunCancelled: ``cancel`` was set.
    """
    from recon.images import ImageLoadError
    from recon.pipeline import ReconstructionError, load_views, reconstruct, resolve_device
    from recon.progress import step_hook

    current = {"stage": "load"}

    def report(stage: str, frac: float, msg: str) -> None:
        if cancel is not None and cancel.is_set():
            raise RunCancelled("stopped", current["stage"])
        current["stage"] = stage
        if progress is not None:
            progress(stage, frac, msg)

    _check_settings(config)
    if not ws.inputs:
        raise RunError("upload photos (at least 2), a zip of photos or a short video first")
    ws.result = None
    on_cpu = resolve_device(device).type == "cpu"
    # One pair (both orders) per decoder call on a CPU: batching gains little there, and the bar moves per pair.
    config = replace(config, batch_size=2 if on_cpu else 8, device=device, progress=False)
    report("load", 0.0, f"loading {len(ws.inputs)} file(s)")
    video = len(ws.inputs) == 1 and ws.inputs[0].name.startswith("video")
    try:
        views = load_views(
            str(ws.inputs[0]) if video else [str(p) for p in ws.inputs],
            model,
            config,
            max_images=limits.max_images,
            video_fps=limits.video_fps,
            max_pixels=limits.max_pixels,
        )
    except (ImageLoadError, ReconstructionError) as err:
        raise RunError(str(err), "load") from None
    report("load", 1.0, f"{len(views)} images loaded, {len(views.skipped)} skipped")

    def forward(stage: str, frac: float, msg: str) -> None:
        if stage != "load":  # our own loading above already reported it
            report(stage, frac, msg)

    def on_step(stage: str, done: int, total: int, detail: str) -> None:
        stage, frac, msg = _step_message(stage, done, total, detail)
        if stage == "inference" and current["stage"] == "pairs":
            stage = "pairs"  # images encoded for the retrieval / auto graph
        report(stage, min(frac, 0.999), msg)

    try:
        with step_hook(on_step):
            scene, run_report = reconstruct(views, model, config, priors, progress=forward)
    except RunError:
        raise
    except UserError as err:  # the stage that refused the input goes with the message
        raise RunError(str(err), current["stage"]) from None
    run_report.skipped = [(Path(path).name, why) for path, why in run_report.skipped]
    _check_outcome(scene, run_report, config)
    result = RunResult(scene=scene, report=run_report, random_weights=random_weights)
    report("export", 0.0, "writing GLB, PLY, COLMAP and transforms.json")
    t1 = time.perf_counter()
    ws.result = result
    try:
        export_result(ws, view)
    except RunError as err:
        ws.result = None
        raise RunError(str(err), "export") from None
    run_report.stage_seconds["export"] = time.perf_counter() - t1
    report("export", 1.0, "export done")
    return result


def _check_outcome(scene, r, config: ReconstructConfig) -> None:
    """Refuse a reconstruction that has nothing meaningful to show (raises RunError naming the stage).

    In the order the stages run: no match at all (sparse), fewer than 2 views placed, then non-finite (NaN)
    confidences on the views that were placed."""
    if config.align in ("sparse", "feedforward+sparse") and r.n_matches == 0:
        raise RunError(
            "no match was found between any pair (lower the minimum match confidence, or try dense alignment)",
            "matching",
        )
    if r.registered < 2:
        missing = unregistered_names(scene)
        raise RunError(
            f"the alignment placed {r.registered} of {r.n_images} views; at least 2 are needed for a scene "
            f"(not placed: {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}). Try more overlapping "
            "photos, another scene graph or the other alignment mode",
            "alignment",
        )
    if not math.isfinite(r.mean_conf):
        raise RunError(
            "the network's confidences are not finite (NaN) or all zero: the model produced no usable prediction",
            "inference",
        )


def export_result(ws: Workspace, view: ViewSettings) -> ExportSet:
    """(Re-)export the cached result with ``view`` settings into a fresh folder of the workspace.

    Raises:
        RunError: no result is cached (run first), or nothing is left to export at these settings.
    """
    from backbone.fileio import move_into_place
    from recon.export import ColmapOptions, GlbOptions, NerfstudioOptions, PlyOptions, export
    from recon.scene import valid_masks

    result = ws.result
    if not isinstance(result, RunResult):
        raise RunError("no reconstruction in this session yet: run one first")
    if not (math.isfinite(view.conf_thr) and view.conf_thr >= 0):
        raise RunError(f"the confidence threshold must be >= 0, got {view.conf_thr}")
    if not (math.isfinite(view.tsdf_thresh) and view.tsdf_thresh >= 0):
        raise RunError(f"the TSDF threshold must be >= 0, got {view.tsdf_thresh}")
    out = ws.new_output_dir()
    points = dict(conf_thr=view.conf_thr, clean_depth=False)
    try:
        # Cleaning does not depend on the threshold: do it once per result, not per export and slider move.
        scene = result.cleaned_scene() if view.clean_depth else result.scene
        if view.tsdf_thresh > 0:  # once for the four exports below
            from recon.tsdf import tsdf_refine

            scene = tsdf_refine(scene, view.tsdf_thresh, seed=0)
        glb = export(scene, out / "scene.glb", GlbOptions(mesh=view.as_mesh, cameras=view.show_cameras, **points))
        ply = export(scene, out / "scene.ply", PlyOptions(mesh=view.as_mesh, **points))
        colmap = export(scene, out / "colmap", ColmapOptions(**points))
        ns = export(scene, out / "nerfstudio", NerfstudioOptions(photos=False, point_cloud=False, **points))
    except ValueError as err:  # e.g. no registered camera
        raise RunError(f"cannot export this result: {err}") from None
    colmap_zip = Path(shutil.make_archive(str(out / "colmap"), "zip", root_dir=colmap))
    shutil.rmtree(colmap)
    transforms = out / "transforms.json"
    move_into_place(ns / "transforms.json", transforms, fsync=False)  # already on disk: a rename
    shutil.rmtree(ns)
    n_points = int(sum(int(m.sum()) for m in valid_masks(scene, view.conf_thr)))
    result.exports = ExportSet(glb, ply, colmap_zip, transforms, view, n_points)
    return result.exports


TABLE_HEADERS = ["#", "image", "registered", "focal (px)", "mean confidence", "size (px)"]


def image_table(result: RunResult | None) -> list[list]:
    """One row per view: index, name, registered, focal (original pixels), mean confidence, original size.

    Focal and confidence are left empty for views the alignment could not register; with random weights a
    placed view reads "random", not "yes"."""
    if result is None:
        return []
    scene = result.scene
    K = scene.K_orig
    missing = set(result.unregistered)
    rows = []
    for k, name in enumerate(scene.names):
        conf = scene.conf[k]
        valid = conf > 0
        H, W = scene.orig_sizes[k] if scene.orig_sizes else conf.shape
        placed = name not in missing
        if placed:
            focal = f"{np.sqrt(K[k, 0, 0] * K[k, 1, 1]):.1f}"
            mean_conf = f"{conf[valid].mean():.3f}" if valid.any() else ""
        else:  # an unregistered view has no meaningful camera or depth
            focal = mean_conf = ""
        shown = ("random" if result.random_weights else "yes") if placed else "no"
        rows.append([k, name, shown, focal, mean_conf, f"{W}x{H}"])
    return rows


# Marks of the stage list: a stage is "done" only when it did what it is for.
DONE, WARN, FAILED = "done", "warn", "failed"


def stage_counts(result: RunResult) -> dict[str, tuple[str, str]]:
    """Per stage, ``(mark, text)``: its outcome (``DONE``, ``WARN``, ``FAILED``) and what it did (counts, time)."""
    r = result.report
    ex = result.exports
    rnd = result.random_weights
    missing = result.unregistered
    if rnd:
        align = (WARN, f"{r.registered}/{r.n_images} views placed from random weights: meaningless")
    elif missing:
        align = (WARN, f"{r.registered}/{r.n_images} cameras registered; not registered: {', '.join(missing)}")
    else:
        align = (DONE, f"{r.registered}/{r.n_images} cameras registered")
    lines = {
        "load": (DONE, f"{r.n_images} images used, {len(r.skipped)} skipped"),
        "pairs": (DONE, f"scene graph {r.graph}: {pairs_wording(r.n_pairs)}"),
        "inference": (
            WARN if rnd else DONE,
            f"{r.n_encoder_images} encoder passes, {2 * r.n_pairs} decoder passes"
            + (", random weights" if rnd else ""),
        ),
        "matching": (DONE, f"{r.n_matches:,} matches" if r.n_matches else "not needed (dense alignment)"),
        "alignment": align,
        "export": (DONE, f"{ex.n_points:,} points above confidence {ex.settings.conf_thr:g}")
        if ex and ex.n_points
        else (WARN, f"no point above confidence {ex.settings.conf_thr:g}: lower the confidence slider to see some")
        if ex
        else (FAILED, "not exported"),
    }
    return {
        s: (mark, f"{text} ({r.stage_seconds[s]:.1f} s)" if s in r.stage_seconds else text)
        for s, (mark, text) in lines.items()
    }


def summary_markdown(result: RunResult) -> str:
    """Verdict, counts and total time of a finished run, as Markdown; never "Done" over random weights."""
    r = result.report
    missing = result.unregistered
    if result.random_weights:
        head = (
            f"**Finished with random weights**: {r.registered}/{r.n_images} views placed, the geometry is "
            "meaningless; this only checks the install."
        )
    elif missing:
        head = (
            f"**Done, partly.** {r.registered}/{r.n_images} cameras registered; **not registered**: "
            + ", ".join(f"`{n}`" for n in missing)
            + "."
        )
    else:
        head = f"**Done.** {r.registered}/{r.n_images} cameras registered."
    lines = [head, f"Scene graph `{r.graph}`: {pairs_wording(r.n_pairs)}, {r.n_matches:,} matches."]
    total = sum(r.stage_seconds.get(s, 0.0) for s in STAGES)
    lines.append(f"Total time {total:.1f} s.")
    if r.skipped:
        lines.append(f"Skipped {len(r.skipped)}: " + "; ".join(f"`{n}` ({why})" for n, why in r.skipped[:10]))
    return "\n\n".join(lines)
