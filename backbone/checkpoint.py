"""Safe checkpoint reading shared by every format: no code from a file is ever executed.

- ``safe_load`` unpickles with ``weights_only=True`` and an allow-list (only ``argparse.Namespace``), so a
  pickle carrying a code payload is refused before anything in it runs.
- ``parse_constructor`` reads official constructor strings such as
  ``"AsymmetricMASt3R(enc_depth=24, ..., depth_mode=('exp', -inf, inf))"`` with ``ast``: literals only, ``inf``
  allowed, keyword order irrelevant; never ``eval``.
- ``load_strict`` loads a state dict and reports missing, unexpected and mis-shaped keys by name, after
  ``check_weights`` has refused NaN, inf or absurd values (naming the tensor).
- ``state_digest`` is the content hash recon writes into its own checkpoints and checks when loading them.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import logging
import math
import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch

from backbone.errors import CheckpointError  # defined there (standard library only) for backbone.hub; used from here

logger = logging.getLogger(__name__)

# The only non-tensor globals an official checkpoint may contain.
ALLOWED_GLOBALS = [argparse.Namespace]
# Largest |value| accepted in a floating-point weight: trained ViTs stay far below 100; a larger value is a
# corrupt or diverged file whose outputs would be garbage.
MAX_ABS_WEIGHT = 1e4


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

        try:
            return load_file(str(path), device=str(map_location))
        except Exception as err:  # SafetensorError, OSError, ... for a corrupt header or truncated data
            raise CheckpointError(
                f"cannot read {path}: corrupt or truncated safetensors file ({_first_line(err)})"
            ) from None
    try:
        with torch.serialization.safe_globals(ALLOWED_GLOBALS):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:  # a forbidden global: the payload was refused, not run
        raise CheckpointError(
            f"refusing to load {path}: it is not a plain-data checkpoint ({_first_line(err)}). Only tensors, "
            "containers and "
            f"argparse.Namespace are allowed; nothing in the file was executed."
        ) from None
    except Exception as err:  # RuntimeError (zip reader), EOFError, ...: cut short or damaged bytes
        raise CheckpointError(
            f"cannot read {path}: the file is truncated or corrupt ({_first_line(err)[:160]}); "
            "an interrupted copy or download? Get it again"
        ) from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:200] if text else ''}"


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
    if not isinstance(text, str) or len(text) > 20_000:
        shown = repr(text)[:120] if not isinstance(text, str) else f"a {len(text)}-character string"
        raise CheckpointError(f"constructor string must be a short string Name(...), got {shown}")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        raise CheckpointError(f"cannot parse constructor string {text[:120]!r}: {getattr(err, 'msg', err)}") from None
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
    check_weights(state_dict, what)
    on_meta = any(p.is_meta for p in module.parameters())
    module.load_state_dict({k: v.contiguous() for k, v in state_dict.items()}, strict=True, assign=on_meta)


def strip_prefix(state_dict: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Drop ``prefix`` from every key that has it (e.g. DDP's ``module.``); other keys are kept as they are."""
    return {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in state_dict.items()}


def check_weights(state_dict: Mapping[str, torch.Tensor], what: str = "checkpoint") -> None:
    """Refuse a floating-point tensor holding NaN, inf or a value beyond ``MAX_ABS_WEIGHT``, naming it.

    One ``aminmax`` per tensor (NaN propagates through it): about 20 ms per 100M values on one CPU core.
    """
    for key, t in state_dict.items():
        if not isinstance(t, torch.Tensor) or not t.is_floating_point() or t.numel() == 0 or t.is_meta:
            continue
        lo, hi = (float(v) for v in torch.aminmax(t.detach().reshape(-1)))
        if math.isnan(lo) or math.isnan(hi):
            raise CheckpointError(f"{what}: tensor {key!r} holds NaN values (a corrupt or diverged file)")
        if max(-lo, hi) > MAX_ABS_WEIGHT:
            raise CheckpointError(
                f"{what}: tensor {key!r} holds |value| {max(-lo, hi):.3g} > {MAX_ABS_WEIGHT:g} "
                "(a corrupt or diverged file)"
            )


def state_digest(state_dict: Mapping[str, torch.Tensor], extra: str = "") -> str:
    """sha256 of a state dict's content (every key, dtype, shape and byte, in key order) plus ``extra`` text.

    recon writes it into its own checkpoints and ``verify_digest`` recomputes it on load, so a flipped bit in a
    weight or in the stored config is refused instead of silently changing predictions. About 0.6 s per GB.
    """
    h = hashlib.sha256(extra.encode())
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        h.update(f"\n{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(memoryview(t.reshape(-1).view(torch.uint8).numpy()))
    return h.hexdigest()


def verify_digest(state_dict: Mapping[str, torch.Tensor], stored: str | None, extra: str, what: str) -> None:
    """Compare a recon checkpoint's stored ``digest`` with its content; files written before digests pass."""
    if stored is None:
        logger.info("%s has no content digest (written by an older recon); not verified", what)
        return
    if not isinstance(stored, str) or state_digest(state_dict, extra) != stored:
        raise CheckpointError(
            f"{what}: content digest mismatch: the file was corrupted or modified after recon wrote it; "
            "do not use it (restore it from a backup or re-export it)"
        )
