"""CPU seconds of one feed-forward pass: ``python -m recon.feedforward.bench --views 8 32 128 --size 224``.

Random weights (speed does not depend on them). Prints, per view count, the process CPU seconds of one forward
pass (after one warm-up pass at 2 views) and the load average, since wall time means little on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

import backbone
from recon.feedforward.model import build_model


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m recon.feedforward.bench", description=__doc__.splitlines()[0])
    p.add_argument("--views", type=int, nargs="+", default=[8, 32, 128])
    p.add_argument("--size", type=int, default=224, help="square image side (multiple of the patch size)")
    p.add_argument("--preset", default="small")
    p.add_argument("--encoder", default="dune_vits14", help="registered backbone family (random weights)")
    p.add_argument("--encoder-depth", type=int, default=None, help="encoder blocks (default: the family's)")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = {"depth": args.encoder_depth} if args.encoder_depth else {}
    model = build_model(backbone.create(args.encoder, **overrides), args.preset).eval()
    n_enc = sum(p.numel() for p in model.encoder.parameters())
    n_heads = sum(p.numel() for p in model.parameters()) - n_enc
    print(f"preset {args.preset} ({model.config.dense_head} heads), encoder {args.encoder} "
          f"{overrides or '(full size)'}: {n_enc / 1e6:.1f} M frozen + {n_heads / 1e6:.2f} M trained parameters; "
          f"{args.size} px, {args.threads} thread(s), load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    with torch.no_grad():
        model(torch.rand(1, 2, 3, args.size, args.size))
        for v in args.views:
            x = torch.rand(1, v, 3, args.size, args.size)
            t = time.process_time()
            model(x)
            cpu = time.process_time() - t
            print(f"{v:4d} views: {cpu:8.2f} CPU s ({cpu / v * 1000:.0f} ms per view), load {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
