"""MuM recipe tests run single-threaded (tiny models on a shared 2-core machine are faster without thread sync)."""

from pathlib import Path

import pytest
import torch

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def fixture_file():
    """``fixture_file(name) -> Path`` in tests/fixtures (the conformance copies); skip when absent."""

    def find(name: str) -> Path:
        path = FIXTURES / name
        if not path.is_file():
            pytest.skip(f"{path} is missing")
        return path

    return find
