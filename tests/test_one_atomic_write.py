"""One atomic write, one file hash: read from the source with ``ast``.

Every package writes its files through ``backbone.fileio`` (``atomic_file`` and the ``write_*_atomic`` helpers) and
moves a finished file into place with ``fileio.move_into_place``. A module that renames files itself
(``os.replace``, ``os.rename``, ``Path.rename`` / ``Path.replace``, ``shutil.move``) or makes its own temporary
beside a target (``tempfile.mkstemp`` / ``NamedTemporaryFile``) is a second implementation of that write, with its
own bugs (a temporary without the pid, none removed on SIGTERM, no fsync): it fails here. ``sha256_file`` is
defined once.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("backbone", "recon", "training", "tools", "app", "cli")
HOME = "backbone/fileio.py"

MODULE_CALLS = {
    ("os", "replace"),
    ("os", "rename"),
    ("os", "renames"),
    ("shutil", "move"),
    ("tempfile", "mkstemp"),
    ("tempfile", "NamedTemporaryFile"),
}


def file_moves(path: Path) -> list[str]:
    """``line: call`` of every file rename / hand-made temporary in the module (imports of those names too)."""
    found = []
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module in {m for m, _ in MODULE_CALLS}:
            names = {a.name for a in node.names} & {n for m, n in MODULE_CALLS if m == node.module}
            found += [f"{node.lineno}: from {node.module} import {n}" for n in sorted(names)]
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        owner, attr = node.func.value, node.func.attr
        if isinstance(owner, ast.Name) and (owner.id, attr) in MODULE_CALLS:
            found.append(f"{node.lineno}: {owner.id}.{attr}")
        elif attr == "rename" or (
            # ``Path.replace(target)``: one positional argument, unlike ``str.replace(old, new)``,
            # ``dataclasses.replace(obj, **changes)`` and ``datetime.replace(tzinfo=...)``
            attr == "replace" and len(node.args) == 1 and not node.keywords
            and not (isinstance(owner, ast.Name) and owner.id == "dataclasses")
        ):  # fmt: skip
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return sorted(found)


def test_the_walk_sees_every_kind_of_rename(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "import os, shutil, tempfile, dataclasses\nfrom os import replace\n"
        "def f(tmp, path, cfg, s):\n"
        "    os.replace(tmp, path)\n    tmp.rename(path)\n    tmp.replace(path)\n    shutil.move(tmp, path)\n"
        "    tempfile.mkstemp(dir=path)\n    s.replace('a', 'b')\n    dataclasses.replace(cfg)\n"
    )
    assert file_moves(source) == [
        "2: from os import replace", "4: os.replace", "5: tmp.rename(path)", "6: tmp.replace(path)",
        "7: shutil.move", "8: tempfile.mkstemp",
    ]  # fmt: skip


@pytest.mark.parametrize("package", PACKAGES)
def test_only_backbone_fileio_renames_files(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no sources under {package}/"
    own = [
        f"{path.relative_to(ROOT)}:{hit}"
        for path in files
        if path.relative_to(ROOT).as_posix() != HOME
        for hit in file_moves(path)
    ]
    assert not own, "write through backbone.fileio (atomic_file, move_into_place) instead:\n" + "\n".join(own)


def test_the_home_is_where_the_renames_are():
    # the rule above is only meaningful while the one implementation really lives in HOME
    assert "os.replace" in {hit.split(": ", 1)[1] for hit in file_moves(ROOT / HOME)}


def test_sha256_file_is_defined_once():
    defined = [
        path.relative_to(ROOT).as_posix()
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef) and node.name == "sha256_file"
    ]
    assert defined == [HOME]
