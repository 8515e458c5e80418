"""``recon bench pipeline``: CPU seconds, wall seconds and peak memory per stage of whole reconstructions.

The images come from ``tools.synth`` (an orbit of N views), so the figures are reproducible anywhere. With
``--oracle`` the network is replaced by ``tools.oracle.OracleModel`` (ground-truth point maps at a per-pair
scale, Fourier-feature descriptors of the true world points): the network is out of the loop and the figures
measure pairing, storage, the real matcher, the alignment and the export, with errors against ground truth.
Without ``--model`` / ``--checkpoint`` / ``--oracle`` the network is a *tiny* random MASt3R (the conformance
fixture's sizes). Per run it prints, per stage (pairs, inference, matching, alignment, export), CPU seconds (all
threads: the figure that means something on a shared machine) and peak RSS; the optimiser's iterations; and the
errors of ``recon bench align`` (rot / tdir deg, focal %, depth %). Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "pipeline",
        help="time, CPU, peak memory per stage and accuracy of a reconstruction of synthetic scenes",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument(
        "--views", "--n-images", dest="views", type=int, nargs="+", default=[8], help="view counts (one run each)"
    )
    p.add_argument("--sizes", nargs="+", default=["512x384"], help="image sizes WxH (multiples of 16)")
    p.add_argument(
        "--graph",
        default="swin-2",
        help="scene graph; the default (each view with its 2 neighbours on either side of the orbit: 2 pairs per view, "
        "complete at 4 views) keeps 64 views at minutes of CPU",
    )
    p.add_argument(
        "--subsample",
        type=int,
        help="matcher seed-grid step; default 8 per 256 pixels of width (the same ~768 seeds per view at any size)",
    )
    p.add_argument(
        "--align", default="sparse", choices=("sparse", "dense", "mast3r-sfm", "dust3r"), help="global alignment"
    )
    m = p.add_mutually_exclusive_group()
    m.add_argument("--model", help="weights name; default: a tiny random MASt3R")
    m.add_argument("--checkpoint", help="checkpoint path")
    m.add_argument(
        "--oracle",
        action="store_true",
        help="ground-truth predictions instead of a network (tools.oracle): the network is out of the loop",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:K")
    p.add_argument("--batch-size", type=int, default=8, help="pairs per decoder call")
    p.add_argument("--max-ram-gb", type=float, default=4.0, help="RAM budget of the pair predictions (then spill)")
    p.add_argument("--cache-dir", help="spill pair predictions here")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--load", type=int, default=0, help="busy processes to run alongside (a loaded machine)")
    p.add_argument(
        "--fresh",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run each reconstruction in a fresh process, so no run's peak RSS includes what an earlier one left",
    )
    p.add_argument("--profile", action="store_true", help="print the 12 functions with the most own time per run")
    p.add_argument("--json", type=Path, help="write every row to this file")
    p.add_argument("--seed", type=int, default=0, help="seeds the synthetic scene and the optimisers")
    p.set_defaults(func=run)


def tiny_model(small_heads: bool = False):
    """The ``mast3r_tiny`` preset (the official tiny conformance fixture's sizes) with random weights.

    Args:
        small_heads: also shrink the DPT head (whose official widths, 256 features, dominate the cost of a tiny
            model at full image size); used by tests that only need the plumbing.
    """
    from recon.model.heads import HeadConfig
    from recon.model.presets import build_model

    head = HeadConfig(dpt_feature_dim=32, dpt_layer_dims=(16, 32, 64, 128)) if small_heads else None
    return build_model("mast3r_tiny", head=head)


def synth_views(n: int, size: tuple[int, int], seed: int = 0):
    """``n`` orbit views: ``(views, ground truth)`` with ``recon.types.View`` s ready for the network (sizes must be
    multiples of the patch size) and the ``tools.synth.SynthView`` s they come from."""
    import torch

    from recon.types import View
    from tools.synth import render_scene

    gt = render_scene("orbit", n_views=n, size=tuple(size), seed=seed)
    views = []
    for k, sv in enumerate(gt):
        image = torch.from_numpy(sv.rgb).permute(2, 0, 1).float() / 255
        views.append(View(image=image, idx=k, name=f"{sv.name}.png", orig_size=(sv.rgb.shape[0], sv.rgb.shape[1])))
    return views, gt


STAGES = ("pairs", "inference", "matching", "alignment", "export")


class StageMeter:
    """A ``reconstruct`` progress callback that records CPU seconds, wall seconds and peak RSS of every stage.

    The peak is the process's VmHWM, reset when a stage starts (Linux; elsewhere the process peak so far).
    """

    def __init__(self):
        self.cpu: dict[str, float] = {}
        self.wall: dict[str, float] = {}
        self.peak_mb: dict[str, float] = {}
        self._start: dict[str, tuple[float, float]] = {}

    def __call__(self, stage: str, fraction: float, message: str = "") -> None:
        import time

        if fraction == 0.0:
            _reset_peak_rss()
            self._start[stage] = (time.process_time(), time.perf_counter())
        elif fraction == 1.0 and stage in self._start:
            c0, w0 = self._start.pop(stage)
            self.cpu[stage] = time.process_time() - c0
            self.wall[stage] = time.perf_counter() - w0
            self.peak_mb[stage] = _peak_rss_mb()


def _reset_peak_rss() -> None:
    try:  # Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) of this process
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def _peak_rss_mb() -> float:
    from tools.bench.model import _vm_hwm

    return _vm_hwm() / 2**20


def _parse_size(text: str) -> tuple[int, int]:
    from recon.errors import UserError

    try:
        w, h = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise UserError(f"--sizes takes WxH, e.g. 256x192; got {text!r}") from None
    if not (32 <= w <= 2048 and 32 <= h <= 2048) or w % 16 or h % 16:
        raise UserError(f"--sizes {text}: each side must be a multiple of 16 in [32, 2048]")
    return w, h


def run_one(n: int, size: tuple[int, int], args, model, label: str) -> dict:
    """One reconstruction of an ``n``-view orbit at ``size``: per-stage CPU / wall / peak RSS, iterations, errors."""
    import cProfile
    import io
    import pstats
    import tempfile
    import time

    from recon.export import export
    from recon.pipeline import ReconstructConfig, reconstruct
    from tools.bench.align import _iterations, scene_errors

    c_render = time.process_time()
    views, gt = synth_views(n, size, args.seed)
    render_cpu_s = time.process_time() - c_render
    if args.oracle:
        from tools.oracle import OracleModel

        model = OracleModel(gt, seed=args.seed)
    subsample = args.subsample or 8 * max(1, size[0] // 256)
    config = ReconstructConfig(
        graph=args.graph,
        align=args.align,
        subsample=subsample,
        device=args.device,
        batch_size=args.batch_size,
        cache_dir=args.cache_dir,
        max_ram_gb=args.max_ram_gb,
        seed=args.seed,
        progress=False,
    )
    meter = StageMeter()
    prof = cProfile.Profile() if args.profile else None
    c0 = time.process_time()
    if prof:
        prof.enable()
    try:
        scene, report = reconstruct(views, model, config=config, progress=meter)
        with tempfile.TemporaryDirectory() as tmp:
            meter("export", 0.0)
            export(scene, Path(tmp) / "scene.ply")
            meter("export", 1.0)
    finally:
        if prof:
            prof.disable()
    row: dict = {
        "views": n,
        "size": f"{size[0]}x{size[1]}",
        "model": label,
        "align": args.align,
        "graph": report.graph,
        "pairs": report.n_pairs,
        "subsample": subsample,
        "matches": report.n_matches,
        "cpu_s": time.process_time() - c0,
        "render_cpu_s": render_cpu_s,
        "iters": _iterations(scene.info),
        "max_ram_gb": args.max_ram_gb,
    }
    for s in STAGES:
        row[f"{s}_cpu_s"] = meter.cpu.get(s)
        row[f"{s}_wall_s"] = meter.wall.get(s)
        row[f"{s}_peak_mb"] = meter.peak_mb.get(s)
    row["peak_mb"] = max(meter.peak_mb.values(), default=0.0)
    row["within_ram"] = row["peak_mb"] <= args.max_ram_gb * 1024
    truth = SimpleNamespace(
        gt_T=np.stack([v.T_world_cam for v in gt]),
        gt_f=np.array([v.K[0, 0] for v in gt]),
        gt_depth=[np.asarray(v.depth) for v in gt],
    )
    row.update(scene_errors(scene, truth))
    if prof:
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(12)
        row["profile"] = buf.getvalue()
    return row


def _child_run(n: int, size: tuple[int, int], args, label: str) -> dict:
    import torch

    from recon.pipeline import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    model = None
    if not args.oracle:
        import recon

        device = resolve_device(args.device)
        spec = args.checkpoint or args.model
        model = recon.load_model(spec, device=device) if spec else tiny_model().to(device)
    return run_one(n, size, args, model, label)


def run_fresh(n: int, size: tuple[int, int], args, label: str) -> dict:
    """``run_one`` in a new interpreter (multiprocessing ``spawn``): its peaks are its own, from a clean start."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    child_args = argparse.Namespace(**{k: v for k, v in vars(args).items() if k != "func"})
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(_child_run, n, size, child_args, label).result()


def _fmt(v, f: str) -> str:
    return "-" if v is None else format(v, f)


def print_row(row: dict, header: bool) -> None:
    """One markdown row per run (the header before the first)."""
    cols = [("views", "N", "d"), ("size", "size", "s"), ("graph", "graph", "s"), ("pairs", "pairs", "d")]
    cols += [("matches", "matches", "d")]
    cols += [(f"{s}_cpu_s", f"{s} CPU s", ".2f") for s in STAGES]
    cols += [("cpu_s", "total CPU s", ".1f"), ("peak_mb", "peak MB", ".0f"), ("iters", "iters", "d")]
    cols += [("registered", "reg", "s"), ("rot_deg", "rot deg", ".2f"), ("tdir_deg", "tdir deg", ".2f")]
    cols += [("focal_pct", "focal %", ".2f"), ("depth_pct", "depth %", ".2f")]
    if header:
        print("| " + " | ".join(h for _, h, _ in cols) + " |")
        print("|" + "---|" * len(cols))
    print("| " + " | ".join(_fmt(row.get(k), f) for k, _, f in cols) + " |", flush=True)


def run(args) -> int:
    import json
    import os

    import torch

    import recon
    from recon.errors import UserError
    from recon.pipeline import resolve_device
    from tools.bench.align import BusyLoad

    sizes = [_parse_size(s) for s in args.sizes]
    if any(not 2 <= n <= 256 for n in args.views):
        raise UserError("--views must be between 2 and 256")
    if not 0 <= args.load <= 64:
        raise UserError(f"--load must be between 0 and 64, got {args.load}")
    if args.max_ram_gb <= 0:
        raise UserError(f"--max-ram-gb must be > 0, got {args.max_ram_gb}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model = None
    if args.oracle:
        label = "oracle (ground-truth predictions, no network)"
    elif args.model or args.checkpoint:
        model = recon.load_model(args.checkpoint or args.model, device=device)
        label = args.checkpoint or args.model
    else:
        model = tiny_model().to(device)
        label = "tiny random MASt3R"
    load = os.getloadavg()
    print(
        f"recon bench pipeline: model {label}; align {args.align}; graph {args.graph}; subsample "
        f"{args.subsample or '8 per 256 px of width'}; max RAM {args.max_ram_gb} GB; device {device}; torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs; load average "
        f"{load[0]:.2f}; busy processes {args.load}",
        flush=True,
    )
    rows = []
    with BusyLoad(args.load):
        for size in sizes:
            for n in args.views:
                row = run_fresh(n, size, args, label) if args.fresh else run_one(n, size, args, model, label)
                row["load_before"] = load[0]
                load = os.getloadavg()
                row["load_after"] = load[0]
                rows.append(row)
                print_row(row, header=len(rows) == 1)
                if not row["within_ram"]:
                    logger.warning("%s views at %s: peak %.0f MB over --max-ram-gb", n, row["size"], row["peak_mb"])
                if "profile" in row:
                    print(f"--- {n} views {row['size']}: hottest functions (own time)\n{row['profile']}")
    print(f"load average after {os.getloadavg()[0]:.2f}")
    if args.json:
        from backbone.fileio import write_text_atomic

        write_text_atomic(args.json, json.dumps(rows, indent=1, default=float))
        print(f"wrote {args.json}")
    return 0
