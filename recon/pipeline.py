"""``reconstruct()``: the one function the CLI, the app and the evaluators call.

Every front-end makes the same three calls::

    model = prepare_model(name_or_path, config)          # loaded on config.device, eval mode
    views = load_views(photos, model, config)            # decoded; bad images skipped, with the reason
    scene, report = reconstruct(views, model, config, priors)

``reconstruct`` only composes the steps, each a plain function over the dataclasses of ``recon.types``::

    views -> pairs -> inference (encode once) -> matching -> alignment -> Scene

and records what happened (images used / skipped and why, pairs, time and peak memory per stage) in a
``RunReport``. Exporting is left to the caller (``recon.export.export``) so a result can be re-exported with
other thresholds without re-running anything.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from recon.errors import UserError
from recon.settings import ReconstructConfig, UserPriors
from recon.types import Matches, Priors, Scene, View

logger = logging.getLogger(__name__)

# A callback receiving (stage name, fraction done in [0, 1], message); the app uses it for its progress bar.
ProgressFn = Callable[[str, float, str], None]


class ReconstructionError(UserError, RuntimeError):
    """The input cannot be reconstructed (e.g. fewer than two usable images); the message says why."""


@dataclass
class RunReport:
    """What a reconstruction did, for the end-of-run summary."""

    n_images: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    graph: str = ""
    graph_reason: str = ""
    n_pairs: int = 0
    n_encoder_images: int = 0
    n_matches: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)
    stage_peak_mb: dict[str, float] = field(default_factory=dict)
    mean_conf: float = float("nan")
    registered: int = 0

    def summary(self) -> str:
        lines = [f"images used: {self.n_images}, skipped: {len(self.skipped)}"]
        lines += [f"  skipped {name}: {why}" for name, why in self.skipped]
        if self.graph_reason:
            lines.append(f"scene graph auto -> {self.graph}: {self.graph_reason}")
        lines.append(
            f"scene graph: {self.graph} -> {self.n_pairs} pairs ({2 * self.n_pairs} decoder passes), "
            f"{self.n_encoder_images} encoder passes, {self.n_matches} matches"
        )
        lines.append(f"registered cameras: {self.registered}/{self.n_images}, mean confidence {self.mean_conf:.2f}")
        total = sum(self.stage_seconds.values())
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in self.stage_seconds.items())
        lines.append(f"time: {total:.1f}s ({stages})")
        peak = max(self.stage_peak_mb.values(), default=0.0)
        lines.append(f"peak memory: {peak:.0f} MB" + (" (CUDA)" if torch.cuda.is_available() else " (RSS)"))
        return "\n".join(lines)


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else the CPU; ``cpu``, ``cuda``, ``cuda:K`` only when present."""
    from recon.plan import check_device

    check_device(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ReconstructionError(f"device {device} was asked for but torch sees no CUDA device; use cpu or auto")
        index = torch.device(device).index or 0
        if index >= torch.cuda.device_count():
            raise ReconstructionError(
                f"device {device} does not exist: torch sees {torch.cuda.device_count()} CUDA device(s)"
            )
    return torch.device(device)


def _peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


@contextmanager
def _stage(report: RunReport, name: str, device: torch.device, progress: ProgressFn | None):
    if progress:
        progress(name, 0.0, f"{name}...")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    yield
    report.stage_seconds[name] = time.perf_counter() - t0
    report.stage_peak_mb[name] = _peak_mb(device)
    logger.info("%s done in %.2fs", name, report.stage_seconds[name])
    if progress:
        progress(name, 1.0, f"{name} done")


# A camera file larger than this is not a camera file (one record is ~300 bytes: 64 MiB ~ 200k images).
MAX_CAMERA_FILE_BYTES = 64 << 20


def read_camera_file(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """Read per-image cameras from JSON, keyed by image file name (with or without extension).

    Accepted layouts: ``{"frames": [{"file_path"|"name": ..., ...}, ...]}``, a list of such records, or a mapping
    ``{name: record}``. A record may hold ``"K"`` (3x3) or ``"fx", "fy", "cx", "cy"`` (or ``"focal"``) in original
    pixels, and ``"T_world_cam"`` (4x4 camera-to-world, OpenCV). ``cameras.json`` written by ``recon synth``
    and by ``tools.synth.write_folder`` is in this format.

    Every value is checked: finite numbers, positive focal lengths, ``K``'s last row ``[0, 0, 1]``, poses with a
    rotation (orthonormal, determinant +1: no reflection, no scale) and last row ``[0, 0, 0, 1]``.

    Raises:
        ReconstructionError: unreadable, too large, not JSON (or NaN / Infinity in it, or nested too deeply),
            or a record that breaks one of the rules above; the message names the file and the record.
    """
    path = Path(path)
    try:
        if path.stat().st_size > MAX_CAMERA_FILE_BYTES:
            raise ReconstructionError(f"camera file {path} is larger than {MAX_CAMERA_FILE_BYTES >> 20} MiB")
        data = json.loads(path.read_text(), parse_constant=_refuse_constant)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        reason = "nested too deeply" if isinstance(err, RecursionError) else str(err).splitlines()[0]
        raise ReconstructionError(f"cannot read camera file {path}: {reason}") from None
    if isinstance(data, dict) and isinstance(data.get("frames"), list):
        records = data["frames"]
    elif isinstance(data, dict) and isinstance(data.get("views"), list):
        records = data["views"]
    elif isinstance(data, list):
        records = data
    elif isinstance(data, dict):
        records = [{"name": k, **v} for k, v in data.items() if isinstance(v, dict)]
    else:
        raise ReconstructionError(f"{path}: expected a JSON list or mapping of per-image cameras")
    out: dict[str, dict[str, np.ndarray]] = {}
    for rec in records:
        if not isinstance(rec, dict):
            raise ReconstructionError(f"{path}: every camera record must be a JSON object, got {_short(rec)}")
        name = rec.get("name") or rec.get("file_path") or rec.get("image")
        if not name or not isinstance(name, str):
            raise ReconstructionError(f"{path}: a camera record has no 'name' / 'file_path' string: {_short(rec)}")
        try:
            cam = _camera_record(rec)
        except ValueError as err:
            raise ReconstructionError(f"{path}, camera {name!r}: {err}") from None
        out[Path(name).name] = cam
        out[Path(name).stem] = cam
    return out


def _refuse_constant(token: str):
    raise ValueError(f"{token} is not a valid camera value")


def _short(value, limit: int = 60) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _number(rec: dict, key: str) -> float:
    value = rec[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise ValueError(f"{key!r} must be a finite number, got {_short(value)}")
    return float(value)


def _matrix(rec: dict, key: str, n: int) -> np.ndarray:
    """``rec[key]`` as a finite ``[n, n]`` float64 matrix (given nested or flat)."""
    try:
        M = np.asarray(rec[key], dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{key!r} must be a {n}x{n} matrix of numbers, got {_short(rec[key])}") from None
    if M.size != n * n or M.ndim not in (1, 2):
        raise ValueError(f"{key!r} must be {n}x{n}, got shape {list(M.shape)}")
    M = M.reshape(n, n)
    if not np.isfinite(M).all():
        raise ValueError(f"{key!r} holds NaN or infinite values")
    return M


def _camera_record(rec: dict) -> dict[str, np.ndarray]:
    """One record's ``K`` / ``focal`` / ``T_world_cam``, checked (see ``read_camera_file``)."""
    cam: dict[str, np.ndarray] = {}
    if "K" in rec:
        K = _matrix(rec, "K", 3)
        if not np.allclose(K[2], [0, 0, 1]) or K[1, 0] != 0:
            raise ValueError(f"'K' must be [[fx, s, cx], [0, fy, cy], [0, 0, 1]], got {K.tolist()}")
        if K[0, 0] <= 0 or K[1, 1] <= 0:
            raise ValueError(f"focal lengths must be > 0, got fx={K[0, 0]:g}, fy={K[1, 1]:g}")
        cam["K"] = K
    elif "fx" in rec or "focal" in rec:
        fx = _number(rec, "fx" if "fx" in rec else "focal")
        fy = _number(rec, "fy") if "fy" in rec else fx
        if fx <= 0 or fy <= 0:
            raise ValueError(f"focal lengths must be > 0, got fx={fx:g}, fy={fy:g}")
        if "cx" in rec and "cy" in rec:
            cam["K"] = np.array([[fx, 0, _number(rec, "cx")], [0, fy, _number(rec, "cy")], [0, 0, 1]])
        else:
            cam["focal"] = np.array([fx, fy])
    if "T_world_cam" in rec:
        T = _matrix(rec, "T_world_cam", 4)
        R = T[:3, :3]
        if not np.allclose(T[3], [0, 0, 0, 1]):
            raise ValueError(f"'T_world_cam' must end with the row [0, 0, 0, 1], got {T[3].tolist()}")
        if not np.allclose(R.T @ R, np.eye(3), atol=1e-3) or np.linalg.det(R) <= 0:
            raise ValueError(
                "'T_world_cam' must be rigid: its 3x3 block a rotation (orthonormal, determinant +1; no scale, "
                f"no reflection), got determinant {np.linalg.det(R):.3g}"
            )
        cam["T_world_cam"] = T
    return cam


def build_priors(views: Sequence[View], user: UserPriors) -> Priors:
    """Convert user priors (original pixels, by file name) into network-pixel ``Priors`` by view index."""
    n = len(views)
    K: list[np.ndarray | None] = [None] * n
    focal: list[float | None] = [None] * n
    focal_init: list[float | None] = [None] * n
    poses: dict[int, np.ndarray] = {}
    files = {}
    if user.intrinsics_file:
        files["intrinsics"] = read_camera_file(user.intrinsics_file)
    if user.poses_file:
        files["poses"] = read_camera_file(user.poses_file)
    for k, v in enumerate(views):
        orig_to_net = np.linalg.inv(v.net_to_orig)
        # a focal length in original pixels scales by the resize factor (the crop does not change it)
        scale = float(orig_to_net[0, 0])
        rec = files.get("intrinsics", {}).get(v.name) or files.get("intrinsics", {}).get(Path(v.name).stem)
        if rec is not None and "K" in rec:
            K[k] = orig_to_net @ rec["K"]
        elif rec is not None and "focal" in rec:
            focal[k] = float(np.mean(rec["focal"])) * scale
        elif user.focal is not None:
            focal[k] = user.focal * scale
        elif user.use_exif and v.focal_exif:
            (focal if user.fix_focal else focal_init)[k] = v.focal_exif * scale
        if "poses" in files:
            prec = files["poses"].get(v.name) or files["poses"].get(Path(v.name).stem)
            if prec is not None and "T_world_cam" in prec:
                poses[k] = prec["T_world_cam"]
    if "intrinsics" in files and all(x is None for x in K) and all(f is None for f in focal):
        raise ReconstructionError(
            f"{user.intrinsics_file}: no entry matches any image name "
            f"(images: {', '.join(v.name for v in views[:5])}...)"
        )
    if "poses" in files and not poses:
        raise ReconstructionError(f"{user.poses_file}: no 'T_world_cam' entry matches any image name")
    return Priors(
        K=K if any(x is not None for x in K) else None,
        focal=focal if any(f is not None for f in focal) else None,
        focal_init=focal_init if any(f is not None for f in focal_init) else None,
        shared_intrinsics=user.shared_intrinsics,
        T_world_cam=poses,
    )


def _model_id(model) -> str:
    return f"{type(model).__name__}-{sum(p.numel() for p in model.parameters())}-{id(model)}"


class Views(list):
    """Views ready for the network (a ``list`` of ``View``), with what ``load_views`` skipped and its time.

    Attributes:
        skipped: ``Skipped(path, reason)`` of every input that produced no view.
        seconds: time spent decoding, counted in the ``load`` stage of the ``RunReport``.
    """

    def __init__(self, views: Sequence[View] = (), skipped: Sequence = (), seconds: float = 0.0):
        super().__init__(views)
        self.skipped = list(skipped)
        self.seconds = seconds


def prepare_model(model=None, config: ReconstructConfig = ReconstructConfig(), *, backbone: str | None = None):
    """The model ``reconstruct`` runs, loaded on ``config.device`` and in eval mode.

    Args:
        model: a loaded model (returned as it is, in eval mode), a weights name or a checkpoint path;
            ``None`` = ``recon.weights.default_model()`` (the first release cached, else recon-tiny). With
            ``config.align == "feedforward"``: a ``FeedForwardModel`` or a ``feedforward_final.pth`` file (required).
        config: ``device`` and ``align`` are read.
        backbone: encoder to pair with a DUNE-MASt3R decoder checkpoint (name or path).

    Raises:
        ReconstructionError: feed-forward alignment without a model, unknown device.
        CheckpointError / WeightsError: the weights cannot be read or fetched.
    """
    device = resolve_device(config.device)
    if config.align == "feedforward":
        from recon.feedforward.checkpoint import load_feedforward
        from recon.feedforward.model import FeedForwardModel

        if model is None:
            raise ReconstructionError("--align feedforward needs --checkpoint FILE (a feedforward_final.pth)")
        if not isinstance(model, FeedForwardModel):
            model = load_feedforward(model, device)
    elif model is None or isinstance(model, (str, os.PathLike)):
        from recon.model.loading import load_model
        from recon.weights import default_model

        model = load_model(str(model or default_model()), backbone=backbone, device=device)
    return model.eval()


def load_views(
    images: str | os.PathLike | Sequence[str | os.PathLike],
    model,
    config: ReconstructConfig = ReconstructConfig(),
    *,
    max_images: int | None = None,
    video_fps: float = 1.0,
    max_pixels: int | None = None,
    skip_duplicates: bool = True,
) -> Views:
    """Decode photos into views sized for ``model``: the first step of every front-end, before ``reconstruct``.

    Unreadable, empty, too small, oversized and duplicate inputs are skipped, each with its reason, in
    ``Views.skipped`` (``reconstruct`` reports them).

    Args:
        images: a folder (natural-sorted, not recursive), a list of files and/or folders, or one video.
        model: the loaded model (``prepare_model``): its input size (unless ``config.image_size``) and patch size.
        config: ``image_size`` and ``align`` are read.
        max_images: use at most this many images (the rest are reported as skipped).
        video_fps: frames per second sampled from a video.
        max_pixels: skip files with more pixels (decompression-bomb guard); ``None`` = ``recon.images``' default.
        skip_duplicates: skip files whose bytes equal an earlier file's (an evaluation that pairs a frame with
            itself keeps them).

    Raises:
        ReconstructionError: fewer than two usable images (the message lists what was skipped and why).
        ImageLoadError: a video was given but PyAV is missing.
    """
    from recon.images import DEFAULT_MAX_PIXELS, load_images

    t0 = time.perf_counter()
    if config.align == "feedforward":
        size, square_ok = config.image_size or model.encoder.spec.image_size, True
    else:
        size, square_ok = config.image_size or model.image_size, model.patch_size != 16
    views, skipped = load_images(
        images,
        size=size,
        patch_size=model.patch_size,
        square_ok=square_ok,
        max_images=max_images,
        video_fps=video_fps,
        max_pixels=DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels,
        skip_duplicates=skip_duplicates,
    )
    if len(views) < 2:
        why = "; ".join(f"{path}: {reason}" for path, reason in skipped) or "none were given"
        raise ReconstructionError(f"need at least 2 usable images, got {len(views)} ({why})")
    return Views(views, skipped, time.perf_counter() - t0)


def reconstruct(
    views: Sequence[View],
    model,
    config: ReconstructConfig = ReconstructConfig(),
    priors: UserPriors = UserPriors(),
    *,
    progress: ProgressFn | None = None,
) -> tuple[Scene, RunReport]:
    """Reconstruct a scene from views (``load_views``).

    Args:
        views: the views; a ``Views`` also brings the inputs its loading skipped and its time into the report.
        model: a loaded model (``prepare_model``).
        config: pipeline settings.
        priors: known intrinsics / poses (original pixels).
        progress: optional callback ``(stage, fraction, message)``.

    Returns:
        The ``Scene`` (``Scene.paths`` from the views) and a ``RunReport``.

    Raises:
        ReconstructionError: fewer than two views, unreadable prior files, unknown device.
    """
    from recon.inference import InferenceConfig, encode_views, run_inference
    from recon.pairs import check_graph, choose_graph, make_pairs, parse_graph, plan_pairs

    check_graph(config.graph)  # a typo fails now, not after the model and the images are loaded
    device = resolve_device(config.device)
    if config.align == "feedforward":  # one pass of a feed-forward model replaces pairs, matching and alignment
        from recon.feedforward.run import reconstruct_feedforward

        scene, report = reconstruct_feedforward(list(views), model, config, device, progress, priors)
        _loading_into(report, views)
        return scene, report
    if model is None or isinstance(model, (str, os.PathLike)):
        raise TypeError("reconstruct() takes a loaded model: load it with recon.pipeline.prepare_model first")
    start_model = None
    if config.align == "feedforward+sparse":  # a missing or wrong feed-forward file fails before any work
        from recon.feedforward.run import load_start_model

        start_model = load_start_model(config.feedforward_model, device)
    report = RunReport()
    with _stage(report, "load", device, progress):
        model.eval()
        if len(views) < 2:
            raise ReconstructionError(f"need at least 2 usable images, got {len(views)}")
        report.n_images = len(views)
        user_priors = build_priors(views, priors)
        start = None
        if start_model is not None:
            from recon.feedforward.run import start_prediction

            start = start_prediction(views, start_model)
    _loading_into(report, views)

    with _stage(report, "pairs", device, progress):
        feats = None
        graph = config.graph
        if graph.startswith(("retrieval", "auto")):
            feats = encode_views(model, views, progress=config.progress)
            report.n_encoder_images += len(views)
        if parse_graph(graph).kind == "auto":
            # complete (the official default) while it fits the memory budget; otherwise say what and why
            hw = float(np.mean([v.true_shape[0] * v.true_shape[1] for v in views]))
            per_pair = int(4 * hw * ((3 + 24) * (2 if config.precision == "float16" else 4) + 2 * 4))
            graph, report.graph_reason = choose_graph(len(views), has_tokens=True, bytes_per_pair=per_pair)
            (logger.info if graph == "complete" else logger.warning)(
                "scene graph auto -> %s: %s", graph, report.graph_reason
            )
        plan = plan_pairs(graph, len(views))  # counted, not enumerated: refuse before any decoder pass
        if config.max_decodes is not None and plan.n_decodes > config.max_decodes:
            raise ReconstructionError(
                f"graph {plan.graph} over {len(views)} images plans {plan.n_decodes} decoder passes (more than "
                f"{config.max_decodes}); choose a sparser graph (e.g. swin-3, logwin-3, retrieval-20-10)"
            )
        sim = None
        if config.retrieval_model is not None and parse_graph(graph).kind == "retrieval":
            from recon.asmk import retrieval_similarity

            sim = retrieval_similarity(feats, config.retrieval_model)
        pairs = make_pairs(len(views), graph, tokens=feats, seed=config.seed, sim=sim)
        report.graph, report.n_pairs = graph, len(pairs)

    with _stage(report, "inference", device, progress):
        from recon.plan import prediction_ram_bytes, rss_bytes

        if config.precision not in ("float16", "float32"):
            raise ReconstructionError(f"precision must be 'float16' or 'float32', got {config.precision!r}")
        run_size = (len(views), len(pairs), max(v.true_shape[0] * v.true_shape[1] for v in views), config.batch_size)
        inf_cfg = InferenceConfig(
            batch_size=config.batch_size,
            cache_dir=config.cache_dir,
            # the whole run within --max-ram-gb: the predictions get what the process and the stages leave
            max_ram_bytes=prediction_ram_bytes(int(config.max_ram_gb * 2**30), rss_bytes(), *run_size),
            storage_dtype=getattr(torch, config.precision),
            spill_dir=Path(tempfile.gettempdir()),  # used only without cache_dir, removed below on every exit
        )
        if feats is None:
            feats = encode_views(model, views, progress=config.progress)
            report.n_encoder_images += len(views)
        preds = run_inference(
            model, views, pairs, inf_cfg, model_id=_model_id(model), progress=config.progress, feats=feats
        )
        del feats
    with preds:  # removes the temporary spill folder, whatever happens next
        scene = _match_and_align(views, preds, user_priors, config, report, device, progress, start)

    report.registered = int(np.sum(scene.registered)) if scene.registered is not None else len(scene)
    confs = [c[c > 0].mean() for c in scene.conf if (c > 0).any()]
    report.mean_conf = float(np.mean(confs)) if confs else float("nan")
    return scene, report


def _loading_into(report: RunReport, views: Sequence[View]) -> None:
    """Put what ``load_views`` skipped, and its time, into the report's ``load`` stage."""
    if isinstance(views, Views):
        report.skipped = [(str(path), str(reason)) for path, reason in views.skipped]
        report.stage_seconds["load"] = report.stage_seconds.get("load", 0.0) + views.seconds


def _match_and_align(views, preds, user_priors, config, report, device, progress, start=None) -> Scene:
    """The matching and alignment stages of ``reconstruct``."""
    from recon.align import AlignmentError, align
    from recon.correspondences import match_unordered_pairs

    matches: list[Matches] = []
    with _stage(report, "matching", device, progress):
        if config.align in ("sparse", "feedforward+sparse"):
            if preds and preds[0].desc_i is None:
                raise ReconstructionError(
                    "sparse alignment needs descriptors; this model has none (DUSt3R heads): use --align dense"
                )
            # one unique set per unordered pair, merged from both decoding orders (official extract_correspondences)
            matches = match_unordered_pairs(preds, subsample=config.subsample, conf_thr=config.match_conf_thr)
            report.n_matches = sum(len(m) for m in matches)
        elif config.align == "mast3r-sfm" and any(p.desc_i is None for p in preds):
            raise ReconstructionError("--align mast3r-sfm needs descriptors; this model has none: use --align dense")

    with _stage(report, "alignment", device, progress):
        try:
            scene = align(
                views,
                preds,
                matches if config.align in ("sparse", "feedforward+sparse") else None,
                user_priors,
                method=config.align,
                config=config.align_config,
                seed=config.seed,
                two_view=config.two_view,
                start=start,
            )
        except AlignmentError as err:
            raise ReconstructionError(str(err)) from None
        if config.align == "mast3r-sfm":
            report.n_matches = sum(scene.info.get("n_matches", {}).values())
    return scene
