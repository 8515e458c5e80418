"""``recon run IMAGES... --out PATH``: reconstruct a scene from photos and export it."""

from __future__ import annotations

import argparse
from pathlib import Path

FORMATS = ("glb", "ply", "colmap", "nerfstudio", "npz")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run",
        help="reconstruct a scene from photos",
        description="Reconstruct cameras and a coloured point cloud from photos (a folder, files, or a video). "
        "The output format follows --out's extension (.glb .ply .npz) or --format (colmap and nerfstudio "
        "write a folder).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("images", nargs="+", help="a folder of images, image files, or a video")
    p.add_argument("--out", required=True, type=Path, help="output file or folder")
    p.add_argument("--format", choices=FORMATS, help="output format (default: from --out's extension)")
    m = p.add_mutually_exclusive_group()
    m.add_argument("--model", help="weights name (see `recon weights list`); default: MASt3R ViT-L 512")
    m.add_argument("--checkpoint", type=Path, help="a checkpoint file (any supported format); no network needed")
    p.add_argument("--backbone", help="encoder for a DUNE-MASt3R decoder checkpoint (name or path)")
    g = p.add_argument_group("pipeline")
    g.add_argument(
        "--graph",
        default="auto",
        help="complete | swin-K | logwin-K | oneref-I | retrieval-Na-K | auto (complete while it fits in memory)",
    )
    g.add_argument(
        "--align",
        default="sparse",
        choices=("sparse", "dense", "mast3r-sfm", "dust3r", "feedforward"),
        help="global alignment: sparse / dense = recon's own variants; mast3r-sfm / dust3r = the official "
        "MASt3R-SfM sparse and DUSt3R dense aligners reproduced (docs/alignment.md); feedforward = one pass of a "
        "--checkpoint feedforward_final.pth (docs/feedforward.md)",
    )
    g.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:K")
    g.add_argument("--image-size", type=int, help="network input size (default: the model's native size)")
    g.add_argument("--batch-size", type=int, default=8, help="pairs per decoder call")
    g.add_argument("--cache-dir", type=Path, help="cache pair predictions here (large sets; makes reruns resume)")
    g.add_argument("--max-ram-gb", type=float, default=4.0, help="RAM for pair predictions before spilling")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument(
        "--retrieval-model",
        type=Path,
        help="MASt3R *_retrieval_trainingfree.pth (codebook .pkl beside it) for --graph retrieval-Na-k; "
        "default: pooled backbone tokens",
    )
    g.add_argument(
        "--precision",
        default="float16",
        choices=("float16", "float32"),
        help="storage of point maps and descriptors (confidences are always float32)",
    )
    pr = p.add_argument_group("priors (original image pixels)")
    pr.add_argument("--focal", type=float, help="known focal length in pixels, same for all images")
    pr.add_argument("--intrinsics", type=Path, help="JSON of per-image intrinsics (K or fx, fy, cx, cy)")
    pr.add_argument("--shared-intrinsics", action="store_true", help="all images come from one camera")
    pr.add_argument("--poses", type=Path, help="JSON of per-image T_world_cam (4x4, OpenCV); held fixed")
    pr.add_argument("--no-exif", action="store_true", help="ignore EXIF focal lengths")
    pr.add_argument(
        "--fix-focal", action="store_true", help="hold EXIF focal lengths fixed (default: start from them, optimise)"
    )
    o = p.add_argument_group("output")
    o.add_argument(
        "--conf-thr",
        type=float,
        help="minimum confidence of exported points, in the demos' scale (default: 1.5 for --align sparse as the "
        "MASt3R demo, 3 for dense as DUSt3R)",
    )
    o.add_argument("--no-clean-depth", action="store_true", help="keep points occluded in other views")
    o.add_argument(
        "--tsdf-thresh",
        type=float,
        default=0.0,
        help="refine depth maps with a fused TSDF of this truncation (scene units; 0 = off, as the MASt3R demo)",
    )
    o.add_argument("--mesh", action="store_true", help="export a mesh instead of a point cloud (.glb)")
    o.add_argument("--no-cameras", action="store_true", help="leave camera frustums out of the .glb")
    p.set_defaults(func=run)


def run(args) -> int:
    import time

    from recon.errors import UserError
    from recon.pipeline import ReconstructConfig, ReconstructionError, UserPriors, reconstruct

    out: Path = args.out
    if not out.parent.exists():  # fail before any work, not after an hour of inference
        raise UserError(f"output folder {out.parent} does not exist; create it or choose another --out")
    fmt = args.format or out.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise UserError(f"cannot tell the output format from {out.name!r}; use .glb/.ply/.npz or --format")
    import math

    for name, value in (("--tsdf-thresh", args.tsdf_thresh), ("--conf-thr", args.conf_thr)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise UserError(f"{name} must be a number >= 0, got {value}")
    from recon.pairs import parse_graph

    try:
        parse_graph(args.graph)  # before any work: a bad graph name is a one-line error
    except ValueError as err:
        raise UserError(str(err)) from None
    for path in (args.intrinsics, args.poses, args.retrieval_model):
        if path is not None and not path.is_file():
            raise UserError(f"file not found: {path}")
    images = args.images[0] if len(args.images) == 1 else args.images
    config = ReconstructConfig(
        graph=args.graph,
        align=args.align,
        image_size=args.image_size,
        batch_size=args.batch_size,
        device=args.device,
        cache_dir=args.cache_dir,
        max_ram_gb=args.max_ram_gb,
        seed=args.seed,
        precision=args.precision,
        retrieval_model=args.retrieval_model,
    )
    priors = UserPriors(
        focal=args.focal,
        intrinsics_file=args.intrinsics,
        poses_file=args.poses,
        shared_intrinsics=args.shared_intrinsics,
        use_exif=not args.no_exif,
        fix_focal=args.fix_focal,
    )
    model = str(args.checkpoint) if args.checkpoint else args.model
    t0 = time.perf_counter()
    from backbone.checkpoint import CheckpointError

    try:
        scene, report = reconstruct(images, model, config=config, priors=priors, backbone=args.backbone)
    except (ReconstructionError, CheckpointError, FileNotFoundError) as err:
        raise UserError(str(err)) from None
    except Exception as err:  # weights missing offline: the hub's error already says where to put the file
        if type(err).__name__ == "WeightsUnavailableError":
            raise UserError(str(err)) from None
        raise

    from recon.export import export

    if report.registered == 0 and fmt != "npz":  # an .npz still records what the run produced
        raise UserError(
            "no camera could be registered (too few consistent matches); try --align dense, a denser --graph "
            "(e.g. complete), or check that the photos overlap"
        )
    t1 = time.perf_counter()
    photos = scene.info.get("image_paths")
    if fmt not in ("colmap", "nerfstudio") or not photos or not all(photos):
        photos = None  # video frames have no source file: views are then named without copying photos
    written = export(
        scene,
        out,
        format=fmt,
        conf_thr=args.conf_thr,
        clean_depth=not args.no_clean_depth,
        as_mesh=args.mesh,
        show_cameras=not args.no_cameras,
        images=photos,
        tsdf_thresh=args.tsdf_thresh,
    )
    report.stage_seconds["export"] = time.perf_counter() - t1
    print(report.summary())
    print(f"wrote {written} in {time.perf_counter() - t0:.1f}s total")
    return 0
