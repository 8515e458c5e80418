"""``recon viz features|attention``: pictures of a model's encoder and decoder (see ``recon.viz``).

Examples::

    recon viz features a.jpg b.jpg --model dune_vits14 --out viz/      # features_0.png, features_1.png
    recon viz attention a.jpg b.jpg --model mast3r --query 12,20 --out viz/
        # query.png, attention_self.png (last encoder block), attention_cross.png (last decoder block)
"""

from __future__ import annotations

import sys

from cli.eval_protocols import add_model_args, load_model_or_exit


def register(subparsers) -> None:
    """Add ``recon viz features|attention``."""
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

    from backbone.fileio import write_bytes_atomic
    from recon import viz
    from recon.errors import UserError
    from recon.images import load_images

    model, _ = load_model_or_exit(args)
    if args.viz_command == "attention" and args.image2 and model.decoder is None:
        raise UserError("cross-attention needs a model with a decoder (--model / --checkpoint), not --encoder")
    p = model.patch_size
    files = [args.image] + ([args.image2] if args.image2 else [])
    views, skipped = load_images(
        files, size=args.image_size or model.image_size, patch_size=p, square_ok=p != 16, skip_duplicates=False
    )
    if skipped or len(views) != len(files):
        raise UserError("cannot load " + "; ".join(f"{s[0]}: {s[1]}" for s in skipped))
    images = [v.image for v in views]
    out: dict[str, np.ndarray] = {}
    if args.viz_command == "features":
        for k, picture in enumerate(viz.feature_pictures(model, images)):
            out[f"features_{k}.png"] = picture
    else:
        h, w = views[0].true_shape[0] // p, views[0].true_shape[1] // p
        if args.query:
            try:
                row, col = (int(v) for v in args.query.split(","))
            except ValueError:
                raise UserError(f"--query must look like ROW,COL, got {args.query!r}") from None
        else:
            row, col = h // 2, w // 2
        pics = viz.attention_pictures(model, images[0], images[1] if args.image2 else None, (row, col), args.block)
        out["query.png"], out["attention_self.png"] = pics.query, pics.self_attention
        if pics.cross_attention is not None:
            out["attention_cross.png"] = pics.cross_attention
            print(f"cross-attention peak of patch ({row}, {col}): patch {pics.peak} of view 2")

    folder = Path(args.out)
    existing = [n for n in out if (folder / n).exists()]
    if existing and not args.overwrite:
        raise UserError(f"{folder} already holds {', '.join(existing)}; use --overwrite or another --out")
    for name, rgb in out.items():
        write_bytes_atomic(folder / name, _png_bytes(rgb))
        print(folder / name)
    print(f"{len(out)} pictures written to {folder}", file=sys.stderr)
    return 0
