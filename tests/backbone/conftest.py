"""Fixtures of the backbone tests."""

import pytest
from fixture_files import fixture_path

TINY = {"embed_dim": 64, "depth": 2, "num_heads": 4}


@pytest.fixture
def conformance_file():
    """``conformance_file(name) -> Path``: the committed copy in tests/fixtures (missing = failure)."""
    return fixture_path
