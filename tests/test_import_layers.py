"""The import direction between the top-level packages, read from the source with ``ast`` (every import statement,
including those inside functions).

Floors, bottom to top: ``backbone`` < ``recon`` < ``tools`` < ``training`` / ``app`` < ``cli`` (training renders its
synthetic scenes with ``tools.synth``). A package imports only from floors below it; nothing but ``cli`` imports
``cli``. The one exception is ``recon/__main__.py``: the entry-point script of ``python -m recon`` runs the
command and is never imported by the library.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# package -> top-level packages of this project it must not import
FORBIDDEN = {
    "backbone": {"recon", "training", "tools", "app", "cli"},
    "recon": {"training", "tools", "app", "cli"},
    "training": {"app", "cli"},
    "tools": {"training", "app", "cli"},  # training reads tools.synth scenes as a data source, not the reverse
    "app": {"cli"},
}
ENTRY_POINTS = {"recon/__main__.py"}


def imported_packages(path: Path) -> set[tuple[int, str]]:
    """``(line, top-level package)`` of every absolute import in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {(node.lineno, alias.name.split(".")[0]) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.lineno, node.module.split(".")[0]))
    return found


def test_the_walk_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "import os\nfrom recon.types import View\n\ndef f():\n    from cli import main\n    import tools.eval\n"
    )
    assert imported_packages(source) == {(1, "os"), (2, "recon"), (5, "cli"), (6, "tools")}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_downward(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no sources under {package}/"
    upward = [
        f"{path.relative_to(ROOT)}:{line} imports {name}"
        for path in files
        if path.relative_to(ROOT).as_posix() not in ENTRY_POINTS
        for line, name in sorted(imported_packages(path))
        if name in FORBIDDEN[package]
    ]
    assert not upward, "imports against the layer order:\n" + "\n".join(upward)


def test_cli_is_the_top_floor():
    # cli may import every other package; what it imports must exist (a renamed module fails here, not at run time)
    names = {name for path in (ROOT / "cli").rglob("*.py") for _, name in imported_packages(path)}
    assert {"recon", "training", "tools", "app"} <= names
