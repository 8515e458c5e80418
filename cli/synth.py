"""``recon synth``: render a synthetic multi-view scene with exact cameras and write it as a dataset.

Examples::

    recon synth orbit --views 10 --size 512x384 --seed 0 --out demo_data/orbit
    recon synth room_walk --format re10k --clips 3 --views 30 --out /tmp/re10k
    recon synth orbit --format co3d --categories apple,ball --sequences 2 --size 64x48 --out /tmp/co3d
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

logger = logging.getLogger(__name__)

LAYOUTS = ("orbit", "room_walk", "room_set")  # mirrors tools.synth.LAYOUTS without importing it (cheap register)
FORMATS = ("folder", "co3d", "re10k")


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 512x384 (width x height), got {text!r}") from None
    if w < 8 or h < 8:
        raise argparse.ArgumentTypeError(f"size must be at least 8x8, got {text!r}")
    return w, h


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "synth",
        help="render a synthetic multi-view scene with known cameras",
        description="Render textured analytic scenes on the CPU and write images, cameras (and optionally depth) "
        "as a plain folder (cameras.json), a CO3Dv2-layout dataset or RealEstate10K camera files.",
    )
    p.add_argument("layout", choices=LAYOUTS, help="camera layout: object orbit, walk through a room, unordered set")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--format", choices=FORMATS, default="folder", help="output layout (default: folder)")
    p.add_argument("--views", type=int, default=None, help="views per scene (default 10; 50 for co3d, 30 for re10k)")
    p.add_argument("--size", type=_size, default=(512, 384), help="WxH; H > W gives portrait (default 512x384)")
    p.add_argument("--seed", type=int, default=0, help="random seed: same seed, same scene and cameras")
    p.add_argument("--focal-range", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                   help="focal length as a multiple of the longer image side (layout default otherwise)")  # fmt: skip
    p.add_argument("--objects", type=int, default=None, help="number of objects (layout default otherwise)")
    p.add_argument("--mixed-orientation", action="store_true", help="turn half the views portrait/landscape")
    p.add_argument("--image-format", choices=("jpg", "png"), default=None, help="folder: jpg (default) or png")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality (default 90)")
    p.add_argument("--with-depth", action="store_true", help="folder: also write depth/<name>.npz")
    p.add_argument("--overwrite", action="store_true", help="write into an existing non-empty output folder")
    g = p.add_argument_group("co3d")
    g.add_argument("--categories", default="apple", help="comma-separated category names (default apple)")
    g.add_argument("--sequences", type=int, default=2, help="valid sequences per category (default 2)")
    g.add_argument("--no-decoys", action="store_true", help="omit the decoy sequences the protocol must drop")
    g.add_argument("--intrinsics-format", choices=("ndc_isotropic", "ndc_norm_image_bounds"),
                   default="ndc_isotropic", help="CO3D intrinsics convention (default: ndc_isotropic)")  # fmt: skip
    g = p.add_argument_group("re10k")
    g.add_argument("--clips", type=int, default=1, help="number of clips (default 1)")
    g.add_argument("--split", default="test", help="split folder name (default test)")
    p.set_defaults(func=handler)


def _options(args) -> dict:
    opts = {}
    if args.focal_range is not None:
        opts["focal_range"] = tuple(args.focal_range)
    if args.objects is not None:
        opts["n_objects"] = args.objects
    if args.mixed_orientation:
        opts["mixed_orientation"] = True
    return opts


def handler(args) -> int:
    from tqdm import tqdm

    from recon.errors import UserError

    out: Path = args.out
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise UserError(f"--out {out} is not empty; pass --overwrite to write into it")
    for flag, value in (("--views", args.views), ("--objects", args.objects), ("--clips", args.clips),
                        ("--sequences", args.sequences)):  # fmt: skip
        if value is not None and value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")
    if args.focal_range is not None and not 0 < args.focal_range[0] <= args.focal_range[1]:
        raise UserError(
            f"--focal-range LO HI must satisfy 0 < LO <= HI, got {args.focal_range[0]} {args.focal_range[1]}"
        )
    if not 1 <= args.quality <= 100:
        raise UserError(f"--quality must be between 1 and 100, got {args.quality}")
    opts = _options(args)
    if args.layout == "orbit" and args.format == "re10k":
        logger.warning("RealEstate10K clips are walks through rooms; consider the room_walk layout")
    t0 = time.perf_counter()
    if args.format == "folder":
        n = args.views or 10
        from tools.synth import iter_render_scene, write_folder

        frames = iter_render_scene(args.layout, n, args.size, args.seed, **opts)
        views = list(tqdm(frames, total=n, desc="render", unit="view"))
        meta = {
            "generator": "recon synth",
            "layout": args.layout,
            "views": n,
            "size": list(args.size),
            "seed": args.seed,
            "options": opts,
        }
        path = write_folder(views, out, args.image_format or "jpg", args.quality, args.with_depth, meta)
        print(f"wrote {n} views and {path} in {time.perf_counter() - t0:.1f}s")
    elif args.format == "co3d":
        from tools.synth import synth_co3d_sequences, write_co3d

        n = args.views or 50
        if n < 50:
            logger.warning("%d frames per sequence: the CO3D protocol drops sequences with fewer than 50", n)
        cats = [c.strip() for c in args.categories.split(",") if c.strip()]
        if not cats:
            raise UserError("--categories is empty")
        n_seq = args.sequences + (0 if args.no_decoys else 4)
        per_cat = args.sequences * n + (0 if args.no_decoys else 2 * n + 49 + 10)
        categories = {}
        with tqdm(total=per_cat * len(cats), desc="render", unit="view") as bar:
            for k, cat in enumerate(cats):
                categories[cat] = synth_co3d_sequences(
                    args.sequences, n, args.size, args.seed * 100 + k, not args.no_decoys,
                    layout=args.layout, progress=bar.update, **opts,
                )  # fmt: skip
        with tqdm(total=per_cat * len(cats), desc="write", unit="view") as bar:
            write_co3d(out, categories, args.intrinsics_format, quality=args.quality, progress=bar.update)
        print(f"wrote {len(cats)} categories x {n_seq} sequences to {out} in {time.perf_counter() - t0:.1f}s")
    else:
        from tools.synth import iter_render_scene, write_re10k

        n = args.views or 30
        clips = {}
        with tqdm(total=n * args.clips, desc="render", unit="view") as bar:
            for k in range(args.clips):
                clip_id = f"{(args.seed * 1_000_003 + k) & 0xFFFFFFFFFFFFFFFF:016x}"
                views = []
                for v in iter_render_scene(args.layout, n, args.size, args.seed * 1000 + k, **opts):
                    views.append(v)
                    bar.update()
                clips[clip_id] = views
        write_re10k(out, clips, args.split, args.image_format or "png")
        print(f"wrote {args.clips} clips of {n} frames to {out} in {time.perf_counter() - t0:.1f}s")
    return 0
