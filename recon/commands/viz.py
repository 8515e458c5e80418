"""``recon viz features|attention``: pictures of a model's encoder and decoder (see ``recon.viz``).

Examples::

    recon viz features a.jpg b.jpg --model dune_vits14 --out viz/      # features_0.png, features_1.png
    recon viz attention a.jpg b.jpg --model mast3r --query 12,20 --out viz/
        # query.png, attention_self.png (last encoder block), attention_cross.png (last decoder block)
"""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    from recon.commands.eval_protocols import add_model_args

    parser = subparsers.add_parser(
        "viz",
        help="pictures of features and attention (PCA RGB, encoder / decoder attention for a query patch)",
        description="PNG pictures of what a model sees. Attention is recomputed for the shown block only.",
    )
    sub = parser.add_subparsers(dest="viz_command", metavar="WHAT", required=True)
    for name, text in (
        ("features", "PCA of the encoder's patch features as RGB (one basis shared by both images)"),
        ("attention", "encoder last-block self-attention and decoder cross-attention of a query patch"),
    ):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("image", help="image file (view 1)")
        p.add_argument("image2", nargs="?", help="second image (view 2; needed for cross-attention)")
        add_model_args(p, encoder=True)
        p.add_argument("--out", required=True, help="output folder for the PNGs")
        p.add_argument("--overwrite", action="store_true", help="replace PNGs of the same names in --out")
        if name == "attention":
            p.add_argument("--query", help="query patch ROW,COL on view 1's patch grid (default: the centre)")
            p.add_argument("--block", type=int, default=-1, help="block index (default -1: the last)")
        p.set_defaults(func=_run)


def _png_bytes(rgb) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def _run(args) -> int:
    from pathlib import Path

    import numpy as np
    import torch

    from recon import viz
    from recon.cli import UserError
    from recon.commands.eval_protocols import load_model_or_exit
    from recon.fileio import write_bytes_atomic
    from recon.images import ImageLoadError, load_images

    model, _ = load_model_or_exit(args)
    if args.viz_command == "attention" and args.image2 and model.decoder is None:
        raise UserError("cross-attention needs a model with a decoder (--model / --checkpoint), not --encoder")
    p = model.patch_size
    files = [args.image] + ([args.image2] if args.image2 else [])
    try:
        views, skipped = load_images(
            files, size=args.image_size or model.image_size, patch_size=p, square_ok=p != 16, skip_duplicates=False
        )
    except (ImageLoadError, FileNotFoundError) as err:
        raise UserError(str(err)) from None
    if skipped or len(views) != len(files):
        raise UserError("cannot load " + "; ".join(f"{s[0]}: {s[1]}" for s in skipped))
    device = next(model.parameters()).device
    imgs = [v.image[None].to(device) for v in views]
    pictures = [np.rint(v.image.permute(1, 2, 0).numpy() * 255).astype(np.uint8) for v in views]
    grids = [(v.true_shape[0] // p, v.true_shape[1] // p) for v in views]
    out: dict[str, np.ndarray] = {}

    if args.viz_command == "features":
        with torch.no_grad():
            feats = [model.backbone(im)[0].float().cpu() for im in imgs]  # N D each
        rgb = viz.pca_rgb(torch.cat(feats))
        start = 0
        for k, (h, w) in enumerate(grids):
            part = rgb[start : start + h * w].reshape(h, w, 3)
            start += h * w
            out[f"features_{k}.png"] = viz.upsample(np.rint(part * 255).astype(np.uint8), p)
    else:
        h, w = grids[0]
        if args.query:
            try:
                row, col = (int(v) for v in args.query.split(","))
            except ValueError:
                raise UserError(f"--query must look like ROW,COL, got {args.query!r}") from None
        else:
            row, col = h // 2, w // 2
        if not (0 <= row < h and 0 <= col < w):
            raise UserError(f"--query {row},{col} is outside view 1's {h}x{w} patch grid")
        limits = {"encoder": len(model.backbone.blocks)}
        if args.image2:
            limits["decoder"] = len(model.decoder.dec_blocks)
        for what, n in limits.items():
            if not -n <= args.block < n:
                raise UserError(f"--block {args.block} is outside the {what}'s {n} blocks")
        prefix = int(model.backbone.num_prefix_tokens)
        weights = viz.encoder_attention(model.backbone, imgs[0], args.block)[0]
        amap = viz.query_map(weights, prefix + row * w + col, (h, w), prefix)
        heat = viz.upsample(viz.colormap(amap), p)
        out["query.png"] = viz.mark_patch(pictures[0], row, col, p)
        out["attention_self.png"] = viz.mark_patch(viz.overlay(pictures[0], heat), row, col, p)
        if args.image2:
            cross = viz.decoder_cross_attention(model, imgs[0], imgs[1], args.block)
            cmap = viz.query_map(cross, row * w + col, grids[1])
            out["attention_cross.png"] = viz.overlay(pictures[1], viz.upsample(viz.colormap(cmap), p))
            peak = np.unravel_index(int(np.argmax(cmap)), cmap.shape)
            print(f"cross-attention peak of patch ({row}, {col}): patch {tuple(int(v) for v in peak)} of view 2")

    folder = Path(args.out)
    existing = [n for n in out if (folder / n).exists()]
    if existing and not args.overwrite:
        raise UserError(f"{folder} already holds {', '.join(existing)}; use --overwrite or another --out")
    for name, rgb in out.items():
        write_bytes_atomic(folder / name, _png_bytes(rgb))
        print(folder / name)
    print(f"{len(out)} pictures written to {folder}", file=sys.stderr)
    return 0
