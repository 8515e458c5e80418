"""``recon bench align``: every aligner of ``recon.align`` side by side, timed and scored against ground truth.

Cases are either ga_parity folders (``conformance/ga_parity/<case>``: the exact tensors the official aligners
saw, ground truth and the official run time) or synthetic scenes (``--synthetic``: ``tools.synth`` orbits with
``tools.oracle`` predictions: per-pair scale, 1 % depth noise, 2 % focal noise, plus Fourier-feature descriptors
of the true world points with a little noise, so the real matcher runs on them).

Per method and case it prints wall and CPU seconds (process CPU time: all threads, the figure that means
something on a shared machine), the peak RSS during the run, the optimiser iterations and the error against
ground truth. recon's ``sparse`` is timed with its matching (``match_pair`` on both predictions of every pair,
as ``ga_parity/check.py`` does), reported in its own column. The parity modes (``mast3r-sfm``, ``dust3r``) run
whenever ``recon.align.align`` accepts them. ``--load N`` keeps N busy processes running during the runs,
``--profile`` prints the ten functions with the most own time. Figures are printed, never asserted.

Error metrics (gauge-free, over registered views; the same definitions as ``ga_parity/check.py``):
``rot`` / ``tdir`` = max over view pairs of the relative-rotation / relative-translation-direction error (deg),
``RRA5`` = % of view pairs with relative rotation error < 5 deg, ``focal`` = max |f / f_gt - 1| (%), ``depth`` =
max over views of the median relative depth error after one global scale (%).
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
import typing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recon.geometry import transform, unproject

logger = logging.getLogger(__name__)

KNOWN_METHODS = ("sparse", "dense", "mast3r-sfm", "dust3r")
SYNTH_VIEWS = (4, 8, 16)
SYNTH_SIZES = ("256x192",)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "align",
        help="time, CPU, peak memory and accuracy of every global aligner on parity fixtures or synthetic scenes",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description=__doc__.split("\n\n")[0],
    )
    p.add_argument("cases", nargs="*", type=Path, help="ga_parity case folders (conformance/ga_parity/<case>)")
    p.add_argument("--synthetic", action="store_true", help="also run synthetic orbit scenes")
    p.add_argument("--views", type=int, nargs="+", default=list(SYNTH_VIEWS), help="synthetic view counts")
    p.add_argument("--sizes", nargs="+", default=list(SYNTH_SIZES), help="synthetic image sizes WxH")
    p.add_argument("--methods", nargs="+", help=f"subset of {', '.join(KNOWN_METHODS)} (default: all available)")
    p.add_argument("--profile", action="store_true", help="print the 10 hottest functions of each run (cProfile)")
    p.add_argument("--load", type=int, default=0, help="busy processes to run alongside (a loaded machine)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own choice)")
    p.add_argument("--json", type=Path, help="write every row to this file")
    p.add_argument("--seed", type=int, default=0, help="seeds the synthetic cases")
    p.set_defaults(func=run)


# ----------------------------------------------------------------------------------------------------------------
# cases


@dataclass
class Case:
    """One alignment problem with its ground truth."""

    name: str
    views: list
    preds: list
    gt_T: np.ndarray  # [N,4,4] camera-to-world
    gt_f: np.ndarray  # [N]
    gt_depth: list | None  # N x [H,W]
    notes: dict = field(default_factory=dict)


def parity_case(case_dir: Path) -> Case:
    """A ga_parity case read as ``ga_parity/check.py`` reads it (every ordered pair of the complete graph)."""
    import torch
    from PIL import Image
    from safetensors.numpy import load_file

    from recon.types import PairPrediction, View

    case = json.loads((case_dir / "case.json").read_text())
    gt = json.loads((case_dir / "gt.json").read_text())
    inputs = load_file(str(case_dir / "inputs.safetensors"))
    n = case["n_views"]
    views = []
    for k in range(n):
        rgb = np.asarray(Image.open(case_dir / "images" / f"view_{k:03d}.png").convert("RGB"))
        img = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float() / 255.0
        views.append(View(image=img, idx=k, name=f"view_{k:03d}"))

    def t(key):
        return torch.from_numpy(inputs[key].astype(np.float32))

    keys = ("pts3d_i", "pts3d_j", "conf_i", "conf_j", "desc_i", "desc_j", "desc_conf_i", "desc_conf_j")
    preds = [
        PairPrediction(i=i, j=j, **{k: t(f"pair_{i}_{j}.{k}") for k in keys})
        for i in range(n)
        for j in range(n)
        if i != j
    ]
    depth = None
    if (case_dir / "gt_depth.safetensors").is_file():
        d = load_file(str(case_dir / "gt_depth.safetensors"))
        depth = [d["depth"][k] for k in range(n)] if "depth" in d else [d[f"depth.{k}"] for k in range(n)]
    # The official aligners' wall time on the machine that made the case (2 threads), for comparison.
    notes = {}
    sparse = case.get("official_sparse", {})
    for cfg in ("function_defaults", "demo_defaults"):
        if isinstance(sparse.get(cfg), dict) and "seconds" in sparse[cfg]:
            notes[f"official_sparse_{cfg}_s"] = sparse[cfg]["seconds"]
    if "seconds" in case.get("official_dense", {}):
        notes["official_dense_s"] = case["official_dense"]["seconds"]
    return Case(
        name=case.get("name", case_dir.name),
        views=views,
        preds=preds,
        gt_T=np.array([v["T_world_cam"] for v in gt["views"]], np.float64),
        gt_f=np.array([v["K"][0][0] for v in gt["views"]], np.float64),
        gt_depth=depth,
        notes=notes,
    )


def synthetic_case(n: int, size: tuple[int, int], seed: int = 0) -> Case:
    """An orbit of ``n`` views at ``size (W, H)`` with oracle predictions and noisy descriptors.

    Graph: complete up to 16 views, ``logwin-4`` beyond (every view with its neighbours at +-1, 2, 4, 8).
    Descriptors are per view (one tensor shared by all its pairs, so 64 views fit in memory): random Fourier
    features of the true world point plus 2 % noise, unit-normalised, stored as float16 like the network's.
    """
    import torch

    from recon.pairs import make_pairs
    from tools.oracle import oracle_predictions
    from tools.synth import render_scene

    gt = render_scene("orbit", n_views=n, size=tuple(size), seed=seed)
    unordered = make_pairs(n, "complete" if n <= 16 else "logwin-4")
    ordered = [p for i, j in unordered for p in ((i, j), (j, i))]
    views, preds, _ = oracle_predictions(gt, ordered, focal_noise=0.02, seed=seed)
    rng = np.random.default_rng(seed)
    freqs = torch.tensor(np.geomspace(0.5, 40.0, 12)[:, None] * rng.standard_normal((12, 3)), dtype=torch.float32)
    desc, desc_conf = [], []
    for v in gt:
        z = np.asarray(v.depth, np.float64)
        Xw = torch.from_numpy(transform(v.T_world_cam, unproject(z, v.K))).float()
        phase = Xw @ freqs.T
        d = torch.cat([phase.sin(), phase.cos()], -1)
        d = d + 0.02 * torch.from_numpy(rng.standard_normal(d.shape)).float()
        desc.append(torch.nn.functional.normalize(d, dim=-1).half())
        desc_conf.append(torch.from_numpy(np.where(z > 0, rng.uniform(2.0, 10.0, z.shape), 0.05)).half())
    for p in preds:
        p.desc_i, p.desc_j, p.desc_conf_i, p.desc_conf_j = desc[p.i], desc[p.j], desc_conf[p.i], desc_conf[p.j]
    return Case(
        name=f"orbit{n}@{size[0]}x{size[1]}",
        views=views,
        preds=preds,
        gt_T=np.stack([v.T_world_cam for v in gt]),
        gt_f=np.array([v.K[0, 0] for v in gt]),
        gt_depth=[np.asarray(v.depth) for v in gt],
        notes={"pairs": len(unordered)},
    )


# ----------------------------------------------------------------------------------------------------------------
# metrics (the definitions of ga_parity/check.py)


def _angle_deg(R: np.ndarray) -> np.ndarray:
    """Rotation angles (deg) of ``R [..., 3, 3]``."""
    c = (np.trace(R, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(c, -1.0, 1.0)))


def pose_errors(T: np.ndarray, T_gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relative-rotation and relative-translation-direction errors (deg) over all view pairs ``k < m``."""
    k, m = np.triu_indices(len(T), 1)
    rel = np.linalg.inv(T[k]) @ T[m]
    rel_gt = np.linalg.inv(T_gt[k]) @ T_gt[m]
    rot = _angle_deg(np.swapaxes(rel[:, :3, :3], 1, 2) @ rel_gt[:, :3, :3])
    ta, tb = rel[:, :3, 3], rel_gt[:, :3, 3]
    cos = (ta * tb).sum(1) / np.maximum(np.linalg.norm(ta, axis=1) * np.linalg.norm(tb, axis=1), 1e-300)
    return rot, np.degrees(np.arccos(np.clip(cos, -1, 1)))


def depth_error(depth: list, depth_gt: list) -> float:
    """Max over views of the median relative depth error after one global scale (fraction)."""
    pairs = [(np.asarray(a, np.float64), np.asarray(b, np.float64)) for a, b in zip(depth, depth_gt, strict=True)]
    masks = [np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0) for a, b in pairs]
    ratios = np.concatenate([b[m] / a[m] for (a, b), m in zip(pairs, masks, strict=True)])
    if ratios.size == 0:
        return float("inf")
    s = float(np.median(ratios))
    return max(
        float(np.median(np.abs(s * a[m] - b[m]) / b[m])) for (a, b), m in zip(pairs, masks, strict=True) if m.any()
    )


def scene_errors(scene, case: Case) -> dict:
    """Errors of a ``Scene`` against the case's ground truth, over its registered views."""
    reg = np.asarray(scene.registered, bool) if scene.registered is not None else np.ones(len(case.gt_T), bool)
    idx = np.flatnonzero(reg)
    out: dict = {"registered": f"{len(idx)}/{len(reg)}"}
    if len(idx) < 2:
        return out
    rot, tdir = pose_errors(np.asarray(scene.T_world_cam, np.float64)[idx], case.gt_T[idx])
    f = np.asarray(scene.K, np.float64)[idx, 0, 0]
    out.update(
        rot_deg=float(rot.max()),
        tdir_deg=float(tdir.max()),
        rra5=float(100 * np.mean(rot < 5)),
        focal_pct=float(100 * np.max(np.abs(f / case.gt_f[idx] - 1))),
    )
    if case.gt_depth is not None:
        out["depth_pct"] = 100 * depth_error([scene.depth[k] for k in idx], [case.gt_depth[k] for k in idx])
    return out


# ----------------------------------------------------------------------------------------------------------------
# running


def available_methods() -> list[str]:
    """The global aligners ``recon.align.align`` accepts, read from its ``method`` annotation (a ``Literal``).

    Only the methods that align pair predictions are benchmarked (``KNOWN_METHODS``); ``"feedforward"`` takes
    one prediction of all views from a different model instead.
    """
    from recon.align import align

    hint = typing.get_type_hints(align).get("method")
    names = [a for a in typing.get_args(hint) if a in KNOWN_METHODS]
    return names or ["sparse", "dense"]


def _iterations(info: dict) -> int | None:
    """Optimiser iterations run, from the ``iters_*`` entries of ``scene.info`` (or any int ``*iter*`` entry)."""
    vals = [v for k, v in info.items() if "iter" in k and isinstance(v, (int, np.integer)) and not isinstance(v, bool)]
    return int(sum(vals)) if vals else None


class BusyLoad:
    """``n`` child processes spinning on the CPU while the block runs (stopped, by their handles, on exit)."""

    def __init__(self, n: int):
        self.n = n
        self.procs: list[subprocess.Popen] = []

    def __enter__(self):
        for _ in range(self.n):
            self.procs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.wait(timeout=10)


def run_method(case: Case, method: str, profile: bool = False) -> dict:
    """Align ``case`` with ``method``; returns a row of timings, memory, iterations and errors."""
    import cProfile
    import io
    import pstats

    import torch

    from recon.align import align
    from tools.bench.model import _PeakMemory

    row: dict = {"case": case.name, "method": method, "views": len(case.views)}
    prof = cProfile.Profile() if profile else None
    with _PeakMemory(torch.device("cpu")) as mem:
        w0, c0 = time.perf_counter(), time.process_time()
        if prof:
            prof.enable()
        try:
            matches = None
            if method == "sparse":
                from recon.matching import match_pair

                by_key = {p.key: p for p in case.preds}
                keys = sorted({(min(i, j), max(i, j)) for i, j in by_key})
                matches = [match_pair(by_key[(i, j)], subsample=8, reverse=by_key.get((j, i))) for i, j in keys]
                row["match_cpu_s"] = time.process_time() - c0
                row["matches"] = int(sum(len(m) for m in matches))
            scene = align(case.views, case.preds, matches, method=method)
        except (ValueError, TypeError, NotImplementedError) as err:
            row["error"] = f"{type(err).__name__}: {err}".splitlines()[0][:160]
            return row
        finally:
            if prof:
                prof.disable()
        row["wall_s"] = time.perf_counter() - w0
        row["cpu_s"] = time.process_time() - c0
    row["peak_rss_mb"] = mem.peak / 2**20
    row["iters"] = _iterations(scene.info)
    stopped = [k[len("early_stop_") :] for k, v in scene.info.items() if k.startswith("early_stop_") and v]
    row["stopped"] = ",".join(stopped) or "no"
    row.update(scene_errors(scene, case))
    if prof:
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(10)
        row["profile"] = buf.getvalue()
    return row


def _cell(v, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def print_table(rows: list[dict]) -> None:
    cols = [
        ("case", "case", "s"),
        ("method", "method", "s"),
        ("wall_s", "wall s", ".2f"),
        ("cpu_s", "CPU s", ".2f"),
        ("match_cpu_s", "match CPU s", ".2f"),
        ("matches", "matches", "d"),
        ("peak_rss_mb", "peak MB", ".0f"),
        ("iters", "iters", "d"),
        ("stopped", "early stop", "s"),
        ("registered", "reg", "s"),
        ("rot_deg", "rot deg", ".3f"),
        ("tdir_deg", "tdir deg", ".3f"),
        ("rra5", "RRA5 %", ".0f"),
        ("focal_pct", "focal %", ".2f"),
        ("depth_pct", "depth %", ".2f"),
    ]
    print("| " + " | ".join(h for _, h, _ in cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        if "error" in r:
            print(f"| {r['case']} | {r['method']} | unavailable: {r['error']} |")
            continue
        print("| " + " | ".join(_cell(r.get(k), f) for k, _, f in cols) + " |")


def run(args) -> int:
    import os

    import torch

    from recon.errors import UserError

    if not args.cases and not args.synthetic:
        raise UserError("give ga_parity case folders and/or --synthetic")
    for c in args.cases:
        if not (c / "case.json").is_file():
            raise UserError(f"{c}: not a ga_parity case folder (no case.json)")
    if not 0 <= args.load <= 64:
        raise UserError(f"--load must be between 0 and 64, got {args.load}")
    sizes = []
    for s in args.sizes:
        try:
            w, h = (int(x) for x in s.lower().split("x"))
        except ValueError:
            raise UserError(f"--sizes takes WxH, e.g. 256x192; got {s!r}") from None
        if not (16 <= w <= 2048 and 16 <= h <= 2048):
            raise UserError(f"--sizes {s}: each side must be in [16, 2048]")
        sizes.append((w, h))
    if any(not 2 <= n <= 256 for n in args.views):
        raise UserError("--views must be between 2 and 256")
    methods = available_methods()
    if args.methods:
        unknown = [m for m in args.methods if m not in methods]
        if unknown:
            raise UserError(f"method(s) {', '.join(unknown)} not available; recon.align has {', '.join(methods)}")
        methods = list(args.methods)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    print(
        f"recon bench align: methods {', '.join(methods)}; torch {torch.__version__}, {torch.get_num_threads()} "
        f"threads, {os.cpu_count()} CPUs; load average before {load[0]:.2f}; busy processes {args.load}"
    )

    def cases():
        for c in args.cases:
            yield parity_case(c)
        if args.synthetic:
            for w, h in sizes:
                for n in args.views:
                    yield synthetic_case(n, (w, h), args.seed)

    rows = []
    with BusyLoad(args.load):
        for case in cases():
            if case.notes:
                print(f"{case.name}: {json.dumps(case.notes)}")
            for m in methods:
                row = run_method(case, m, args.profile)
                row.update({"load": args.load, "threads": torch.get_num_threads(), **case.notes})
                rows.append(row)
                if args.profile and "profile" in row:
                    print(f"--- {case.name} [{m}] hottest functions (own time)\n{row['profile']}")
                print_table([row]) if len(rows) == 1 else print_table_row(row)
    try:
        load = os.getloadavg()
    except OSError:
        pass
    print(f"load average after {load[0]:.2f}")
    if args.json:
        from backbone.fileio import write_text_atomic

        write_text_atomic(args.json, json.dumps(rows, indent=1, default=float))
        print(f"wrote {args.json}")
    return 0


def print_table_row(row: dict) -> None:
    """One more row of the table ``print_table`` started (rows stream as they finish)."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        print_table([row])
    print(buf.getvalue().splitlines()[-1])
