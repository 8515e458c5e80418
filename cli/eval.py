"""``recon eval co3d|re10k|summarize``: the multi-view pose benchmark (10 random frames, 45 pairs per sequence).

Examples::

    recon eval co3d --root /data/co3d --oracle --out runs/oracle
    recon eval co3d --root /data/co3d --checkpoint mast3r.pth --mode pairwise --out runs/mast3r
    torchrun --nproc_per_node 4 -m recon eval co3d --root /data/co3d --model NAME --out runs/x
    recon eval re10k --root /data/re10k --split-file re10k_test_1800.txt --model NAME --out runs/y
    recon eval summarize runs/x

See docs/eval.md.
"""

from __future__ import annotations

import argparse
import sys

from cli import eval_protocols
from recon.config import Flag, add_flags, from_flags
from tools.eval.options import BenchmarkOptions

# The fields of ``BenchmarkOptions`` offered as flags (types, defaults and help come from the fields).
BENCHMARK_FLAGS = (
    Flag("seed", help="sampling seed for a new sampling file (default 0)"),
    Flag("recipe", help="sampling recipe for a new sampling file (default pd)"),
    Flag("num_frames"),
    Flag("sampling_path", "--sampling", help="sampling file: read if it exists, else written (default "
         "OUT/sampling.json)"),
    Flag("convention", help="pair direction of the translation error"),
    Flag("rotation_numerics", help="rotation error: exact (atan2 form) or pd (PyTorch3D's acos extrapolation: "
         "0.41 deg for equal rotations)"),
    Flag("fail_fast", help="stop at the first sequence the model fails on (default: record it as failed, 180° "
         "errors, go on)"),
)  # fmt: skip


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", required=True, help="dataset root folder")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="named weights (see `recon weights list`) or checkpoint path")
    src.add_argument("--checkpoint", help="checkpoint file (official MASt3R / DUNE-MASt3R or recon's own)")
    src.add_argument("--oracle", action="store_true", help="ground-truth cameras (checks the evaluator itself)")
    p.add_argument("--backbone", help="encoder to pair with a DUNE-MASt3R decoder checkpoint")
    p.add_argument(
        "--mode",
        choices=("pairwise", "global"),
        default="pairwise",
        help="pairwise: essential matrix per pair (MASt3R / DUNE papers); global: recon's full reconstruction",
    )
    p.add_argument(
        "--ransac-method",
        choices=("ransac", "usac_accurate"),
        default="ransac",
        help="pairwise mode: OpenCV plain RANSAC (as the papers say) or USAC with local optimisation",
    )
    p.add_argument("--ransac-px", type=float, default=1.0, help="pairwise mode: RANSAC threshold (network pixels)")
    p.add_argument("--image-size", type=int, help="network input long side (default: the model's own)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:K")
    p.add_argument("--oracle-rot-noise", type=float, default=0.0, metavar="DEG", help="oracle rotation noise std")
    p.add_argument(
        "--oracle-trans-noise", type=float, default=0.0, metavar="F", help="oracle centre noise std (x spread)"
    )
    p.add_argument("--oracle-seed", type=int, default=0, help="seed of the oracle noise")
    add_flags(p, BenchmarkOptions, BENCHMARK_FLAGS)
    p.add_argument("--shard", help="evaluate only shard I of N (I/N); under torchrun the rank decides")
    p.add_argument("--out", required=True, help="output folder (results.jsonl, summary.md/.csv, sampling.json)")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="multi-view pose benchmark on CO3Dv2 / RealEstate10K",
        description="Multi-view pose benchmark (PoseDiffusion protocol: 10 random frames, all 45 pairs, "
        "RRA@15 / RTA@15 / mAA(30)). Results are appended per sequence; rerunning resumes. See docs/eval.md.",
    )
    sub = parser.add_subparsers(dest="eval_command", metavar="DATASET", required=True)

    p_co3d = sub.add_parser("co3d", help="CO3Dv2, 41 categories, fewview_dev test sequences")
    _common(p_co3d)
    p_co3d.add_argument("--categories", nargs="+", help="default: the 41 seen categories")
    p_co3d.set_defaults(func=_run, dataset="co3d")

    p_re = sub.add_parser("re10k", help="RealEstate10K test clips")
    _common(p_re)
    p_re.add_argument("--split", default="test", help="split folder (default test)")
    p_re.add_argument("--split-file", help="clip ids, one per line (PoseDiffusion's re10k_test_1800.txt)")
    p_re.add_argument("--min-frames", type=int, default=10, help="drop clips with fewer frames on disk")
    p_re.set_defaults(func=_run, dataset="re10k")

    p_sum = sub.add_parser("summarize", help="merge the results files of an output folder into summary.md/.csv")
    p_sum.add_argument("out", help="output folder of a run")
    p_sum.set_defaults(func=_summarize)
    eval_protocols.register(sub)  # mvdepth, match


def _build_predictor(args, dist):
    from tools.eval.predictors import OraclePredictor

    if args.oracle:
        return OraclePredictor(args.oracle_rot_noise, args.oracle_trans_noise, seed=args.oracle_seed)
    from tools.eval import model_predictors

    device = args.device
    if dist.active and device in ("auto", "cuda"):
        import torch

        device = f"cuda:{dist.local_rank}" if torch.cuda.is_available() else "cpu"
    return model_predictors.build(
        args.checkpoint or args.model, mode=args.mode, backbone=args.backbone, image_size=args.image_size,
        device=device, ransac_method=args.ransac_method, ransac_px=args.ransac_px,
    )  # fmt: skip


def _run(args) -> int:
    from recon.errors import UserError
    from tools.eval.benchmark import run_benchmark
    from tools.eval.distributed import init_from_env
    from tools.eval.runner import format_markdown

    dist = init_from_env()
    try:
        if args.shard and dist.active:
            raise UserError("--shard and torchrun exclude each other: under torchrun each rank is one shard")
        shard = eval_protocols.parse_shard(args.shard)
        if args.dataset == "co3d":
            from recon.datasets.co3d import Co3dReader

            reader = Co3dReader(args.root)
        else:
            from recon.datasets.re10k import Re10kReader

            reader = Re10kReader(args.root, args.split, args.split_file, args.min_frames)
        predictor = _build_predictor(args, dist)
        opts = from_flags(
            BenchmarkOptions, args, BENCHMARK_FLAGS, categories=getattr(args, "categories", None), shard=shard
        )
        stats, summary = run_benchmark(reader, predictor, args.out, opts, dist)
        if summary is not None:
            print(format_markdown(summary), end="")
            print(
                f"{stats.done} sequences evaluated, {stats.skipped} already done; results in {args.out}",
                file=sys.stderr,
            )
        return 0
    finally:
        dist.close()


def _summarize(args) -> int:
    from pathlib import Path

    from tools.eval.runner import format_markdown, summarize
    from tools.eval.sampling import Sampling

    out = Path(args.out)
    sampling_file = out / "sampling.json"
    expected = [s.key for s in Sampling.load(sampling_file).sequences] if sampling_file.is_file() else None
    print(format_markdown(summarize(out, expected)), end="")
    return 0
