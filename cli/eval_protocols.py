"""``recon eval mvdepth`` and ``recon eval match``: what a backbone sees in 3D beyond camera pose.

Examples::

    recon eval mvdepth --dataset eth3d --root /data/rmvd/eth3d --model dune_vitb14 --out runs/dune_b
    recon eval match --protocol cosine --dataset navi --root /data/navi --model dune_vits14 --out runs/m

Registered under ``recon eval`` by ``cli.eval``. See docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import sys


def parse_shard(text: str | None) -> tuple[int, int]:
    """``--shard I/N`` as ``(i, n)`` with ``0 <= i < n``; none given: ``(0, 1)``.

    Raises:
        UserError: not of the form I/N, or I out of range.
    """
    from recon.errors import UserError

    if not text:
        return 0, 1
    try:
        i, n = (int(v) for v in text.split("/"))
    except ValueError:
        raise UserError(f"--shard must look like I/N (e.g. 0/4), got {text!r}") from None
    if not 0 <= i < n:
        raise UserError(f"--shard {text}: need 0 <= I < N")
    return i, n


def add_model_args(p: argparse.ArgumentParser, encoder: bool = False) -> None:
    """``--model`` / ``--checkpoint`` (one required; ``--encoder`` too where a bare backbone is enough),
    ``--backbone``, ``--image-size``, ``--device``."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="named weights (see `recon weights list`), random:<preset>, or a checkpoint path")
    src.add_argument("--checkpoint", help="checkpoint file (official MASt3R / DUNE-MASt3R or recon's own)")
    if encoder:
        src.add_argument("--encoder", help="a bare backbone checkpoint or name (DUNE, MuM, DINOv2, CroCo encoder)")
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
    p.add_argument(
        "--dataset", required=True, choices=("kitti", "dtu", "eth3d", "tanks", "scannet"), help="Robust MVD set"
    )
    p.add_argument("--root", required=True, help="the set's root folder (holding samples.json)")
    p.add_argument("--samples", help="sample list (default ROOT/samples.json; layout in docs/evaluation.md)")
    add_model_args(p)
    p.add_argument(
        "--alignment",
        choices=("median", "translation", "none"),
        default="median",
        help="median (default): per-image median ratio; translation: true / predicted baseline; none: metric",
    )
    p.add_argument("--max-samples", type=int, help="only the first N samples (a quick look)")
    p.add_argument("--shard", help="evaluate only shard I of N (I/N)")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first failing sample (default: record it)")
    p.add_argument("--out", required=True, help="output folder (one per model; sets go to subfolders)")
    p.set_defaults(func=_mvdepth)
    register_match(sub)


def load_model_or_exit(args):
    """The model named by ``--model`` / ``--checkpoint`` on ``--device``; a load failure is a user error."""
    import torch

    import recon
    from recon.errors import UserError

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    encoder = getattr(args, "encoder", None)
    source = encoder or args.checkpoint or args.model
    try:
        if encoder:
            import backbone

            return EncoderOnly(backbone.load(encoder, device=device).eval()), str(source)
        return recon.load_model(source, backbone=args.backbone, device=device).eval(), str(source)
    except UserError as err:
        raise UserError(f"cannot load model {source!r}: {err}") from None


class EncoderOnly:
    """A bare backbone dressed as much of a model as the encoder probes need (no decoder).

    Attributes:
        backbone: the encoder; patch_size: its patch; image_size: 518 for patch 14 (DINOv2 / DUNE), else 512.
    """

    decoder = None

    def __init__(self, backbone):
        self.backbone = backbone
        self.patch_size = int(backbone.spec.patch_size)
        self.image_size = 518 if self.patch_size == 14 else 512

    def parameters(self):
        return self.backbone.parameters()


def _mvdepth(args) -> int:
    import torch

    from recon.errors import UserError
    from tools.eval.mvdepth import MvdReader, format_mvdepth, run_mvdepth, summarize_mvdepth

    if args.max_samples is not None and args.max_samples < 1:
        raise UserError("--max-samples must be at least 1")
    shard = parse_shard(args.shard)
    reader = MvdReader(args.root, args.dataset, args.samples)
    model, label = load_model_or_exit(args)
    with torch.inference_mode():
        done, skipped = run_mvdepth(
            model, reader, args.out, alignment=args.alignment, image_size=args.image_size, label=label,
            shard=shard, max_samples=args.max_samples, fail_fast=args.fail_fast,
        )  # fmt: skip
    summary = summarize_mvdepth(args.out)
    print(format_mvdepth(summary), end="")
    print(f"{done} samples evaluated, {skipped} already done; results in {args.out}", file=sys.stderr)
    return 0


def register_match(sub) -> None:
    p = sub.add_parser(
        "match",
        help="feature-matching probes of the frozen encoder (cosine recall / EPE, linear probe pose AUC)",
        description="cosine: Probe3D recall (3D 1/2/5 cm, 2D 5/25/50 px) and dense EPE, with and without the "
        "encoder's final LayerNorm (the better is reported); linear-probe: a square projection trained on frozen "
        "features + kernel-softmax matcher, pose AUC@5/10/20. See docs/evaluation.md.",
    )
    p.add_argument("--protocol", required=True, choices=("cosine", "linear-probe"), help="probe (see the description)")
    p.add_argument("--dataset", required=True, choices=("navi", "megadepth1500", "scannet1500"), help="pair set")
    p.add_argument("--root", required=True, help="the set's root folder (holding pairs.json)")
    p.add_argument("--pairs", help="pair list (default ROOT/pairs.json)")
    add_model_args(p, encoder=True)
    p.add_argument("--max-pairs", type=int, help="only the first N pairs (a quick look)")
    p.add_argument("--train-root", help="linear-probe: root of the training pairs (its pairs.json)")
    p.add_argument("--steps", type=int, default=25000, help="linear-probe steps (MuM: 25000)")
    p.add_argument("--batch", type=int, default=8, help="linear-probe pairs per step (MuM: 8)")
    p.add_argument("--eval-every", type=int, default=2500, help="linear-probe validation interval (MuM: 2500)")
    p.add_argument("--lr", type=float, nargs="+", default=[1e-3], help="linear-probe learning rate(s) to sweep")
    p.add_argument("--weight-decay", type=float, nargs="+", default=[0.0], help="weight decay(s) to sweep")
    p.add_argument("--out", required=True, help="output folder (match_<protocol>_<dataset>.json / .md)")
    p.set_defaults(func=_match)

    c = sub.add_parser(
        "match-pairs",
        help="write pairs.json for `recon eval match` from release files (ScanNet-1500: LoFTR's test npz)",
    )
    c.add_argument("dataset", choices=("scannet1500",), help="the set whose release files are read")
    c.add_argument("--root", required=True, help="folder holding the scene folders (sceneXXXX_XX/color, pose)")
    c.add_argument("--npz", required=True, help="LoFTR's test.npz (pair names)")
    c.add_argument("--intrinsics", required=True, help="LoFTR's intrinsics.npz")
    c.add_argument("--out", help="output file (default ROOT/pairs.json; never overwritten)")
    c.set_defaults(func=_match_pairs)


def _match(args) -> int:
    import json
    from pathlib import Path

    from backbone.fileio import write_json_atomic, write_text_atomic
    from recon.errors import UserError
    from tools.eval import matchprobe as mp

    if args.max_pairs is not None and args.max_pairs < 1:
        raise UserError("--max-pairs must be at least 1")
    if args.protocol == "linear-probe" and not args.train_root:
        raise UserError("--protocol linear-probe needs --train-root (pairs to train the projection on)")
    for name in ("steps", "batch", "eval_every"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if min(args.lr) <= 0 or min(args.weight_decay) < 0:
        raise UserError("--lr must be positive and --weight-decay non-negative")
    reader = mp.MatchReader(args.root, args.dataset, args.pairs)
    train_reader = mp.MatchReader(args.train_root, args.dataset) if args.train_root else None
    model, label = load_model_or_exit(args)
    size, patch = args.image_size or model.image_size, model.patch_size
    variants = {"ln": mp.backbone_features(model, True), "no-ln": mp.backbone_features(model, False)}
    if args.protocol == "cosine":
        result = mp.run_cosine(reader, variants, size, patch, args.max_pairs)
        best = result["variants"][result["best"]]
        lines = [f"| {k} | {v:.2f} |" for k, v in best.items()]
    else:
        pairs = reader.pairs[: args.max_pairs] if args.max_pairs else reader.pairs
        test = [mp.load_pair(reader, p, size, patch) for p in pairs]
        if not all(p.has_depth for p in train_reader.pairs):
            raise UserError("every training pair needs depth0 / depth1 (the probe learns from true matches)")
        train = [mp.load_pair(train_reader, p, size, patch) for p in train_reader.pairs]
        n_val = max(1, len(train) // 10)
        result = {"variants": {}}
        for name, fn in variants.items():
            # the sweep picks by validation NLL (training pairs held out), never by the test pairs' AUC
            runs = []
            for lr in args.lr:
                for wd in args.weight_decay:
                    cfg = mp.ProbeConfig(steps=args.steps, batch=args.batch, lr=lr, weight_decay=wd,
                                         eval_every=args.eval_every)  # fmt: skip
                    matcher, history = mp.train_linear_probe(fn, train[n_val:] or train, train[:n_val], cfg)
                    runs.append((min(h["val_nll"] for h in history), lr, wd, matcher, history))
            val, lr, wd, matcher, history = min(runs, key=lambda r: r[0])
            errs = mp.probe_pose_errors(matcher, fn, test)
            result["variants"][name] = {**mp.pose_auc(errs), "lr": lr, "weight_decay": wd, "val_nll": val,
                                        "history": history}  # fmt: skip
        result["best"] = max(result["variants"], key=lambda k: result["variants"][k]["AUC@10"])
        best = {k: v for k, v in result["variants"][result["best"]].items() if k != "history"}
        lines = [f"| {k} | {v:.2f} |" for k, v in best.items()]
    result |= {"protocol": args.protocol, "dataset": args.dataset, "model": label}
    stem = Path(args.out) / f"match_{args.protocol}_{args.dataset}"
    write_json_atomic(stem.with_suffix(".json"), json.loads(json.dumps(result, default=float)))
    table = f"{args.dataset}, {args.protocol}, best variant: {result['best']}\n\n| metric | value |\n|---|---|\n"
    table += "\n".join(lines) + "\n"
    write_text_atomic(stem.with_suffix(".md"), table)
    print(table, end="")
    return 0


def _match_pairs(args) -> int:
    from pathlib import Path

    from backbone.fileio import write_json_atomic
    from recon.errors import UserError
    from tools.eval import matchprobe as mp

    out = Path(args.out) if args.out else Path(args.root) / "pairs.json"
    if out.exists():
        raise UserError(f"{out} exists; remove it or name another --out")
    data = mp.scannet1500_pairs(args.root, args.npz, args.intrinsics)
    write_json_atomic(out, data)
    with_depth = sum("depth0" in p for p in data["pairs"])
    print(f"{out}: {len(data['pairs'])} pairs ({with_depth} with depth)")
    return 0
