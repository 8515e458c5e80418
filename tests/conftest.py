"""Shared test configuration: CPU only, deterministic, small thread count."""

import os
from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).parent / "fixtures"
# shared/ lies beside the repository in this workplace; tests that read from it skip when it is absent.
SHARED = Path(os.environ.get("RECON_SHARED", Path(__file__).resolve().parents[2] / "shared"))


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread():
    """One intra-op torch thread for the whole session (set before any other fixture, restored at the end).

    The tests run tiny models and many small tensor ops; on this shared 2-core machine two threads were measured
    10-50x slower than one (OpenMP workers spinning against each other), and CI has 2 cores too, with torchrun
    tests adding processes. The conformance fixtures were also computed with one thread.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    has_cuda = torch.cuda.is_available()
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))
