"""Fixtures of the backbone tests."""

import os
from pathlib import Path

import pytest

_TESTS = Path(__file__).resolve().parents[1]
_FIXTURES = _TESTS / "fixtures"
_SHARED = Path(os.environ.get("RECON_SHARED", _TESTS.parents[1] / "shared")) / "conformance"

TINY = {"embed_dim": 64, "depth": 2, "num_heads": 4}


@pytest.fixture
def conformance_file():
    """``conformance_file(name) -> Path``: the copy in tests/fixtures, else shared/conformance; skip if neither."""

    def find(name: str) -> Path:
        for folder in (_FIXTURES, _SHARED):
            if (folder / name).is_file():
                return folder / name
        pytest.skip(f"conformance file {name} is not in tests/fixtures nor in {_SHARED}")

    return find
