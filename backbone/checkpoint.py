"""Safe checkpoint reading shared by every format: no code from a file is ever executed.

- ``safe_load`` unpickles with ``weights_only=True`` and an allow-list (only ``argparse.Namespace``), so a
  pickle carrying a code payload is refused before anything in it runs.
- ``parse_constructor`` reads official constructor strings such as
  ``"AsymmetricMASt3R(enc_depth=24, ..., depth_mode=('exp', -inf, inf))"`` with ``ast``: literals only, ``inf``
  allowed, keyword order irrelevant; never ``eval``.
- ``load_strict`` loads a state dict and reports missing, unexpected and mis-shaped keys by name.
"""

from __future__ import annotations

import argparse
import ast
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

# The only non-tensor globals an official checkpoint may contain.
ALLOWED_GLOBALS = [argparse.Namespace]


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not match the model; the message names the file or keys."""


def safe_load(path: str | os.PathLike, map_location: str | torch.device = "cpu"):
    """``torch.load`` with ``weights_only=True`` and the allow-list above.

    Raises:
        CheckpointError: the file is missing, not a checkpoint, or pickles a forbidden object.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device=str(map_location))
    try:
        with torch.serialization.safe_globals(ALLOWED_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, ... depending on the payload
        raise CheckpointError(
            f"refusing to load {path}: it is not a plain-data checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). Only tensors, containers and "
            f"argparse.Namespace are allowed; nothing in the file was executed."
        ) from None


def _literal(node: ast.AST):
    """Evaluate a literal expression node, additionally accepting ``inf`` / ``-inf`` / ``nan``."""
    if isinstance(node, ast.Name) and node.id in ("inf", "nan"):
        return math.inf if node.id == "inf" else math.nan
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_literal(node.operand)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd):
        return +_literal(node.operand)
    if isinstance(node, ast.Tuple):
        return tuple(_literal(e) for e in node.elts)
    if isinstance(node, ast.List):
        return [_literal(e) for e in node.elts]
    if isinstance(node, ast.Dict):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values, strict=True)}
    if isinstance(node, ast.Constant):
        return node.value
    raise CheckpointError(f"unsupported expression in constructor string: {ast.dump(node)[:80]}")


def parse_constructor(text: str) -> tuple[str, dict]:
    """Parse ``"ClassName(kw=literal, ...)"`` into ``("ClassName", {kw: value})`` without evaluating it.

    Raises:
        CheckpointError: the string is not a single call of a bare name with literal keyword arguments.
    """
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise CheckpointError(f"cannot parse constructor string {text[:120]!r}: {err.msg}") from None
    call = tree.body
    if not isinstance(call, ast.Call) or not isinstance(call.func, ast.Name):
        raise CheckpointError(f"constructor string must be a call like Name(...), got {text[:120]!r}")
    if call.args:
        raise CheckpointError(f"constructor string has positional arguments: {text[:120]!r}")
    kwargs = {}
    for kw in call.keywords:
        if kw.arg is None:
            raise CheckpointError(f"constructor string uses **kwargs: {text[:120]!r}")
        kwargs[kw.arg] = _literal(kw.value)
    return call.func.id, kwargs


def _short(keys, limit: int = 12) -> str:
    keys = sorted(keys)
    more = f" ... (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def check_state_dict(
    expected: Mapping[str, torch.Tensor], given: Mapping[str, torch.Tensor], what: str = "checkpoint"
) -> None:
    """Raise ``CheckpointError`` naming every missing, unexpected and mis-shaped key."""
    missing = set(expected) - set(given)
    unexpected = set(given) - set(expected)
    shapes = [
        f"{k}: checkpoint {tuple(given[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(given))
        if tuple(expected[k].shape) != tuple(given[k].shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_short(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_short(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches ({len(shapes)}): " + "; ".join(shapes[:8]))
    if problems:
        raise CheckpointError(f"{what} does not match the model: " + " | ".join(problems))


def load_strict(module: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], what: str = "checkpoint") -> None:
    """Load ``state_dict`` into ``module`` after checking keys and shapes; errors name the offending keys.

    Works for modules built on the ``meta`` device too (``assign=True`` then materialises the tensors).
    """
    check_state_dict(module.state_dict(), state_dict, what)
    on_meta = any(p.is_meta for p in module.parameters())
    module.load_state_dict({k: v.contiguous() for k, v in state_dict.items()}, strict=True, assign=on_meta)


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Drop ``prefix`` from every key that has it (e.g. DDP's ``module.``); other keys are kept as they are."""
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state_dict.items()}
