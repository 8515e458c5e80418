"""``recon run IMAGES... --out PATH``: reconstruct a scene from photos and export it.

Order of work, so that a mistake costs seconds, not an hour:

1. every argument, the output path and the prior files are checked and the cost is planned
   (``recon.plan.plan_run``: images counted, pairs and decoder passes computed from the graph name, memory
   estimated) before any image is decoded or any model is loaded; a plan over the budget is refused unless
   ``--yes``;
2. the reconstruction runs; the export is written atomically (a temporary name renamed on success).

Earlier outputs: a ``--out`` file that recon did not write is refused before any work (``recon.export`` never
overwrites one). When a run fails and ``--out`` holds a file that recon wrote earlier (recognised by its content:
the ``recon`` extras of a ``.glb``, the ``written by recon3r`` comment of a ``.ply``, the scene format tag of an
``.npz``), that file is renamed ``<stem>.previous<suffix>`` so it is not mistaken for this run's result.
"""

from __future__ import annotations

from pathlib import Path

from recon.config import Flag, add_flags, from_flags
from recon.settings import ReconstructConfig, UserPriors

FORMATS = ("glb", "ply", "colmap", "nerfstudio", "npz")
FOLDER_FORMATS = ("colmap", "nerfstudio")
# The output flags each format has a use for (an .npz keeps the whole scene: no point selection).
OUTPUT_FLAGS = {
    "glb": ("--mesh", "--no-cameras", "--conf-thr", "--no-clean-depth"),
    "ply": ("--mesh", "--conf-thr", "--no-clean-depth"),
    "colmap": ("--conf-thr", "--no-clean-depth"),
    "nerfstudio": ("--conf-thr", "--no-clean-depth"),
    "npz": (),
}
# The fields of the pipeline's configs offered as flags (types, defaults and help come from the fields).
PIPELINE_FLAGS = (
    Flag("graph", help="complete | swin-K | logwin-K | oneref-I | retrieval-Na-K | auto (complete while it fits in "
         "memory, else a sparser graph, named in the log)"),
    Flag("align"),
    Flag("feedforward_model", "--feedforward", type=Path, help="--align feedforward+sparse: the "
         "feedforward_final.pth file"),
    Flag("device", help="auto | cpu | cuda | cuda:K"),
    Flag("image_size", help="network input size, long side in pixels (default: the model's)"),
    Flag("batch_size"),
    Flag("cache_dir", help="cache pair predictions here (large sets; makes reruns resume)"),
    Flag("max_ram_gb"),
    Flag("seed"),
    Flag("retrieval_model", help="MASt3R *_retrieval_trainingfree.pth (codebook .pkl beside it) for --graph "
         "retrieval-Na-k; default: pooled backbone tokens"),
    Flag("precision"),
)  # fmt: skip
PRIOR_FLAGS = (
    Flag("focal", help="known focal length in pixels, same for all images"),
    Flag("intrinsics_file", "--intrinsics"),
    Flag("shared_intrinsics"),
    Flag("poses_file", "--poses"),
    Flag("use_exif", "--no-exif", invert=True, help="ignore EXIF focal lengths"),
    Flag("fix_focal"),
)
REAL_MODEL_HINT = (
    "for a real reconstruction: recon weights download mast3r_vitl16_512, then recon run PHOTOS --out scene.glb "
    "(recon weights list)"
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run",
        help="reconstruct a scene from photos",
        description="Reconstruct cameras and a coloured point cloud from photos (a folder, files, or a video). "
        "The output format follows --out's extension (.glb .ply .npz) or --format (colmap and nerfstudio "
        "write a folder). Every input is checked and the cost is planned before any image is decoded; a plan "
        "above the budget is refused unless --yes. `--model random:mast3r_tiny` needs no download (seeded "
        "random weights: checks the install, the geometry is meaningless).",
    )
    p.add_argument("images", nargs="+", help="a folder of images, image files, or a video")
    p.add_argument("--out", required=True, type=Path, help="output file or folder")
    p.add_argument("--format", choices=FORMATS, help="output format (default: from --out's extension)")
    m = p.add_mutually_exclusive_group()
    m.add_argument(
        "--model",
        help="weights name (see `recon weights list`), or random:NAME[@SEED] (no download, meaningless "
        "geometry); default: the first model release in the weights cache, else recon-tiny (shipped with recon: a "
        "small model trained on synthetic scenes)",
    )
    m.add_argument("--checkpoint", type=Path, help="a checkpoint file (any supported format); no network needed")
    p.add_argument("--backbone", help="encoder for a DUNE-MASt3R decoder checkpoint (name or path)")
    p.add_argument("--yes", action="store_true", help="run a plan above the budget (decoder passes, disk) anyway")
    add_flags(p.add_argument_group("pipeline"), ReconstructConfig, PIPELINE_FLAGS)
    add_flags(p.add_argument_group("priors (original image pixels)"), UserPriors, PRIOR_FLAGS)
    o = p.add_argument_group("output")
    o.add_argument(
        "--conf-thr",
        type=float,
        help="minimum confidence of exported points, in the demos' scale (default: 1.5 for --align sparse as the "
        "MASt3R demo, 3 for dense as DUSt3R)",
    )
    o.add_argument("--no-clean-depth", action="store_true", help="keep points occluded in other views")
    o.add_argument("--mesh", action="store_true", help="export a mesh instead of a point cloud (.glb)")
    o.add_argument("--no-cameras", action="store_true", help="leave camera frustums out of the .glb")
    o.add_argument(
        "--tsdf-thresh",
        type=float,
        default=0.0,
        help="refine depth maps with a fused TSDF of this truncation (scene units; 0 = off, as the MASt3R demo)",
    )
    p.set_defaults(func=run)


def check_output(out: Path, fmt_flag: str | None) -> str:
    """The output format, after checking that ``out``'s folder can be written.

    Raises:
        InputError: unknown format, missing or unwritable parent folder.
    """
    from recon.plan import InputError, writable

    fmt = fmt_flag or out.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise InputError(f"cannot tell the output format from --out {out.name!r}; use .glb/.ply/.npz or --format")
    parent = out.parent
    if not parent.is_dir():
        raise InputError(f"output folder {parent} does not exist; create it or choose another --out")
    if not writable(parent):
        raise InputError(f"output folder {parent} is not writable; choose another --out")
    return fmt


def export_options(fmt: str, args):
    """The export options of ``fmt`` from the output flags; a flag the format has no use for is an error.

    Raises:
        InputError: e.g. ``--mesh`` for a COLMAP folder, ``--no-cameras`` for a ``.ply``.
    """
    from recon.export import ColmapOptions, GlbOptions, NerfstudioOptions, NpzOptions, PlyOptions
    from recon.plan import InputError

    given = [
        flag
        for flag, value in [
            ("--mesh", args.mesh),
            ("--no-cameras", args.no_cameras),
            ("--conf-thr", args.conf_thr is not None),
            ("--no-clean-depth", args.no_clean_depth),
        ]
        if value
    ]
    unused = [flag for flag in given if flag not in OUTPUT_FLAGS[fmt]]
    if unused:
        raise InputError(f"{' and '.join(unused)} cannot apply to a {fmt} export; leave it out")
    if fmt == "npz":
        return NpzOptions(tsdf_thresh=args.tsdf_thresh)
    points = dict(conf_thr=args.conf_thr, clean_depth=not args.no_clean_depth, tsdf_thresh=args.tsdf_thresh)
    if fmt == "glb":
        return GlbOptions(**points, mesh=args.mesh, cameras=not args.no_cameras)
    if fmt == "ply":
        return PlyOptions(**points, mesh=args.mesh)
    return ColmapOptions(**points) if fmt == "colmap" else NerfstudioOptions(**points)


def written_by_recon(path: Path, fmt: str) -> bool:
    """Whether the file at ``path`` is an earlier recon export of format ``fmt`` (``recon.export`` reads its marker)."""
    from recon.export import OverwriteRefusedError, check_destination
    from recon.export.options import OPTIONS_BY_FORMAT

    if not path.is_file():
        return False
    try:
        check_destination(path, OPTIONS_BY_FORMAT[fmt]())  # refuses exactly the files recon did not write
    except (OverwriteRefusedError, OSError, ValueError):
        return False
    return True


def retire_previous_output(out: Path, fmt: str) -> str:
    """After a failed run: move recon's earlier output out of ``out``'s name; returns a note for the user."""
    from backbone.fileio import move_into_place

    if not out.exists():
        return ""
    if fmt in FOLDER_FORMATS:
        return f"{out} holds an earlier export, not this run's"
    if not written_by_recon(out, fmt):
        return f"{out} was not written by this run"
    previous = out.with_name(f"{out.stem}.previous{out.suffix}")
    if previous.exists() and not written_by_recon(previous, fmt):
        return f"{out} is from an earlier run (not renamed: {previous.name} exists and is not recon's)"
    move_into_place(out, previous, fsync=False)  # already on disk: a rename, not a write
    return f"the earlier {out.name} was renamed {previous.name} so it is not taken for this run's result"


def no_camera_message(*, random_model: str | None, n_images: int, align: str, graph: str, complete: bool) -> str:
    """Why no camera was registered, likeliest cause first, and only advice the user has not already tried."""
    causes = []
    if random_model:
        causes.append(f"the model has random weights ({random_model}), whose predictions rarely agree")
    if n_images < 3:
        causes.append(f"only {n_images} usable images")
    causes.append("the photos may not overlap")
    advice = []
    if random_model:
        advice.append(REAL_MODEL_HINT)
    if align not in ("dense", "dust3r"):
        advice.append("--align dense")
    if not complete:
        advice.append(f"a denser --graph than {graph} (e.g. complete)")
    if n_images < 3 or not random_model:
        advice.append("more photos that overlap")
    return f"no camera could be registered: likely {'; or '.join(causes)}. Try: {'; '.join(advice)}"


def run(args) -> int:
    import time

    from recon.errors import UserError
    from recon.export import check_destination
    from recon.pipeline import ReconstructionError, load_views, prepare_model, reconstruct
    from recon.plan import DEFAULT_MAX_DECODES, InputError, check_finite, plan_run

    t0 = time.perf_counter()
    out: Path = args.out
    fmt = check_output(out, args.format)
    check_finite("--conf-thr", args.conf_thr, minimum=0)
    check_finite("--tsdf-thresh", args.tsdf_thresh, minimum=0)
    options = export_options(fmt, args)
    check_destination(out, options)  # a file where a folder goes, or a file recon did not write: refused now
    if args.retrieval_model is not None and not args.retrieval_model.is_file():
        raise InputError(f"--retrieval-model file not found: {args.retrieval_model}")
    images = args.images[0] if len(args.images) == 1 else args.images
    config = from_flags(ReconstructConfig, args, PIPELINE_FLAGS, max_decodes=None if args.yes else DEFAULT_MAX_DECODES)
    priors = from_flags(UserPriors, args, PRIOR_FLAGS)
    model = str(args.checkpoint) if args.checkpoint else args.model
    plan = plan_run(images, model, config, priors)
    random_model = plan.model.name if plan.model.random else None
    if random_model:
        print(f"{random_model}: random weights: this checks the install; the geometry is meaningless", flush=True)
    from recon.weights import TINY_LABEL, is_tiny

    if is_tiny(plan.model.name):
        print(f"model {TINY_LABEL}; a released model is far more accurate: {REAL_MODEL_HINT}", flush=True)
    print(plan.summary(), flush=True)
    refusal = None if args.yes else plan.refusal(DEFAULT_MAX_DECODES)
    if refusal:
        raise InputError(refusal)

    from recon.export import export

    try:
        t_model = time.perf_counter()
        model = prepare_model(model, config, backbone=args.backbone)
        model_s = time.perf_counter() - t_model
        views = load_views(images, model, config)
        scene, report = reconstruct(views, model, config, priors)
        report.stage_seconds["load"] += model_s  # the load stage counts the model, as the photos
        if report.registered == 0 and fmt != "npz":  # an .npz still records what the run produced
            raise ReconstructionError(
                no_camera_message(
                    random_model=random_model,
                    n_images=report.n_images,
                    align=args.align,
                    graph=report.graph,
                    complete=report.n_pairs == report.n_images * (report.n_images - 1) // 2,
                )
            )
        t1 = time.perf_counter()
        written = export(scene, out, options)  # video frames have no photo file: their views are named only
    except BaseException as err:
        note = retire_previous_output(out, fmt)
        if note and isinstance(err, UserError):
            raise UserError(f"{err} ({note})") from None
        if note:
            print(f"note: {note}", flush=True)
        raise
    report.stage_seconds["export"] = time.perf_counter() - t1
    print(report.summary())
    done = f"wrote {written} in {time.perf_counter() - t0:.1f}s total"
    if random_model:
        done += f" from RANDOM weights ({random_model}): the geometry is meaningless; {REAL_MODEL_HINT}"
    print(done)
    return 0
