"""``recon bench model|pipeline|align``: print throughput and peak memory figures (never asserted in tests)."""

from __future__ import annotations

from tools.bench import align, model, pipeline


def register(subparsers) -> None:
    """Add ``recon bench`` and its benchmarks."""
    parser = subparsers.add_parser("bench", help="benchmarks that print figures")
    sub = parser.add_subparsers(dest="bench_command", metavar="WHAT", required=True)
    for module in (model, pipeline, align):
        module.register(sub)
