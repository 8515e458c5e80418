"""``recon bench model|pipeline|align``: print throughput and peak memory figures (never asserted in tests)."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="benchmarks that print figures")
    sub = parser.add_subparsers(dest="bench_command", metavar="WHAT", required=True)
    from tools.bench import align, model, pipeline

    for module in (model, pipeline, align):
        module.register(sub)
