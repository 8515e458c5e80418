"""The installed numerical dependencies are inside the ranges pyproject.toml declares, and their versions are
printed into the test log (``-rA`` / ``-s``), so a CI run records what it ran on."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
NUMERICAL = ("torch", "numpy", "scipy", "opencv-python-headless")


def _declared() -> dict[str, Requirement]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["eval"]]
    return {r.name: r for r in reqs if r.name in NUMERICAL}


def test_every_numerical_dependency_declares_a_bounded_range():
    declared = _declared()
    assert set(declared) == set(NUMERICAL)
    for name, req in declared.items():
        ops = {spec.operator for spec in req.specifier}
        assert ">=" in ops and "<" in ops, f"{name}: {req} needs a lower and an upper bound"


@pytest.mark.parametrize("name", NUMERICAL)
def test_installed_version_is_in_the_declared_range(name):
    installed = importlib.metadata.version(name)
    print(f"{name}=={installed}")  # the record of what this run used
    req = _declared()[name]
    # local build tags (torch's "+cpu") are not part of the release number the range speaks about
    assert req.specifier.contains(installed.split("+")[0], prereleases=True), f"{name} {installed} not in {req}"
