"""Shared helpers of the bad-input suite: a fingerprint of a folder tree, and the one-line error check."""

from __future__ import annotations

import hashlib
from pathlib import Path

from fixture_files import fixture_path

__all__ = ["fixture_path", "one_line", "tree_digest"]


def tree_digest(root: Path) -> dict[str, str]:
    """``{relative path: sha256 | 'dir' | 'link -> target'}`` of everything under ``root`` (hidden names too)."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = f"link -> {p.readlink()}"
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def one_line(err: BaseException) -> str:
    """The error's message, asserted to be a single line that a user can read (no traceback text in it)."""
    text = str(err)
    assert text and "\n" not in text and "Traceback" not in text, text
    return text
