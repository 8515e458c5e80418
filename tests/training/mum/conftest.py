"""Fixtures of the MuM recipe tests."""

import pytest
from fixture_files import fixture_path


@pytest.fixture
def fixture_file():
    """``fixture_file(name) -> Path`` in tests/fixtures (the conformance copies); missing = failure."""
    return fixture_path
