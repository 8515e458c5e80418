"""Torch intra-op threads for the small-op loops of matching and alignment."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def intra_op_threads(n: int | None):
    """Run the block with ``n`` torch intra-op threads (``None``: leave the setting alone), then restore it.

    Matching and alignment run long loops of small ops (a few thousand to a million elements): more threads
    mostly wait for each other at every op's barrier, and on a busy machine that wait costs a scheduler time
    slice per op whenever one thread is descheduled. Measured on 2 shared cores at load 5-14: the sparse
    alignment of a 5-view case took 82 CPU-s with 2 threads and 3 with 1; a matcher tile, 30x the CPU time
    (docs/performance.md). The setting is process-wide: the block changes it for other threads too.
    """
    old = torch.get_num_threads()
    if not n or n == old:
        yield
        return
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)
