"""Fixtures of the MuM recipe tests."""

from pathlib import Path

import pytest

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"


@pytest.fixture
def fixture_file():
    """``fixture_file(name) -> Path`` in tests/fixtures (the conformance copies); skip when absent."""

    def find(name: str) -> Path:
        path = FIXTURES / name
        if not path.is_file():
            pytest.skip(f"{path} is missing")
        return path

    return find
