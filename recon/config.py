"""Typed configs on the command line: one mechanism for ``recon run``, ``recon app``, ``recon eval`` and training.

A config is a frozen dataclass whose fields are documented, either by a string literal right below the field
(as in nerfstudio) or in an ``Attributes:`` section of the class docstring (Google style). A command lists the
fields it offers as ``Flag`` s; ``add_flags`` adds one argparse option per flag whose type, choices, default and
help come from the field, and ``from_flags`` builds the config back from the parsed namespace::

    RUN_FLAGS = (Flag("graph"), Flag("image_size"), Flag("use_exif", "--no-exif"))
    add_flags(parser, ReconstructConfig, RUN_FLAGS)
    config = from_flags(ReconstructConfig, args, RUN_FLAGS)   # the config's own checks run here

The training recipes expose their whole config tree instead, through ``--set a.b=value`` and ``--list-fields``
(``training.common.config``), which reads the field docs with ``field_docs`` from here.

Standard library only: ``recon --help`` builds every flag without importing torch.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import functools
import inspect
import re
import textwrap
import types
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

_SECTION = re.compile(r"^(\w[\w ]*):\s*$")
_ENTRY = re.compile(r"^(\w+)(?:\s*\([^)]*\))?:\s*(.*)$")


@functools.cache
def field_docs(cls) -> dict[str, str]:
    """``{field: docstring}``: the string literal after each field, else the class docstring's ``Attributes:``;
    fields of dataclass bases included (a field redeclared without a doc keeps its base's).

    The source is read only when the docstring leaves a field undocumented, and each module is parsed once
    (``recon --help`` reads every command's configs; ``inspect.getsource`` costs ~25 ms a class).
    """
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs.update(_own_field_docs(klass))
    return docs


def _own_field_docs(cls) -> dict[str, str]:
    """The docs of the fields ``cls`` itself declares (its own docstring and body, not its bases')."""
    docs = _attribute_section(inspect.cleandoc(cls.__dict__.get("__doc__") or ""))
    if all(name in docs for name in cls.__dict__.get("__annotations__", {})):
        return docs
    body = _class_body(cls)
    for node, nxt in zip(body, body[1:], strict=False):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[node.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


def _class_body(cls) -> list[ast.stmt]:
    """The statements of ``cls``'s body: from its module's parsed source, or (a nested class) its own source."""
    try:
        path = inspect.getsourcefile(cls)
        if path:
            for node in _parsed(path).body:
                if isinstance(node, ast.ClassDef) and node.name == cls.__name__:
                    return node.body
        return ast.parse(textwrap.dedent(inspect.getsource(cls))).body[0].body
    except (OSError, TypeError):
        return []


@functools.cache
def _parsed(path: str) -> ast.Module:
    return ast.parse(Path(path).read_text())


def _attribute_section(doc: str) -> dict[str, str]:
    """The entries of a Google-style ``Attributes:`` section, continuation lines joined."""
    docs: dict[str, str] = {}
    inside, current = False, None
    for line in doc.splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 0:
            inside, current = bool(_SECTION.match(line)) and line.strip() == "Attributes:", None
            continue
        if not inside:
            continue
        entry = _ENTRY.match(line.strip())
        if indent <= 4 and entry:
            current = entry.group(1)
            docs[current] = entry.group(2)
        elif current:
            docs[current] += " " + line.strip()
    return docs


@dataclasses.dataclass(frozen=True)
class Flag:
    """One config field offered on the command line.

    Attributes:
        field: the field's name, dotted for a nested config (``limits.max_images``).
        name: the option (default: ``--`` and the field's last part with dashes, ``--image-size``).
        help: replaces the field's doc where the command line needs other words.
        choices: the valid values of a ``str`` field (a ``Literal`` field has its own).
        invert: a ``bool`` field that defaults to true, set false by the flag (``--no-exif`` for ``use_exif``).
        type: parses the text (default: from the annotation: ``int``, ``float``, ``str``, ``Path``).
        metavar: shown in the usage instead of the field's name.
    """

    field: str
    name: str | None = None
    help: str | None = None
    choices: Sequence[str] | None = None
    invert: bool = False
    type: typing.Callable[[str], Any] | None = None
    metavar: str | None = None

    @property
    def option(self) -> str:
        return self.name or "--" + self.field.rsplit(".", 1)[-1].replace("_", "-")

    @property
    def dest(self) -> str:
        return self.field.replace(".", "__")


def _field(cls, path: str) -> tuple[type, Any, str, dataclasses.Field]:
    """``(owner class, annotation, doc, field)`` of the dotted ``path`` in the config class ``cls``."""
    *parents, name = path.split(".")
    owner = cls
    for part in parents:
        owner = _unwrap(_hints(owner)[part])
    fields = {f.name: f for f in dataclasses.fields(owner)}
    if name not in fields:
        raise AttributeError(f"{owner.__name__} has no field {name!r}")
    return owner, _hints(owner)[name], field_docs(owner).get(name, ""), fields[name]


@functools.cache
def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _unwrap(tp):
    """``X | None`` -> ``X``; anything else unchanged."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _default(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _help_text(doc: str) -> str:
    """A field doc as help, worded as every help text: one line, lower case first, no final period, `literals`."""
    text = " ".join(doc.replace("``", "`").split()).removesuffix(".")
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def add_flags(parser, cls, flags: Iterable[Flag], defaults=None) -> None:
    """Add one option per ``Flag`` of the config class ``cls`` to ``parser`` (or an argument group).

    Args:
        parser: an ``argparse.ArgumentParser`` or argument group.
        cls: the config dataclass.
        flags: the fields offered.
        defaults: an instance of ``cls`` whose values are the flags' defaults (default: the class's defaults).
    """
    for flag in flags:
        owner, tp, doc, field = _field(cls, flag.field)
        default = _default(field) if defaults is None else _get(defaults, flag.field)
        kwargs: dict[str, Any] = {"dest": flag.dest, "help": flag.help or _help_text(doc)}
        base = _unwrap(tp)
        if base is bool:
            if flag.invert != bool(default):
                raise ValueError(f"{flag.option}: a switch needs default {flag.invert} for {flag.field}")
            kwargs |= {"action": "store_false" if flag.invert else "store_true", "default": default}
        else:
            if typing.get_origin(base) is typing.Literal:
                kwargs["choices"] = typing.get_args(base)
                base = type(kwargs["choices"][0])
            if flag.choices is not None:
                kwargs["choices"] = tuple(flag.choices)
            kwargs |= {"type": flag.type or (base if base in (int, float, str, Path) else str), "default": default}
            if "choices" not in kwargs:  # the option's name, not the field's: --intrinsics INTRINSICS
                kwargs["metavar"] = flag.metavar or flag.option.lstrip("-").replace("-", "_").upper()
        parser.add_argument(flag.option, **kwargs)


def _get(obj, path: str):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def from_flags(cls, args: argparse.Namespace, flags: Iterable[Flag], **fields):
    """The config ``cls`` with the parsed flags' values (nested configs built too), ``fields`` given as they are.

    Raises:
        whatever the config's own checks raise (``__post_init__``).
    """
    values: dict[str, Any] = {}
    for flag in flags:
        node = values
        *parents, name = flag.field.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[name] = getattr(args, flag.dest)
    return _build(cls, {**values, **fields})


def _build(cls, values: dict[str, Any]):
    hints = _hints(cls)
    kwargs = {}
    for name, value in values.items():
        tp = _unwrap(hints[name])
        kwargs[name] = _build(tp, value) if dataclasses.is_dataclass(tp) and isinstance(value, dict) else value
    return cls(**kwargs)
