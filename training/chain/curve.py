"""Held-out learning curve of the chain's finetuning: every kept checkpoint through ``training.chain.evaluate``.

``python -m training.chain.curve --out DIR [--eval-scenes K] [--every N]`` rebuilds the model of each
``DIR/finetune/checkpoint_*.pth`` (the finetuning config it holds; the frozen student it names), exports it as
float16 safetensors (what ``export`` ships) and evaluates it on the chain's held-out scenes. One JSON line per
checkpoint goes to ``DIR/curve.jsonl`` (checkpoints already there are skipped), so the curve can be extended while
the training runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def checkpoint_model(path: Path, work: Path) -> Path:
    """The model of finetuning checkpoint ``path`` as float16 safetensors in ``work`` (returned)."""
    from recon.model.loading import save_model
    from training.common.checkpoint import load_checkpoint
    from training.common.config import from_dict
    from training.finetune.config import FinetuneConfig
    from training.finetune.model import build_model, load_parts

    ckpt = load_checkpoint(path)
    cfg = from_dict(FinetuneConfig, ckpt["config"])
    image_size = max(max(r) for r in cfg.data.resolutions)
    model = build_model(cfg.model, image_size=image_size)
    load_parts(model, ckpt["model"])
    return save_model(model.half(), work / f"{path.stem}.safetensors")


def main(argv: list[str] | None = None) -> int:
    """Evaluate the finetuning checkpoints of a chain folder; see the module doc."""
    from training.chain.evaluate import evaluate_model
    from training.chain.run import ChainOptions
    from training.common.checkpoint import CheckpointManager

    parser = argparse.ArgumentParser(prog="python -m training.chain.curve", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="chain folder")
    parser.add_argument("--eval-scenes", type=int, default=2, help="held-out scenes per layout")
    parser.add_argument("--every", type=int, default=1, help="evaluate checkpoints whose step is a multiple of this")
    parser.add_argument("--align", default=None, help="alignment (default: the pipeline's); its own curve file")
    args = parser.parse_args(argv)
    out = Path(args.out)
    found = CheckpointManager(out / "finetune").all()
    if not found:
        print(f"error: no finetuning checkpoint under {out / 'finetune'}", file=sys.stderr)
        return 2
    log = out / (f"curve_{args.align}.jsonl" if args.align else "curve.jsonl")
    done = {json.loads(line)["step"] for line in log.read_text().splitlines()} if log.is_file() else set()
    opts = ChainOptions(out, eval_scenes=args.eval_scenes)
    work = out / "curve"
    for step, path in found:
        if step in done or step % args.every:
            continue
        model = checkpoint_model(path, work)
        figures = evaluate_model(model, opts, work / f"eval_{step:08d}", align=args.align)
        with log.open("a") as f:
            f.write(json.dumps({"step": step, **figures}) + "\n")
        print(json.dumps({"step": step, **{k: v for k, v in figures["all"].items()}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
