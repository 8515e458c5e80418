"""Frozen dataclass configs loaded from and saved to JSON.

A recipe's configuration is a tree of ``@dataclass(frozen=True)`` classes whose fields carry a docstring (the
string literal right below the field, as in nerfstudio). This module converts such trees to and from plain JSON:

- ``from_dict(cls, data)``: unknown keys are errors that list the valid ones; nested dataclasses, tuples,
  ``Literal`` choices, ``X | None`` and ``dict[str, X]`` are checked and converted; missing keys take defaults.
- ``to_dict(cfg)``: JSON-ready (tuples become lists).
- ``load_json`` / ``save_json`` (atomic); ``apply_overrides(cfg, ["train.lr=1e-4", ...])`` for the command line
  (values parsed as JSON, else taken as strings);
- ``describe(cls)``: every leaf field with its default and docstring (``recon.config.field_docs``), for
  ``--list-fields``;
- ``RunConfig``: the bookkeeping fields every recipe's ``train`` section has (output folder, device, seed, bf16,
  checkpoint cadence, logging); each recipe's ``TrainConfig`` derives from it, so the keys stay ``train.*``;
- ``resolve_preset(cls, presets, name, data)``: a named preset with a parsed JSON file merged over it (what every
  recipe's ``resolve_config`` does); ``replace_sections(cfg, train={"lr": 1e-3})`` for tests and scripts.

No YAML, no object construction from files: a config file can only hold data.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import types
import typing
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from backbone import fileio
from recon.config import field_docs
from recon.errors import UserError

logger = logging.getLogger(__name__)

T = TypeVar("T")


class ConfigError(UserError, ValueError):
    """A configuration file or override does not match the config classes; the message names the field."""


class DataConfigError(UserError, ValueError):
    """A dataset that cannot be used as configured (missing or malformed folder, empty split, unknown name, bad
    resolution); the message names the dataset, the path and what would be valid. Every recipe raises this one."""


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp, where: str):
    """Check ``value`` against the annotation ``tp`` and convert lists to tuples / dicts to dataclasses."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in args:
            if option is type(None):
                continue
            try:
                return _convert(value, option, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{where}: {value!r} matches none of {[_type_name(a) for a in args]}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected an object for {tp.__name__}, got {type(value).__name__}")
        return from_dict(tp, value, where)
    if origin is tuple:
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if args and len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected an object, got {type(value).__name__}")
        kt, vt = args if args else (Any, Any)
        return {_convert(k, kt, where): _convert(v, vt, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        if not isinstance(value, Sequence) or isinstance(value, str):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        return [_convert(v, args[0] if args else Any, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], where: str = "") -> T:
    """Build the dataclass ``cls`` from plain data, recursively; unknown keys are errors.

    Raises:
        ConfigError: an unknown key (valid keys listed), a wrong type or an invalid choice, naming the field path.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or cls.__name__}: expected an object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where or cls.__name__}; valid keys: {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _convert(value, hints[name], f"{where}.{name}" if where else name)
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where or cls.__name__}: {err}") from None


def to_dict(cfg) -> dict[str, Any]:
    """A dataclass tree as JSON-ready plain data (tuples -> lists)."""

    def plain(v):
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, Mapping):
            return {str(k): plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def load_json(cls: type[T], path: str | os.PathLike) -> T:
    """Read a JSON config file into ``cls``.

    Raises:
        ConfigError: unreadable JSON (with line/column) or a mismatch with ``cls``.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
    return from_dict(cls, data)


def write_json_atomic(data: Any, path: str | os.PathLike) -> Path:
    """Write ``data`` as indented JSON atomically (``backbone.fileio``); note the argument order."""
    return fileio.write_json_atomic(path, data, indent=2)


def save_json(cfg, path: str | os.PathLike) -> Path:
    """Write the resolved config ``cfg`` (a dataclass tree) to ``path`` atomically."""
    return write_json_atomic(to_dict(cfg), path)


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # bare strings need no quotes on the command line


def apply_overrides(cfg: T, overrides: Sequence[str]) -> T:
    """Apply ``"a.b.c=value"`` overrides (value parsed as JSON, else a string) and re-validate.

    Raises:
        ConfigError: malformed override or unknown field (valid keys listed).
    """
    data = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.path=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        node = data
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"override {item!r}: no field {'.'.join(parts[: i + 1])!r}")
            node = node[part]
        if not isinstance(node, dict) or (parts[-1] not in node and not _is_free_dict(cfg, parts[:-1])):
            valid = sorted(node) if isinstance(node, dict) else []
            raise ConfigError(f"override {item!r}: no field {key!r}; valid here: {valid}")
        node[parts[-1]] = _parse_value(text)
    return from_dict(type(cfg), data)


def _is_free_dict(cfg, path: Sequence[str]) -> bool:
    """Whether the field at ``path`` is a ``dict[...]`` (free keys) rather than a dataclass."""
    obj = cfg
    for part in path:
        if isinstance(obj, Mapping):
            obj = obj.get(part)
        else:
            obj = getattr(obj, part, None)
    return isinstance(obj, Mapping)


def describe(cls, prefix: str = "") -> list[tuple[str, str, str]]:
    """``[(dotted field, default as JSON, docstring)]`` for every leaf field of a config tree (for docs/help)."""
    rows = []
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    default = cls()
    for f in dataclasses.fields(cls):
        name = f"{prefix}{f.name}"
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows.extend(describe(tp, f"{name}."))
        else:
            rows.append((name, json.dumps(to_dict(getattr(default, f.name))), docs.get(f.name, "")))
    return rows


def merge_over(base: Mapping[str, Any], update: Mapping[str, Any], replace_whole: Collection[str] = ()) -> dict:
    """``update`` merged into ``base``: nested objects merge key by key, anything else replaces the base value.

    Args:
        base: plain data (``to_dict`` of a preset).
        update: plain data read from a config file.
        replace_whole: keys (at any depth) whose object values replace the base's whole instead of merging, e.g.
            free ``dict[str, X]`` fields where the file must be able to drop a preset's key.
    """
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) and key not in replace_whole:
            out[key] = merge_over(out[key], value, replace_whole)
        else:
            out[key] = value
    return out


def resolve_preset(
    cls: type[T],
    presets: Mapping[str, T],
    preset: str,
    data: Mapping[str, Any] | None = None,
    replace_whole: Collection[str] = (),
) -> T:
    """The preset ``presets[preset]`` with ``data`` (a parsed JSON config file) merged over it, validated as ``cls``.

    Lists (e.g. a recipe's data sources) are replaced as a whole; see ``merge_over`` for objects.

    Raises:
        ConfigError: unknown preset (the available ones are listed), a file that is not a JSON object, unknown keys
            or invalid values (the field path is named).
    """
    if preset not in presets:
        raise ConfigError(f"unknown preset {preset!r}; available: {sorted(presets)}")
    data = data or {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file: expected a JSON object, got {type(data).__name__}")
    return from_dict(cls, merge_over(to_dict(presets[preset]), data, replace_whole))


def replace_sections(cfg: T, **sections) -> T:
    """``cfg`` with whole sections or fields of sections replaced: ``replace_sections(cfg, train={"lr": 1e-3})``.

    A dict given for a dataclass section replaces only the fields it names; any other value replaces the section.
    Not re-validated beyond the dataclasses' own ``__post_init__`` checks.
    """
    changes = {}
    for name, value in sections.items():
        current = getattr(cfg, name)
        if isinstance(value, dict) and dataclasses.is_dataclass(current):
            changes[name] = dataclasses.replace(current, **value)
        else:
            changes[name] = value
    return dataclasses.replace(cfg, **changes)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """The bookkeeping of a run, the same in every recipe (each recipe's ``TrainConfig`` derives from it)."""

    output_dir: str = "runs/run"
    """Run folder: checkpoints, config.json, TensorBoard events (``tb/``), final outputs."""
    bf16: bool = True
    """bf16 autocast of the forward passes on CUDA (no effect on CPU; losses stay float32)."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cuda`` or ``cpu``."""
    seed: int = 0
    """Run seed (data order, augmentations, masks; rank r seeds its own generators from it)."""
    checkpoint_every: int = 1000
    """Save a training checkpoint every this many iterations (and at the end)."""
    keep_checkpoints: int = 2
    """Training checkpoints kept in ``output_dir`` (older ones are deleted; 0: all)."""
    log_every: int = 20
    """Console line every this many iterations (TensorBoard gets every iteration; 0: none)."""
    tensorboard: bool = True
    """Write TensorBoard scalars to ``output_dir/tb`` (rank 0; needs the ``tensorboard`` package)."""

    def __post_init__(self) -> None:
        if self.checkpoint_every < 1:
            raise ValueError(f"train.checkpoint_every must be >= 1, got {self.checkpoint_every}")
