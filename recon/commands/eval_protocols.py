"""``recon eval mvdepth`` and ``recon eval match``: what a backbone sees in 3D beyond camera pose.

Examples::

    recon eval mvdepth --dataset eth3d --root /data/rmvd/eth3d --model dune_vitb14 --out runs/dune_b
    recon eval match --protocol cosine --dataset navi --root /data/navi --model dune_vits14 --out runs/m

Registered under ``recon eval`` by ``recon.commands.eval``. See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import sys


def add_model_args(p: argparse.ArgumentParser) -> None:
    """``--model`` / ``--checkpoint`` (one required), ``--backbone``, ``--image-size``, ``--device``."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="named weights (see `recon weights list`), random:<preset>, or a checkpoint path")
    src.add_argument("--checkpoint", help="checkpoint file (official MASt3R / DUNE-MASt3R or recon's own)")
    p.add_argument("--backbone", help="encoder to pair with a DUNE-MASt3R decoder checkpoint")
    p.add_argument("--image-size", type=int, help="network input long side (default: the model's own)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:K")


def register(sub) -> None:
    p = sub.add_parser(
        "mvdepth",
        help="multi-view depth on the Robust MVD sets (rel, τ@1.03), DUNE Table 3",
        description="Depth of each key view from its (key, source) pairs, fused with confidence weights, "
        "median-aligned, scored with rel and τ@1.03. Resumable; OUT/summary.md covers every set run into OUT.",
    )
    p.add_argument("--dataset", required=True, choices=("kitti", "dtu", "eth3d", "tanks", "scannet"))
    p.add_argument("--root", required=True, help="the set's root folder (holding samples.json)")
    p.add_argument("--samples", help="sample list (default ROOT/samples.json; layout in docs/evaluation.md)")
    add_model_args(p)
    p.add_argument("--alignment", choices=("median", "none"), default="median")
    p.add_argument("--max-samples", type=int, help="only the first N samples (a quick look)")
    p.add_argument("--shard", help="evaluate only shard I of N (I/N)")
    p.add_argument("--out", required=True, help="output folder (one per model; sets go to subfolders)")
    p.set_defaults(func=_mvdepth)


def load_model_or_exit(args):
    """The model named by ``--model`` / ``--checkpoint`` on ``--device``; a load failure is a user error."""
    import torch

    import recon
    from backbone.checkpoint import CheckpointError
    from backbone.hub import WeightsError
    from recon.cli import UserError

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    source = args.checkpoint or args.model
    try:
        return recon.load_model(source, backbone=args.backbone, device=device).eval(), str(source)
    except (CheckpointError, WeightsError, FileNotFoundError, ValueError) as err:
        raise UserError(f"cannot load model {source!r}: {err}") from None


def _mvdepth(args) -> int:
    import torch

    from recon.cli import UserError
    from recon.eval.data import DatasetError
    from recon.eval.mvdepth import MvdReader, format_mvdepth, run_mvdepth, summarize_mvdepth
    from recon.eval.runner import RunMismatchError, parse_shard

    if args.max_samples is not None and args.max_samples < 1:
        raise UserError("--max-samples must be at least 1")
    try:
        shard = parse_shard(args.shard) if args.shard else (0, 1)
        reader = MvdReader(args.root, args.dataset, args.samples)
    except (ValueError, DatasetError) as err:
        raise UserError(str(err)) from None
    model, label = load_model_or_exit(args)
    try:
        with torch.inference_mode():
            done, skipped = run_mvdepth(
                model, reader, args.out, alignment=args.alignment, image_size=args.image_size, label=label,
                shard=shard, max_samples=args.max_samples,
            )  # fmt: skip
        summary = summarize_mvdepth(args.out)
    except (DatasetError, RunMismatchError) as err:
        raise UserError(str(err)) from None
    print(format_mvdepth(summary), end="")
    print(f"{done} samples evaluated, {skipped} already done; results in {args.out}", file=sys.stderr)
    return 0
