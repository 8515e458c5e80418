"""``recon bench model|pipeline|align``: print throughput and peak memory figures (never asserted in tests)."""

from __future__ import annotations


def register(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="benchmarks that print figures")
    sub = parser.add_subparsers(dest="bench_command", metavar="WHAT", required=True)
    for module_name in ("recon.bench.model", "recon.bench.pipeline", "recon.bench.align"):
        import importlib

        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name == module_name:
                continue
            raise
        module.register(sub)
