#!/usr/bin/env python
"""(Copy of shared/conformance/ga_parity/check.py, our own checker, kept beside the tests that reuse its metrics.)

Parity of recon's global alignment with the OFFICIAL MASt3R-SfM sparse GA and DUSt3R dense GA.

    python check.py CASE_DIR [CASE_DIR ...] [--method mast3r-sfm|dust3r|sparse|dense|all]
                              [--official-config function_defaults|demo_defaults] [--gt]

Each CASE_DIR is a folder of this directory (layout in README.md beside this file). For every case the checker builds
``recon.types.View`` / ``recon.types.PairPrediction`` (every ordered pair of the complete symmetrized graph, exactly
the tensors the official aligners saw), calls ``recon.align.align`` and compares the scene with the official
outputs up to the similarity gauge:

- ``rot_deg``: max over view pairs of the relative-rotation angle error (gauge free);
- ``tdir_deg``: max over view pairs of the angle between relative-translation directions (gauge free);
- ``centre_rel``: max camera-centre error after the best similarity (rotation from the camera rotations, then
  scale + translation by least squares on the centres), divided by the reference's camera extent (max distance
  between two reference camera centres);
- ``focal_pct``: max |f / f_ref - 1| in percent;
- ``depth_rel``: max over views of median |s d - d_ref| / d_ref with ONE global scale s = median(d_ref / d).

A case passes when every metric is within ``case.json["tolerances"][<reference>]``. Parity modes:
``--method mast3r-sfm`` -> ``align(views, preds, matches=None, method="mast3r-sfm")`` against ``official_sparse``
(config ``--official-config``, default ``function_defaults``; ``demo_defaults`` adds ``matching_conf_thr=0.0``);
``--method dust3r`` -> ``align(views, preds,
method="dust3r")`` against ``official_dense``. Diagnostic modes (today's recon): ``--method sparse`` (recon's
``match_pair`` on both predictions of each unordered pair, then ``method="sparse"``) and ``--method dense``; they are
compared with the official sparse / dense outputs. ``--gt`` also prints each side's error against gt.json.
Last line: ``ga_parity: K/N cases pass``; exit 0 only when all pass.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np

METRICS = ("rot_deg", "tdir_deg", "centre_rel", "focal_pct", "depth_rel")


# ----------------------------------------------------------------------------------------------------------------
# metrics


def _angle_deg(R: np.ndarray) -> float:
    c = (np.trace(R) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def _project_so3(M: np.ndarray) -> np.ndarray:
    U, _, Vt = np.linalg.svd(M)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


def similarity_gauge(T_a: np.ndarray, T_b: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(s, R, t) with b ~= s R a + t for camera centres and R_b ~= R R_a for camera rotations (cam-to-world)."""
    Ra, Rb = T_a[:, :3, :3], T_b[:, :3, :3]
    R = _project_so3(sum(rb @ ra.T for ra, rb in zip(Ra, Rb, strict=True)))  # chordal mean of R_b R_a^T
    ca, cb = T_a[:, :3, 3] @ R.T, T_b[:, :3, 3]
    ma, mb = ca.mean(0), cb.mean(0)
    den = float(((ca - ma) ** 2).sum())
    s = float(((ca - ma) * (cb - mb)).sum() / den) if den > 0 else 1.0
    t = mb - s * ma
    return s, R, t


def pose_distance(T_a: np.ndarray, T_b: np.ndarray) -> dict:
    """Gauge-free distances of camera set a from reference b (both [N,4,4] camera-to-world)."""
    T_a, T_b = np.asarray(T_a, np.float64), np.asarray(T_b, np.float64)
    n = len(T_b)
    rot, tdir = [], []
    for k in range(n):
        for m in range(n):
            if k >= m:
                continue
            rel_a = np.linalg.inv(T_a[k]) @ T_a[m]
            rel_b = np.linalg.inv(T_b[k]) @ T_b[m]
            rot.append(_angle_deg(rel_a[:3, :3].T @ rel_b[:3, :3]))
            ta, tb = rel_a[:3, 3], rel_b[:3, 3]
            na, nb = np.linalg.norm(ta), np.linalg.norm(tb)
            tdir.append(float(np.degrees(np.arccos(np.clip(ta @ tb / max(na * nb, 1e-300), -1, 1)))))
    s, R, t = similarity_gauge(T_a, T_b)
    cb = T_b[:, :3, 3]
    ca = s * T_a[:, :3, 3] @ R.T + t
    extent = max(float(np.linalg.norm(cb[:, None] - cb[None], axis=-1).max()), 1e-12)
    cerr = np.linalg.norm(ca - cb, axis=1) / extent
    abs_rot = [_angle_deg(Rb.T @ R @ Ra) for Ra, Rb in zip(T_a[:, :3, :3], T_b[:, :3, :3], strict=True)]
    return {
        "rot_deg": float(max(rot)),
        "tdir_deg": float(max(tdir)),
        "centre_rel": float(cerr.max()),
        "rot_deg_median": float(np.median(rot)),
        "tdir_deg_median": float(np.median(tdir)),
        "centre_rel_median": float(np.median(cerr)),
        "abs_rot_deg_max": float(max(abs_rot)),
        "gauge_scale": s,
    }


def focal_distance(f_a, f_b) -> dict:
    r = np.abs(np.asarray(f_a, np.float64).reshape(-1) / np.asarray(f_b, np.float64).reshape(-1) - 1.0) * 100
    return {"focal_pct": float(r.max()), "focal_pct_median": float(np.median(r))}


def depth_distance(d_a: list, d_b: list) -> dict:
    """Per-view median relative depth error after one global scale (median of d_b / d_a over all valid pixels)."""
    va, vb, masks = [], [], []
    for a, b in zip(d_a, d_b, strict=True):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        if a.shape != b.shape:
            return {"depth_rel": float("inf"), "depth_note": f"shape {a.shape} vs {b.shape}"}
        m = np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0)
        masks.append(m)
        va.append(a)
        vb.append(b)
    ratios = np.concatenate([(b[m] / a[m]) for a, b, m in zip(va, vb, masks, strict=True)])
    if ratios.size == 0:
        return {"depth_rel": float("inf"), "depth_note": "no valid pixel"}
    s = float(np.median(ratios))
    per_view = [
        float(np.median(np.abs(s * a[m] - b[m]) / b[m])) if m.any() else float("inf")
        for a, b, m in zip(va, vb, masks, strict=True)
    ]
    return {"depth_rel": float(max(per_view)), "depth_rel_per_view": per_view, "depth_scale": s}


def distance(T_a, f_a, d_a, T_b, f_b, d_b) -> dict:
    out = {}
    out.update(pose_distance(T_a, T_b))
    out.update(focal_distance(f_a, f_b))
    if d_a is not None and d_b is not None:
        out.update(depth_distance(d_a, d_b))
    return out


def within(dist: dict, tol: dict) -> tuple[bool, list[str]]:
    bad = [k for k in METRICS if k in tol and not (dist.get(k, float("inf")) <= tol[k])]
    return not bad, bad


def fmt(dist: dict, tol: dict | None = None) -> str:
    parts = []
    for k in METRICS:
        if k not in dist:
            continue
        v = dist[k]
        s = f"{k} {v:.3g}" if k != "centre_rel" else f"{k} {v:.2e}"
        if tol and k in tol:
            s += f"/{tol[k]:.3g}"
        parts.append(s)
    return ", ".join(parts)


# ----------------------------------------------------------------------------------------------------------------
# case loading


def load_case(case_dir: Path) -> dict:
    from safetensors.numpy import load_file

    case = json.loads((case_dir / "case.json").read_text())
    gt = json.loads((case_dir / "gt.json").read_text())
    inputs = load_file(str(case_dir / "inputs.safetensors"))
    return {"case": case, "gt": gt, "inputs": inputs, "dir": case_dir}


def per_view(tensors: dict, prefix: str, n: int) -> list[np.ndarray]:
    """``prefix`` stacked [N,H,W] when all views share a shape, else ``prefix.{k}`` per view."""
    if prefix in tensors:
        return [tensors[prefix][k] for k in range(n)]
    return [tensors[f"{prefix}.{k}"] for k in range(n)]


def official(case_dir: Path, which: str, config: str | None = None) -> dict:
    """which = 'sparse' (config function_defaults / demo_defaults) or 'dense'."""
    from safetensors.numpy import load_file

    n = json.loads((case_dir / "case.json").read_text())["n_views"]
    if which == "sparse":
        t = load_file(str(case_dir / "official_sparse.safetensors"))
        p = f"{config}."
        sub = {k[len(p) :]: v for k, v in t.items() if k.startswith(p)}
    else:
        sub = load_file(str(case_dir / "official_dense.safetensors"))
    return {
        "T": sub["T_world_cam"],
        "f": sub["focals"],
        "pp": sub["principal_points"],
        "depth": per_view(sub, "depth", n),
        "conf": per_view(sub, "conf", n),
    }


def ground_truth(c: dict) -> dict:
    from safetensors.numpy import load_file

    views = c["gt"]["views"]
    T = np.array([v["T_world_cam"] for v in views], np.float64)
    f = np.array([v["K"][0][0] for v in views], np.float64)
    p = c["dir"] / "gt_depth.safetensors"
    d = per_view(load_file(str(p)), "depth", len(views)) if p.is_file() else None
    return {"T": T, "f": f, "depth": d}


def build_recon_inputs(c: dict):
    import torch
    from PIL import Image

    from recon.types import PairPrediction, View

    case, inputs = c["case"], c["inputs"]
    n = case["n_views"]
    views = []
    for k in range(n):
        rgb = np.asarray(Image.open(c["dir"] / "images" / f"view_{k:03d}.png").convert("RGB"))
        img = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float() / 255.0
        views.append(View(image=img, idx=k, name=f"view_{k:03d}"))

    def T(key):
        return torch.from_numpy(inputs[key].astype(np.float32))

    preds = []
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            p = f"pair_{i}_{j}."
            preds.append(
                PairPrediction(
                    i=i,
                    j=j,
                    pts3d_i=T(p + "pts3d_i"),
                    pts3d_j=T(p + "pts3d_j"),
                    conf_i=T(p + "conf_i"),
                    conf_j=T(p + "conf_j"),
                    desc_i=T(p + "desc_i"),
                    desc_j=T(p + "desc_j"),
                    desc_conf_i=T(p + "desc_conf_i"),
                    desc_conf_j=T(p + "desc_conf_j"),
                )
            )
    return views, preds


def run_recon(c: dict, method: str, official_config: str):
    """Returns (scene, seconds). Raises on any recon error (reported as FAIL by the caller)."""
    import recon.align as ra

    views, preds = build_recon_inputs(c)
    t0 = time.perf_counter()
    if method == "mast3r-sfm":
        # the demo differs from the function defaults only in matching_conf_thr (0 instead of 5); the official
        # knobs are passed by their official names
        kw = {"matching_conf_thr": 0.0} if official_config == "demo_defaults" else {}
        scene = ra.align(views, preds, matches=None, method="mast3r-sfm", **kw)
    elif method == "dust3r":
        scene = ra.align(views, preds, matches=None, method="dust3r")
    elif method == "sparse":
        from recon.matching import match_pair

        by_key = {p.key: p for p in preds}
        matches = [
            match_pair(by_key[(i, j)], subsample=8, reverse=by_key[(j, i)])
            for i in range(len(views))
            for j in range(i + 1, len(views))
        ]
        scene = ra.align(views, preds, matches, method="sparse")
    elif method == "dense":
        scene = ra.align(views, preds, method="dense")
    else:
        raise ValueError(method)
    return scene, time.perf_counter() - t0


REFERENCE = {"mast3r-sfm": "sparse", "sparse": "sparse", "dust3r": "dense", "dense": "dense"}


def mask_diff(conf_a: list, conf_b: list, thr: float) -> float:
    """Fraction of all pixels where ``conf_a > thr`` and ``conf_b > thr`` disagree (NaN counts as below)."""
    bad = tot = 0
    for a, b in zip(conf_a, conf_b, strict=True):
        a, b = (
            np.nan_to_num(np.asarray(a, np.float64), nan=-np.inf),
            np.nan_to_num(np.asarray(b, np.float64), nan=-np.inf),
        )
        if a.shape != b.shape:
            return 1.0
        bad += int(((a > thr) != (b > thr)).sum())
        tot += a.size
    return bad / max(tot, 1)


CONF_THR: float | None = None
MASK_TOL = 0.01


def check_case(case_dir: Path, method: str, official_config: str, show_gt: bool) -> tuple[bool, str, dict]:
    c = load_case(case_dir)
    name = c["case"]["name"]
    ref_kind = REFERENCE[method]
    cfg = official_config if ref_kind == "sparse" else None
    ref = official(case_dir, ref_kind, cfg)
    tol_key = f"sparse_{official_config}" if ref_kind == "sparse" else "dense"
    tol = c["case"]["tolerances"][tol_key]
    label = f"{name} [{method} vs official {tol_key}]"
    try:
        scene, dt = run_recon(c, method, official_config)
    except Exception as e:  # the mode may not exist yet, or crash
        msg = f"{type(e).__name__}: {e}".splitlines()[0][:200]
        if isinstance(e, (ValueError, TypeError, NotImplementedError, AttributeError)) and method in (
            "mast3r-sfm",
            "dust3r",
        ):
            msg = f"recon.align has no usable method={method!r} ({msg})"
        return False, f"FAIL {label}: {msg}", {"error": msg, "traceback": traceback.format_exc()}
    d = distance(scene.T_world_cam, scene.K[:, 0, 0], list(scene.depth), ref["T"], ref["f"], ref["depth"])
    ok, bad = within(d, tol)
    if CONF_THR is not None:
        md = mask_diff(list(scene.conf), ref["conf"], CONF_THR)
        d["mask_diff"] = md
        if not md <= MASK_TOL:
            ok, bad = False, [*bad, f"mask_diff {md:.4f} > {MASK_TOL} at conf {CONF_THR}"]
    line = (
        f"{'PASS' if ok else 'FAIL'} {label}: {fmt({k: v for k, v in d.items() if k != 'mask_diff'}, tol)}"
        + (f", mask_diff {d['mask_diff']:.4f}" if "mask_diff" in d else "")
        + f" ({dt:.1f}s)"
    )
    if bad:
        line += f"  out of tolerance: {', '.join(bad)}"
    info = {"distance_to_official": d, "seconds": dt}
    if show_gt:
        gt = ground_truth(c)
        d_rec = distance(scene.T_world_cam, scene.K[:, 0, 0], list(scene.depth), gt["T"], gt["f"], gt["depth"])
        d_off = distance(ref["T"], ref["f"], ref["depth"], gt["T"], gt["f"], gt["depth"])
        info.update(recon_vs_gt=d_rec, official_vs_gt=d_off)
        line += f"\n     vs GT: recon {fmt(d_rec)}\n            official {fmt(d_off)}"
    return ok, line, info


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cases", nargs="+", type=Path)
    ap.add_argument(
        "--method",
        default="mast3r-sfm",
        choices=["mast3r-sfm", "dust3r", "sparse", "dense", "all"],
        help="all = mast3r-sfm and dust3r (the parity modes)",
    )
    ap.add_argument("--official-config", default="function_defaults", choices=["function_defaults", "demo_defaults"])
    ap.add_argument("--gt", action="store_true", help="also print each side's error against ground truth")
    ap.add_argument("--json", type=Path, help="write every distance to this file")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--conf-thr",
        type=float,
        default=None,
        help="also require that scene.conf > T and the official conf > T select the same pixels "
        "(mask_diff = fraction of pixels that disagree, at most --mask-tol)",
    )
    ap.add_argument("--mask-tol", type=float, default=0.01)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    global CONF_THR, MASK_TOL
    CONF_THR, MASK_TOL = args.conf_thr, args.mask_tol
    methods = ["mast3r-sfm", "dust3r"] if args.method == "all" else [args.method]
    n_ok = n = 0
    report = []
    for case_dir in args.cases:
        for m in methods:
            try:
                ok, line, info = check_case(case_dir, m, args.official_config, args.gt)
            except Exception as e:
                ok, line, info = False, f"FAIL {case_dir.name} [{m}]: broken case ({type(e).__name__}: {e})", {}
            n += 1
            n_ok += ok
            print(line, flush=True)
            report.append({"case": str(case_dir), "method": m, "ok": ok, **info})
    if args.json:
        args.json.write_text(json.dumps(report, indent=1, default=float))
    print(f"ga_parity: {n_ok}/{n} cases pass")
    return 0 if n_ok == n else 1


if __name__ == "__main__":
    sys.exit(main())
