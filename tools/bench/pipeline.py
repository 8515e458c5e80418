"""``recon bench pipeline``: time per stage and peak memory of a whole reconstruction on a synthetic scene.

The images come from ``tools.synth`` (an orbit of N views), so the figures are reproducible anywhere. Without
``--model`` / ``--checkpoint`` the network is a *tiny* random MASt3R (the conformance fixture's sizes): the
numbers then measure the pipeline's own overheads (pairing, storage, matching, alignment), which is what
limits large image sets on CPU. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import logging

logger = logging.getLogger(__name__)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "pipeline",
        help="time per stage and peak memory of a reconstruction",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--n-images", type=int, nargs="+", default=[8], help="image counts to run (one run each)")
    p.add_argument("--graph", default="auto", help="scene graph")
    p.add_argument("--align", default="sparse", choices=("sparse", "dense"), help="global alignment method")
    p.add_argument("--size", type=int, nargs=2, default=(512, 384), metavar=("W", "H"), help="image size")
    m = p.add_mutually_exclusive_group()
    m.add_argument("--model", help="weights name; default: a tiny random MASt3R")
    m.add_argument("--checkpoint", help="checkpoint path")
    m.add_argument(
        "--oracle",
        action="store_true",
        help="ground-truth predictions instead of a network: realistic matching and alignment figures",
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:K")
    p.add_argument("--batch-size", type=int, default=8, help="pairs per decoder call")
    p.add_argument("--cache-dir", help="spill pair predictions here")
    p.add_argument("--threads", type=int, help="torch CPU threads")
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


def run(args) -> int:
    import time

    import torch

    import recon
    from recon.pipeline import ReconstructConfig, reconstruct, resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    from tools.oracle import OracleModel

    if args.oracle:
        label = "oracle (ground-truth predictions)"
    elif args.model or args.checkpoint:
        model = recon.load_model(args.checkpoint or args.model, device=device)
        label = args.checkpoint or args.model
    else:
        model = tiny_model().to(device)
        label = "tiny random MASt3R"
    rows = []
    for n in args.n_images:
        t0 = time.perf_counter()
        views, gt = synth_views(n, args.size, args.seed)
        render_s = time.perf_counter() - t0
        if args.oracle:
            model = OracleModel(gt, seed=args.seed)
        config = ReconstructConfig(
            graph=args.graph,
            align=args.align,
            device=str(device),
            batch_size=args.batch_size,
            cache_dir=args.cache_dir,
            seed=args.seed,
            progress=False,
        )
        scene, report = reconstruct(views, model, config=config)
        rows.append((n, render_s, report))
    print(
        f"model: {label}; device: {device}; threads: {torch.get_num_threads()}; size: {args.size[0]}x{args.size[1]};"
        f" align: {args.align}"
    )
    stages = ["pairs", "inference", "matching", "alignment"]
    print("| N | graph | pairs | registered | " + " | ".join(f"{s} s" for s in stages) + " | total s | peak MB |")
    print("|---|---|---|---|" + "---|" * (len(stages) + 2))
    for n, _, rep in rows:
        total = sum(rep.stage_seconds.get(s, 0.0) for s in stages)
        cells = " | ".join(f"{rep.stage_seconds.get(s, 0.0):.2f}" for s in stages)
        peak = max(rep.stage_peak_mb.values(), default=0.0)
        print(f"| {n} | {rep.graph} | {rep.n_pairs} | {rep.registered} | {cells} | {total:.2f} | {peak:.0f} |")
    return 0
