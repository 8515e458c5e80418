"""``recon weights list|download|verify``: the named pretrained weights and their local cache.

- ``recon weights list [--kind K] [--family F]``: one line per release (name, kind, family, size, cached?, URL),
  then the ``random:`` architectures that need no download;
- ``recon weights download NAME... [--force] [--no-progress]``: fetch into the cache with a progress bar
  (resumes a partial download; ``RECON_WEIGHTS_MIRROR`` replaces the official location);
- ``recon weights verify [NAME|PATH ...]``: size / hash when known, then the safe read and format detection a load
  does (``backbone.formats.verify``); without arguments, every cached file.

Exit codes: 0 success, 1 a download or check failed, 2 an unknown name.
"""

from __future__ import annotations

import sys

# Mirrors ``backbone.hub.KINDS`` (a test keeps them equal): importing ``backbone`` pulls in torch, which
# ``register`` must not do.
_KINDS = ("backbone", "model", "decoder")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "weights",
        help="list, download and verify named pretrained weights",
        description="Named official weights (MASt3R, DUSt3R, DUNE, DUNE-MASt3R, MuM, DINOv2) and the local cache "
        "($RECON_HOME/weights, default ~/.cache/recon/weights). See docs/weights.md.",
    )
    sub = parser.add_subparsers(dest="weights_command", metavar="ACTION", required=True)

    p_list = sub.add_parser("list", help="show every named release and whether it is cached")
    p_list.add_argument("--kind", choices=_KINDS, help="only this kind")
    p_list.add_argument("--family", help="only this family (mast3r, dust3r, dune, dune_mast3r, mum, dinov2)")
    p_list.set_defaults(func=_list)

    p_down = sub.add_parser("download", help="download weights into the cache (resumable)")
    p_down.add_argument("names", nargs="+", metavar="NAME", help="names from `recon weights list`")
    p_down.add_argument("--force", action="store_true", help="download again even if already cached")
    p_down.add_argument("--no-progress", action="store_true", help="no progress bar")
    p_down.set_defaults(func=_download)

    p_verify = sub.add_parser("verify", help="check cached weights (or checkpoint files) for size, hash and layout")
    p_verify.add_argument("names", nargs="*", metavar="NAME|PATH", help="default: every cached file")
    p_verify.add_argument("--no-hash", action="store_true", help="skip computing sha256 when none is known")
    p_verify.set_defaults(func=_verify)


UNKNOWN_SIZE = "-"  # explained once under the table


def _human(n: int | None) -> str:
    if n is None:
        return UNKNOWN_SIZE
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _check_names(names: list[str]):
    """Resolve every name first, so a typo fails before anything is downloaded."""
    from backbone import hub
    from recon.errors import UserError

    try:
        return [hub.find(n) for n in names]
    except hub.UnknownWeightsError as err:
        raise UserError(str(err)) from None


def _list(args) -> int:
    import os

    from backbone import hub
    from recon.errors import UserError

    if args.family is not None and args.family not in hub.FAMILIES:
        raise UserError(f"unknown family {args.family!r}; choose from {', '.join(hub.FAMILIES)}")
    rows = [("NAME", "KIND", "FAMILY", "SIZE", "CACHED", "URL")]
    for entry in hub.list_weights(kind=args.kind, family=args.family):
        cached = hub.cached_path(entry.name)
        size = entry.size if entry.size is not None else (cached.stat().st_size if cached else None)
        where = entry.url or f"(ships with recon: {hub.target_path(entry.name)})"
        rows.append((entry.name, entry.kind, entry.family, _human(size), "yes" if cached else "no", where))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1])
    if any(row[3] == UNKNOWN_SIZE for row in rows):
        print(f"SIZE {UNKNOWN_SIZE}: not recorded in the weights table; known once the file is downloaded")
    print(f"\ncache: {hub.weights_dir()}")
    if os.environ.get(hub.MIRROR_ENV):
        print(f"mirror: {os.environ[hub.MIRROR_ENV]} (files are fetched from <mirror>/<file name>)")
    print("licences differ and most are non-commercial: see docs/weights.md")
    if args.kind in (None, "model") and args.family is None:
        from recon.model.presets import PRESETS

        print(
            "\nno download needed: --model random:NAME[@SEED] builds an architecture with seeded random weights "
            "(checks the install; the geometry is meaningless): " + ", ".join(f"random:{name}" for name in PRESETS)
        )
    return 0


def _download(args) -> int:
    from backbone import hub

    failed = 0
    for entry in _check_names(args.names):
        try:
            path = hub.get_weights(entry.name, progress=not args.no_progress, force=args.force)
        except hub.WeightsError as err:
            print(f"error: {err}", file=sys.stderr)
            failed += 1
            continue
        print(f"{entry.name}: {path}")
    return 1 if failed else 0


def _verify(args) -> int:
    from pathlib import Path

    from backbone import hub
    from backbone.formats import verify
    from recon.errors import UserError

    targets: list[str] = list(args.names)
    if not targets:
        targets = [e.name for e in hub.list_weights() if hub.cached_path(e.name) is not None]
        if not targets:
            print(f"no cached weights in {hub.weights_dir()}; `recon weights download NAME` fetches some")
            return 0
    # Unknown names are a usage error (exit 2), reported before any file is read.
    _check_names([t for t in targets if not hub.is_path(t) and not Path(t).exists()])
    failed = 0
    for target in targets:
        try:
            result = verify(target, check_hash=not args.no_hash)
        except UserError as err:  # WeightsError (not cached, wrong size, hash or format) or CheckpointError
            print(f"FAIL {target}: {err}", file=sys.stderr)
            failed += 1
            continue
        digest = f"sha256 {result.sha256}" if result.sha256 else "sha256 not computed"
        print(f"ok   {result.name or target}: {result.path} ({_human(result.size)}, format {result.format}, {digest})")
    return 1 if failed else 0
