"""One way for a test to reach a committed file or an optional test dependency, failing loudly when it is missing.

``tests/`` is on ``sys.path`` during a pytest run (its ``conftest.py`` sits in a folder without ``__init__.py``), so
every test module imports this as ``from fixture_files import fixture_path, require_extra``.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"

#: In CI (``CI=true``, as ``.ci/run`` is called) or with ``RECON_STRICT_EXTRAS=1`` a missing test extra is an error;
#: on a developer's machine without ``pip install -e ".[test]"`` the tests that need it skip and say why.
STRICT_EXTRAS = os.environ.get("CI", "").lower() == "true" or os.environ.get("RECON_STRICT_EXTRAS") == "1"


def fixture_path(name: str) -> Path:
    """``tests/fixtures/<name>``: a committed golden file. A missing one fails the test, it never skips it."""
    path = FIXTURES / name
    assert path.is_file(), f"committed fixture {path} is missing (a partial checkout?)"
    return path


def require_extra(module: str) -> ModuleType:
    """Import an optional dependency listed in the ``[test]`` extra: skip without it locally, fail in CI."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        message = f"{module} is not installed ({err}); install the test extras: pip install -e '.[test]'"
        if STRICT_EXTRAS:
            pytest.fail(message)
        pytest.skip(message)
