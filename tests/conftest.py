"""Shared test configuration: CPU only, deterministic, small thread count."""

import os

import pytest
import torch


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


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", help="also run the tests marked slow (always on in CI, CI=true)")


def _run_slow(config) -> bool:
    """Slow end-to-end cases run in CI (``CI=true``), with ``--runslow``, or when ``-m`` selects by marker."""
    return config.getoption("--runslow") or os.environ.get("CI", "").lower() == "true" or bool(config.option.markexpr)


def pytest_collection_modifyitems(config, items):
    has_cuda = torch.cuda.is_available()
    run_slow = _run_slow(config)
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow end-to-end case: runs in CI (CI=true) or with --runslow"))
