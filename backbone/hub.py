"""Named pretrained weights: the table of releases (``weights.json``) and name or path -> local file.

Every release recon can load has one entry in ``WEIGHTS`` (name -> URL or embedded file, kind, family, native image
size, format, licence), read from ``backbone/weights.json``. ``resolve(name_or_path)`` is the one place where a
user's ``name or path`` becomes a file:

- an existing file or folder is returned as is; text that looks like a path (``is_path``: a separator, ``~``, or a
  checkpoint suffix) but does not exist is an error naming it;
- anything else is a weights name (or an official alias): ``get_weights`` returns the file in ``weights_dir()`` =
  ``$RECON_HOME/weights`` (default ``$XDG_CACHE_HOME/recon/weights``, i.e. ``~/.cache/recon/weights``), downloading
  it on first use with ``backbone.download`` (resumable, atomic); an *embedded* entry is a file shipped inside the
  installed packages and is never downloaded;
- ``RECON_WEIGHTS_MIRROR`` (an ``http(s)://`` or ``file://`` base URL, or a plain folder) replaces the official
  location: the file is fetched from ``<mirror>/<file name>``;
- offline, ``WeightsUnavailableError`` names the URL and the exact path where the file can be placed by hand.

Standard library only at import time, so the CLI can list the table instantly. ``backbone.formats.verify``
checks a file against its entry.
"""

from __future__ import annotations

import difflib
import json
import os
import urllib.parse
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

from backbone.download import (
    HOME_ENV,
    WeightsError,
    WeightsIntegrityError,
    WeightsUnavailableError,
    download_url,
    file_digest,
)
from backbone.errors import CheckpointError

Kind = Literal["backbone", "model", "decoder"]
KINDS: tuple[str, ...] = ("backbone", "model", "decoder")

MIRROR_ENV = "RECON_WEIGHTS_MIRROR"
TABLE_FILE = Path(__file__).with_name("weights.json")
PACKAGES_ROOT = Path(__file__).resolve().parents[1]
"""The folder that holds the installed packages; an embedded entry's path is relative to it."""
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")
"""A name ending in one of these is a path, never a weights name (``is_path``)."""


class UnknownWeightsError(WeightsError, ValueError):
    """A name that is not in ``WEIGHTS`` (nor an alias); the message lists close matches."""


@dataclass(frozen=True)
class WeightsEntry:
    """One released weights file (one object of ``weights.json``).

    Attributes:
        name: recon's short name, ``<family>_<arch><patch>_<res>[_variant]`` (e.g. ``mast3r_vitl16_512``).
        url: official download URL, or None for an embedded entry.
        filename: file name in the cache (the URL's, so a file fetched by hand can be dropped in) or of the
            embedded file.
        kind: ``backbone`` (encoder weights only), ``model`` (encoder + decoder + heads, loadable alone) or
            ``decoder`` (decoder + heads that need a separate backbone file).
        family: ``mast3r``, ``dust3r``, ``dune``, ``dune_mast3r``, ``mum``, ``dinov2``, ...
        image_size: native (training) resolution in pixels: the long side for MASt3R/DUSt3R, the square side
            otherwise.
        patch_size: the encoder's patch size in pixels.
        format: what ``backbone.formats.detect_format`` says of the file (checked by ``verify``).
        licence: licence of the weights (read it before use; most are non-commercial).
        notes: what the file holds and its quirks.
        source: the repository that publishes it.
        aliases: official names that resolve to this entry (torch.hub entry points, file stems).
        size: exact size in bytes, or None when unknown (checked after download and by ``verify``).
        sha256: hex digest, or None when unknown.
        embedded: for a file shipped inside the packages: its path relative to ``PACKAGES_ROOT``; else None.
    """

    name: str
    url: str | None
    filename: str
    kind: Kind
    family: str
    image_size: int
    patch_size: int
    format: str
    licence: str
    notes: str
    source: str
    aliases: tuple[str, ...] = field(default=())
    size: int | None = None
    sha256: str | None = None
    embedded: str | None = None


REQUIRED_FIELDS = ("name", "kind", "family", "image_size", "patch_size", "format", "licence", "notes", "source")


def load_table(path: str | os.PathLike = TABLE_FILE) -> dict[str, WeightsEntry]:
    """Read a weights table (``{"weights": [entry, ...]}``), checking fields and that names and aliases are unique.

    Raises:
        ValueError: an entry lacks a required field, has an unknown one, has both or neither of ``url`` and
            ``embedded``, or repeats a name or alias (the message names the entry).
    """
    table: dict[str, WeightsEntry] = {}
    known = {f.name for f in fields(WeightsEntry)} - {"filename"}
    taken: set[str] = set()
    for raw in json.loads(Path(path).read_text())["weights"]:
        name = raw.get("name", "?")
        missing = [k for k in REQUIRED_FIELDS if k not in raw]
        unknown = sorted(set(raw) - known)
        if missing or unknown:
            raise ValueError(f"{path}: entry {name!r} lacks {missing} or has unknown fields {unknown}")
        if (raw.get("url") is None) == (raw.get("embedded") is None):
            raise ValueError(f"{path}: entry {name!r} needs exactly one of 'url' and 'embedded'")
        source = raw.get("url") or raw["embedded"]
        entry = WeightsEntry(**{"url": None, **raw, "aliases": tuple(raw.get("aliases", ()))},
                             filename=source.rsplit("/", 1)[-1])  # fmt: skip
        names = {n.lower() for n in (entry.name, *entry.aliases)}
        if names & taken:
            raise ValueError(f"{path}: entry {name!r} repeats the name or alias {sorted(names & taken)}")
        taken |= names
        table[entry.name] = entry
    return table


WEIGHTS: dict[str, WeightsEntry] = load_table()
"""Every release, by recon name (see ``docs/weights.md``)."""

FAMILIES: tuple[str, ...] = tuple(dict.fromkeys(e.family for e in WEIGHTS.values()))


def _aliases() -> dict[str, str]:
    return {alias.lower(): e.name for e in WEIGHTS.values() for alias in (e.name, *e.aliases)}


def find(name: str) -> WeightsEntry:
    """Return the entry called ``name`` (recon name or an official alias, case-insensitive).

    Raises:
        UnknownWeightsError: no such name; the message lists close matches.
    """
    if name in WEIGHTS:
        return WEIGHTS[name]
    aliases = _aliases()
    key = name.lower().removesuffix(".pth")
    if key in aliases:
        return WEIGHTS[aliases[key]]
    close = difflib.get_close_matches(key, list(aliases), n=5, cutoff=0.5)
    close = list(dict.fromkeys(aliases[c] for c in close))
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise UnknownWeightsError(f"unknown weights {name!r}; {hint}`recon weights list` shows every name")


def list_weights(kind: str | None = None, family: str | None = None) -> list[WeightsEntry]:
    """Entries of the table in order, optionally filtered by ``kind`` and ``family``."""
    return [e for e in WEIGHTS.values() if (kind is None or e.kind == kind) and (family is None or e.family == family)]


def entry_for_file(path: str | os.PathLike) -> WeightsEntry | None:
    """The entry whose file name ``path`` has (a ``--checkpoint`` under an official name), or None."""
    return next((e for e in WEIGHTS.values() if e.filename == Path(path).name), None)


# --------------------------------------------------------------------------------------------------------------
# Local files
# --------------------------------------------------------------------------------------------------------------


def recon_home() -> Path:
    """``$RECON_HOME``, else ``$XDG_CACHE_HOME/recon``, else ``~/.cache/recon``."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "recon"


def weights_dir() -> Path:
    """The folder where named weights are cached: ``recon_home() / "weights"``."""
    return recon_home() / "weights"


def target_path(name: str) -> Path:
    """Where the file of ``name`` lives (or will live): in the cache, or inside the packages for an embedded one."""
    entry = find(name)
    return PACKAGES_ROOT / entry.embedded if entry.embedded else weights_dir() / entry.filename


def cached_path(name: str) -> Path | None:
    """The local file of ``name`` if it is there (and of the right size when the size is known), else None."""
    entry = find(name)
    path = target_path(entry.name)
    if not path.is_file():
        return None
    if entry.size is not None and path.stat().st_size != entry.size:
        return None
    return path


def resolve_url(entry: WeightsEntry) -> str:
    """The URL to fetch ``entry`` from: ``$RECON_WEIGHTS_MIRROR/<file name>`` when a mirror is set, else official.

    A mirror is a flat folder holding the official file names, given as an ``http(s)://`` or ``file://`` base URL or
    as a plain local folder.
    """
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if not mirror:
        return entry.url
    if "://" not in mirror:
        mirror = Path(mirror).expanduser().resolve().as_uri()
    return f"{mirror.rstrip('/')}/{urllib.parse.quote(entry.filename)}"


def _check_local(entry: WeightsEntry, path: Path, fix: str) -> Path:
    """A local file of ``entry`` with the size and sha256 of the table (the digest memoised beside the file)."""
    if entry.size is not None and path.stat().st_size != entry.size:
        raise WeightsIntegrityError(f"{path} has {path.stat().st_size} bytes but {entry.name} has {entry.size}; {fix}")
    memo = None if entry.embedded else path.parent  # never write a digest memo into the installed packages
    if entry.sha256 is not None and file_digest(path, memo).lower() != entry.sha256.lower():
        raise WeightsIntegrityError(f"{path} does not have the sha256 of {entry.name} (corrupt or replaced); {fix}")
    return path


def get_weights(name: str, *, download: bool = True, progress: bool = True, force: bool = False) -> Path:
    """Return the local file of the named weights, downloading it into the cache on first use.

    Args:
        name: a name of ``WEIGHTS`` or an official alias (``recon weights list``).
        download: if False, never touch the network (raise when the file is not cached).
        progress: show a progress bar while downloading.
        force: download again even if a file is cached (it is replaced only once the new one is complete).

    Returns:
        Path of the complete file in ``weights_dir()`` (or inside the packages for an embedded entry).

    Raises:
        UnknownWeightsError: unknown name (close matches are listed).
        WeightsUnavailableError: not cached and the download failed or was not allowed, or an embedded file is
            missing from the installation; names the URL and the path where the file can be placed by hand.
        WeightsIntegrityError: the cached or downloaded file has the wrong size or hash.
    """
    entry = find(name)
    dest = target_path(entry.name)
    if entry.embedded:
        if not dest.is_file():
            raise WeightsUnavailableError(f"{entry.name} ships with recon at {dest}, but the file is missing: "
                                          "reinstall recon3r", None, dest)  # fmt: skip
        return _check_local(entry, dest, "reinstall recon3r")
    if dest.is_file() and not force:
        return _check_local(entry, dest, f"delete it or run `recon weights download {entry.name} --force`")
    url = resolve_url(entry)
    by_hand = (
        f"download {entry.url} by hand and place it at {dest}, or pass --checkpoint PATH, or set {MIRROR_ENV} "
        "to a mirror"
    )
    if not download:
        raise WeightsUnavailableError(
            f"{entry.name} is not cached at {dest}; run `recon weights download {entry.name}`, or {by_hand}", url, dest
        )
    try:
        return download_url(
            url, dest, size=entry.size, sha256=entry.sha256, progress=progress, desc=entry.name, keep_existing=not force
        )
    except WeightsUnavailableError as err:
        raise WeightsUnavailableError(f"cannot get {entry.name}: {err}; {by_hand}", url, dest) from None


def is_path(name_or_path: str | os.PathLike) -> bool:
    """The one rule that tells a path from a weights name: a ``PathLike``, or text with a path separator, a
    leading ``~`` or a checkpoint suffix (``CHECKPOINT_SUFFIXES``); anything else is a name."""
    if isinstance(name_or_path, os.PathLike):
        return True
    text = str(name_or_path)
    separators = [s for s in (os.sep, os.altsep, "/") if s]
    return any(s in text for s in separators) or text.startswith("~") or Path(text).suffix in CHECKPOINT_SUFFIXES


def resolve(name_or_path: str | os.PathLike, *, download: bool = True, progress: bool = True) -> Path:
    """A checkpoint path or a weights name -> the local file (or folder), downloading named weights on first use.

    An existing file or folder is returned as is; a path (``is_path``) that does not exist is an error; anything
    else is looked up in the table (``get_weights``).

    Raises:
        CheckpointError: a path that does not exist.
        UnknownWeightsError, WeightsUnavailableError, WeightsIntegrityError: see ``get_weights``.
    """
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    if is_path(name_or_path):
        raise CheckpointError(f"checkpoint not found: {path}")
    return get_weights(str(name_or_path), download=download, progress=progress)
