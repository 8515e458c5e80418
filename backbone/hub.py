"""Named pretrained weights: the table of official releases, a resumable downloader and an integrity check.

Every official release recon can load has one entry in ``WEIGHTS`` (name -> URL, file name, kind, family, native
image size, licence). ``get_weights(name)`` returns the local file, downloading it on first use:

- files live in ``weights_dir()`` = ``$RECON_HOME/weights`` (default ``$XDG_CACHE_HOME/recon/weights``, i.e.
  ``~/.cache/recon/weights``) under their official file names, so a file fetched by hand can simply be dropped
  there;
- a download streams into ``<file>.part`` with a progress bar, resumes a partial ``.part`` with an HTTP ``Range``
  request (restarting cleanly when the server ignores it), checks size / sha256 when the table knows them, and
  only then renames the file into place (``os.replace``), so a file under its final name is always complete;
- ``RECON_WEIGHTS_MIRROR`` (an ``http(s)://`` or ``file://`` base URL, or a plain folder) replaces the official
  location: the file is fetched from ``<mirror>/<file name>``;
- offline, ``WeightsUnavailableError`` names the URL and the exact path where the file can be placed by hand
  (``--checkpoint PATH`` always works without any of this).

``verify`` re-checks a cached (or any) file: size and hash when known, then a safe load (``weights_only=True``,
nothing in the file is executed) and the top-level keys its format must have.

This module imports only the standard library at import time (torch and tqdm are imported when needed), so the
CLI can list the table instantly.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import http.client
import json
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from backbone.errors import UserError

logger = logging.getLogger(__name__)

Kind = Literal["backbone", "model", "decoder"]
KINDS: tuple[str, ...] = ("backbone", "model", "decoder")

MIRROR_ENV = "RECON_WEIGHTS_MIRROR"
HOME_ENV = "RECON_HOME"

# --------------------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------------------


class WeightsError(UserError, RuntimeError):
    """Base class of every error of this module; messages are one line and say what to do."""


class UnknownWeightsError(WeightsError, ValueError):
    """A name that is not in ``WEIGHTS`` (nor an alias); the message lists close matches."""


class WeightsUnavailableError(WeightsError):
    """The file is not cached and cannot be downloaded; the message names the URL and where to place the file.

    Attributes:
        url: the URL that was (or would have been) tried.
        path: where ``get_weights`` looks for the file.
    """

    def __init__(self, message: str, url: str | None = None, path: Path | None = None):
        super().__init__(message)
        self.url = url
        self.path = path


class WeightsIntegrityError(WeightsError):
    """A file has the wrong size or sha256, cannot be loaded safely, or lacks the keys of its format."""


# --------------------------------------------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------------------------------------------

# Top-level layouts of the official files, checked by ``verify`` (facts: shared/reference/mast3r.md §3,
# dune_mum.md §8 and §10):
FORMATS: dict[str, str] = {
    "mast3r": "{'model': state dict, 'args': Namespace(model='AsymmetricMASt3R(...)'), ...}",
    "dust3r": "{'model': state dict, 'args': Namespace(model='AsymmetricCroCo3DStereo(...)'), ...}",
    "dune": "{'model': state dict, 'args': Namespace(image_size, enc_args, ...), 'iter'?}",
    "dune_mast3r": "{'dune_backbone_name': str, 'mast3r_model_str': str, 'model': state dict}",
    "state_dict": "a raw state dict {key: tensor} with 'patch_embed.proj.weight' (MuM, DINOv2)",
    "recon": "recon's own checkpoint {'arch', 'config', 'format', 'model'}",
}

_NAVER = "https://download.europe.naverlabs.com"
_MUM = "https://github.com/davnords/mum/releases/download/weights"
_DINOV2 = "https://dl.fbaipublicfiles.com/dinov2"

_LICENCE_MAST3R = (
    "CC BY-NC-SA 4.0 (non-commercial); the checkpoint also carries the licences of its training data sets "
    "(naver/mast3r CHECKPOINTS_NOTICE; the mapfree licence is very restrictive)"
)
_LICENCE_DUST3R = (
    "CC BY-NC-SA 4.0 (non-commercial); the checkpoint also carries the licences of its training data sets "
    "(see naver/dust3r)"
)
_LICENCE_DUNE = (
    "NLE DUNE licence (NAVER): non-commercial use only, no redistribution under other terms; teachers' and "
    "data sets' licences apply in addition (naver/dune 'Project NLE DUNE LICENSE.txt', ACKNOWLEDGEMENTS)"
)
_LICENCE_MUM = (
    "code MIT (davnords/MuM); the README states no separate licence for the weights and says its layers descend "
    "from DINOv3 (DINOv3 License): check before commercial use"
)
_LICENCE_DINOV2 = "Apache 2.0 (code and weights, relicensed from CC BY-NC in August 2023)"


@dataclass(frozen=True)
class WeightsEntry:
    """One released weights file.

    Attributes:
        name: recon's short name, ``<family>_<arch><patch>_<res>[_variant]`` (e.g. ``mast3r_vitl16_512``).
        url: official download URL.
        filename: file name in the cache (the official one, so a file fetched by hand can be dropped in).
        kind: ``backbone`` (encoder weights only), ``model`` (encoder + decoder + heads, loadable alone) or
            ``decoder`` (decoder + heads that need a separate backbone file).
        family: ``mast3r``, ``dust3r``, ``dune``, ``dune_mast3r``, ``mum`` or ``dinov2``.
        image_size: native (training) resolution in pixels: the long side for MASt3R/DUSt3R, the square side
            otherwise.
        patch_size: the encoder's patch size in pixels.
        format: key of ``FORMATS``: the file's top-level layout, checked by ``verify``.
        licence: licence of the weights (read it before use; most are non-commercial).
        notes: what the file holds and its quirks.
        source: the repository that publishes it.
        aliases: official names that resolve to this entry (torch.hub entry points, file stems).
        size: exact size in bytes, or None when unknown (checked after download and by ``verify``).
        sha256: hex digest, or None when unknown.
    """

    name: str
    url: str
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


def _entry(name: str, url: str, **kw) -> WeightsEntry:
    return WeightsEntry(name=name, url=url, filename=url.rsplit("/", 1)[-1], **kw)


def _mast3r_family() -> list[WeightsEntry]:
    common = dict(patch_size=16, source="https://github.com/naver/mast3r")
    return [
        _entry(
            "mast3r_vitl16_512",
            f"{_NAVER}/ComputerVision/MASt3R/MASt3R_ViTLarge_BaseDecoder_512_catmlpdpt_metric.pth",
            kind="model",
            family="mast3r",
            image_size=512,
            format="mast3r",
            licence=_LICENCE_MAST3R,
            notes="MASt3R: CroCo ViT-L/16 encoder, ViT-B decoder, catmlp+dpt heads; metric pointmaps and 24-d "
            "descriptors; trained at 512 px (long side) on several aspect ratios.",
            aliases=("MASt3R_ViTLarge_BaseDecoder_512_catmlpdpt_metric",),
            **common,
        )
    ]


def _dust3r_family() -> list[WeightsEntry]:
    common = dict(
        kind="model", family="dust3r", patch_size=16, format="dust3r", licence=_LICENCE_DUST3R,
        source="https://github.com/naver/dust3r",
    )  # fmt: skip
    base = f"{_NAVER}/ComputerVision/DUSt3R"
    return [
        _entry(
            "dust3r_vitl16_512_dpt",
            f"{base}/DUSt3R_ViTLarge_BaseDecoder_512_dpt.pth",
            image_size=512,
            notes="DUSt3R: ViT-L/16 encoder, ViT-B decoder, DPT heads (pointmaps + confidence, no descriptors); "
            "trained at 512 px on several aspect ratios.",
            aliases=("DUSt3R_ViTLarge_BaseDecoder_512_dpt",),
            **common,
        ),
        _entry(
            "dust3r_vitl16_512_linear",
            f"{base}/DUSt3R_ViTLarge_BaseDecoder_512_linear.pth",
            image_size=512,
            notes="DUSt3R with linear heads; trained at 512 px on several aspect ratios.",
            aliases=("DUSt3R_ViTLarge_BaseDecoder_512_linear",),
            **common,
        ),
        _entry(
            "dust3r_vitl16_224_linear",
            f"{base}/DUSt3R_ViTLarge_BaseDecoder_224_linear.pth",
            image_size=224,
            notes="DUSt3R with linear heads; trained at 224x224 only (square, plain patch embedding).",
            aliases=("DUSt3R_ViTLarge_BaseDecoder_224_linear",),
            **common,
        ),
    ]


def _dune_family() -> list[WeightsEntry]:
    entries = []
    # (our name, official file stem, torch.hub stem or None, width note)
    releases = [
        ("dune_vits14_336", "dune_vitsmall14_336", None, "ViT-S/14 (384-d), ~110 MB"),
        ("dune_vits14_448", "dune_vitsmall14_448", "dune_vitsmall_14_448", "ViT-S/14 (384-d), ~110 MB"),
        ("dune_vitb14_336", "dune_vitbase14_336", "dune_vitbase_14_336", "ViT-B/14 (768-d), ~420 MB"),
        ("dune_vitb14_448", "dune_vitbase14_448", "dune_vitbase_14_448", "ViT-B/14 (768-d), ~420 MB"),
        ("dune_vitb14_448_paper", "dune_vitbase14_448_paper", "dune_vitbase_14_448_paper", "ViT-B/14 (768-d)"),
    ]
    for name, stem, hub, width in releases:
        res = int(stem.split("_")[2])
        notes = (
            f"DUNE encoder {width}, 4 registers, trained at {res} px; the file also holds the distillation "
            "projectors and teacher norms (MASt3R, DINOv2, Multi-HMR)."
        )
        if name.endswith("_paper"):
            notes += " The model of the CVPR 2025 paper (trained with an earlier internal codebase)."
        if hub is None:
            notes += " Published as a URL only: naver/dune has no torch.hub entry for it."
        aliases = (stem,) if hub is None else (stem, hub, f"{hub}_encoder")
        entries.append(
            _entry(
                name,
                f"{_NAVER}/dune/{stem}.pth",
                kind="backbone",
                family="dune",
                image_size=res,
                patch_size=14,
                format="dune",
                licence=_LICENCE_DUNE,
                notes=notes,
                source="https://github.com/naver/dune",
                aliases=aliases,
            )
        )
    return entries


def _dune_mast3r_family() -> list[WeightsEntry]:
    entries = []
    releases = (("dune_mast3r_vits14_448", "vitsmall", "ViT-S"), ("dune_mast3r_vitb14_448", "vitbase", "ViT-B"))
    for name, size_word, arch in releases:
        entries.append(
            _entry(
                name,
                f"{_NAVER}/dune/dunemast3r_cvpr25_{size_word}.pth",
                kind="decoder",
                family="dune_mast3r",
                image_size=448,
                patch_size=14,
                format="dune_mast3r",
                licence=_LICENCE_DUNE + "; the decoder is a fine-tuned MASt3R decoder (CC BY-NC-SA 4.0)",
                notes=f"MASt3R decoder + heads fine-tuned on a frozen DUNE {arch}/14 encoder at 448 px, with its "
                "own input LayerNorm; holds no encoder weights. The file names its encoder in "
                "'dune_backbone_name' (a naver/dune torch.hub name; see the DUNE aliases). The official demo runs it "
                "at 518 px.",
                source="https://github.com/naver/dune",
                aliases=(f"dunemast3r_cvpr25_{size_word}",),
            )
        )
    return entries


def _mum_family() -> list[WeightsEntry]:
    common = dict(
        family="mum", image_size=256, patch_size=16, format="state_dict", licence=_LICENCE_MUM,
        source="https://github.com/davnords/MuM",
    )  # fmt: skip
    return [
        _entry(
            "mum_vitl16",
            f"{_MUM}/MuM_ViTLarge.pth",
            kind="backbone",
            notes="MuM ViT-L/16 encoder with RoPE (294 keys, raw state dict, no prefix); the README's "
            "pretraining resolution is 256 px (training code: 224).",
            aliases=("MuM_ViTLarge",),
            **common,
        ),
        _entry(
            "mum_vitl16_decoder",
            f"{_MUM}/MuM_ViTLarge_BaseDecoder.pth",
            kind="model",
            notes="MuM ViT-L/16 encoder + its multi-view pixel-reconstruction decoder (446 keys, raw state dict); "
            "the pretraining model, for finetuning or reconstruction demos.",
            aliases=("MuM_ViTLarge_BaseDecoder", "mum_vitl16_decoderb"),
            **common,
        ),
    ]


def _dinov2_family() -> list[WeightsEntry]:
    entries = []
    for arch, width in (("vits14", 384), ("vitb14", 768), ("vitl14", 1024), ("vitg14", 1536)):
        for registers in (0, 4):
            hub = f"dinov2_{arch}" + ("_reg" if registers else "")
            stem = f"dinov2_{arch}" + (f"_reg{registers}" if registers else "")
            notes = f"DINOv2 {arch[:4].upper().replace('VIT', 'ViT-')}/14 ({width}-d) encoder"
            notes += f" with {registers} register tokens" if registers else " without registers"
            notes += "; raw state dict, position embeddings for 518 px (37x37 patches)."
            if arch == "vitg14":
                notes += " ViT-g uses a SwiGLU MLP."
            entries.append(
                _entry(
                    hub,
                    f"{_DINOV2}/dinov2_{arch}/{stem}_pretrain.pth",
                    kind="backbone",
                    family="dinov2",
                    image_size=518,
                    patch_size=14,
                    format="state_dict",
                    licence=_LICENCE_DINOV2,
                    notes=notes,
                    source="https://github.com/facebookresearch/dinov2",
                    aliases=(f"{stem}_pretrain",),
                )
            )
    return entries


def _build_table() -> dict[str, WeightsEntry]:
    entries = (
        _mast3r_family() + _dust3r_family() + _dune_family() + _dune_mast3r_family() + _mum_family() + _dinov2_family()
    )
    table = {e.name: e for e in entries}
    if len(table) != len(entries):
        raise AssertionError("duplicate weights names in the table")
    return table


WEIGHTS: dict[str, WeightsEntry] = _build_table()
"""Every official release, by recon name (see ``docs/weights.md``)."""

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


# --------------------------------------------------------------------------------------------------------------
# Cache paths
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
    """Where the file of ``name`` lives (or will live) in the cache, whether or not it is there."""
    return weights_dir() / find(name).filename


def cached_path(name: str) -> Path | None:
    """The cached file of ``name`` if it is there (and of the right size when the size is known), else None."""
    entry = find(name)
    path = weights_dir() / entry.filename
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


# --------------------------------------------------------------------------------------------------------------
# Download
# --------------------------------------------------------------------------------------------------------------

_CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+|\*)-?(\d*)/(\d+|\*)")


class _Interrupted(Exception):
    """The transfer stopped before the announced end; what arrived stays in ``.part`` for the next attempt."""


def part_path(dest: Path) -> Path:
    """The temporary file a download of ``dest`` streams into."""
    return dest.with_name(dest.name + ".part")


def _user_agent() -> str:
    try:
        from importlib.metadata import version

        return f"recon3r/{version('recon3r')}"
    except Exception:  # not installed as a distribution (e.g. run from a source tree)
        return "recon3r"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


DIGESTS_FILE = ".digests.json"
"""Memo of file digests kept in a folder beside the files it describes (see ``file_digest``)."""


def file_digest(path: str | os.PathLike, memo_dir: str | os.PathLike | None = None) -> str:
    """sha256 of a file's content, memoised by (resolved path, size, mtime) in ``memo_dir/.digests.json``.

    Hashing a multi-GB checkpoint takes seconds; the memo makes a rerun free while still noticing a replaced or
    rewritten file (its size or mtime changes). ``memo_dir=None`` always hashes.
    """
    path = Path(path).resolve()
    st = path.stat()
    key, stamp = str(path), [st.st_size, st.st_mtime_ns]
    memo_path = Path(memo_dir) / DIGESTS_FILE if memo_dir is not None else None
    memo: dict = {}
    if memo_path is not None and memo_path.is_file():
        try:
            memo = json.loads(memo_path.read_text())
        except (OSError, ValueError):
            memo = {}  # a damaged memo is only a cache: rebuild it
        entry = memo.get(key) if isinstance(memo, dict) else None
        if isinstance(entry, dict) and entry.get("stamp") == stamp and isinstance(entry.get("sha256"), str):
            return entry["sha256"]
    digest = sha256_file(path)
    if memo_path is not None:
        memo = memo if isinstance(memo, dict) else {}
        memo[key] = {"stamp": stamp, "sha256": digest}
        tmp = memo_path.with_name(f"{memo_path.name}.{os.getpid()}.tmp")
        try:
            memo_path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(memo, indent=1))
            os.replace(tmp, memo_path)  # readers see the old memo or the new one
        except OSError as err:  # a read-only cache folder costs a rehash next time, nothing else
            tmp.unlink(missing_ok=True)
            logger.debug("cannot write %s: %s", memo_path, err)
    return digest


@contextlib.contextmanager
def _exclusive(dest: Path) -> Iterator[None]:
    """Hold an advisory lock so two processes never write the same ``.part`` (POSIX only).

    The lock files live in ``<folder>/.locks/`` and are never deleted: unlinking a lock file another process waits
    on would let a third process lock a fresh file and write the same ``.part`` concurrently.
    """
    try:
        import fcntl
    except ImportError:  # Windows: no flock; concurrent downloads of one file are then the user's business
        yield
        return
    lock = dest.parent / ".locks" / (dest.name + ".lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _progress_bar(total: int | None, initial: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(
        total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, disable=not enabled
    )


def _open_part(part: Path, mode: str):
    try:
        return open(part, mode)
    except OSError as err:  # a read-only or full cache folder is not a network problem: say so
        raise WeightsError(f"cannot write {part} ({err}); set {HOME_ENV} to a writable folder") from None


def _copy_stream(read, out, bar, expected: int | None) -> int:
    """Copy ``read(n)`` chunks into ``out``; raise ``_Interrupted`` if fewer than ``expected`` bytes came."""
    received = 0
    while True:
        try:
            chunk = read(_CHUNK)
        except (OSError, http.client.HTTPException) as err:  # reset / timeout mid-transfer: resumable
            raise _Interrupted(f"{type(err).__name__}: {err}") from None
        if not chunk:
            break
        try:
            out.write(chunk)
        except OSError as err:
            raise WeightsError(f"cannot write {out.name} ({err})") from None
        received += len(chunk)
        bar.update(len(chunk))
    if expected is not None and received < expected:
        raise _Interrupted(f"connection closed after {received} of {expected} bytes")
    return received


def _fetch_file_url(url: str, part: Path, desc: str, progress: bool) -> None:
    parsed = urllib.parse.urlparse(url)
    source = Path(urllib.request.url2pathname(parsed.path))
    if not source.is_file():
        raise FileNotFoundError(f"no such file {source}")
    total = source.stat().st_size
    offset = part.stat().st_size if part.is_file() else 0
    if offset > total:
        offset = 0
    with open(source, "rb") as src, _open_part(part, "ab" if offset else "wb") as out:
        src.seek(offset)
        with _progress_bar(total, offset, desc, progress) as bar:
            _copy_stream(src.read, out, bar, total - offset)


def _open_http(url: str, offset: int, timeout: float):
    headers = {"User-Agent": _user_agent()}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)


def _fetch_http(url: str, part: Path, desc: str, progress: bool, timeout: float, size: int | None) -> None:
    offset = part.stat().st_size if part.is_file() else 0
    try:
        response = _open_http(url, offset, timeout)
    except urllib.error.HTTPError as err:
        if err.code != 416 or not offset:
            raise
        # Range not satisfiable: the .part is already whole (the last attempt died before the rename) or longer
        # than the remote file (a different version); tell them apart by the total the server reports.
        match = _CONTENT_RANGE.match(err.headers.get("Content-Range", "") or "")
        if match and match.group(3) != "*" and int(match.group(3)) == offset:
            return
        logger.info("discarding %s: the server cannot resume it", part)
        part.unlink()
        offset = 0
        response = _open_http(url, 0, timeout)
    with response:
        mode = "wb"
        if response.status == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", "") or "")
            if not (offset and match and match.group(1) == str(offset)):
                # A part we did not ask for: writing it would corrupt the file, so start over.
                part.unlink(missing_ok=True)
                raise _Interrupted(f"unexpected Content-Range {response.headers.get('Content-Range')!r}")
            mode = "ab"
        elif offset:
            logger.info("the server ignored the Range request for %s; restarting from byte 0", url)
            offset = 0
        length = response.headers.get("Content-Length")
        remaining = int(length) if length and length.isdigit() else None
        total = offset + remaining if remaining is not None else size
        with _open_part(part, mode) as out, _progress_bar(total, offset, desc, progress) as bar:
            _copy_stream(response.read, out, bar, remaining)


def download_url(
    url: str,
    dest: str | os.PathLike,
    *,
    size: int | None = None,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = 30.0,
    attempts: int = 3,
    desc: str | None = None,
    keep_existing: bool = False,
) -> Path:
    """Download ``url`` to ``dest`` atomically, resuming ``<dest>.part`` and checking size / sha256 when given.

    Args:
        url: ``http(s)://`` or ``file://`` URL.
        dest: final path; it appears only once the file is complete and verified.
        size: expected size in bytes, or None.
        sha256: expected hex digest, or None.
        progress: show a tqdm progress bar on stderr.
        timeout: socket timeout in seconds for connecting and for each read.
        attempts: how many times a transfer that breaks off mid-way is resumed before giving up.
        desc: label of the progress bar (default: the file name).
        keep_existing: return at once if ``dest`` exists once the lock is held (another process just finished it).

    Returns:
        ``dest`` as a Path.

    Raises:
        WeightsUnavailableError: the URL cannot be reached or answers with an error; a partial ``.part`` is kept
            so that the next call resumes it.
        WeightsIntegrityError: the finished file has the wrong size or hash; nothing is left behind.
    """
    dest = Path(dest)
    part = part_path(dest)
    desc = desc or dest.name
    scheme = urllib.parse.urlparse(url).scheme.lower()
    if scheme not in ("http", "https", "file"):
        raise WeightsUnavailableError(f"unsupported URL scheme {scheme!r} in {url} (use http, https or file)", url)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WeightsError(f"cannot create {dest.parent} ({err}); set {HOME_ENV} to a writable folder") from None
    with _exclusive(dest):
        if keep_existing and dest.is_file():
            return dest
        for attempt in range(1, attempts + 1):
            if size is not None and part.is_file() and part.stat().st_size > size:
                part.unlink()  # longer than the release: not a prefix of it
            if size is not None and part.is_file() and part.stat().st_size == size:
                break
            try:
                if scheme == "file":
                    _fetch_file_url(url, part, desc, progress)
                else:
                    _fetch_http(url, part, desc, progress, timeout, size)
                break
            except _Interrupted as err:
                got = part.stat().st_size if part.is_file() else 0
                if attempt == attempts:
                    raise WeightsUnavailableError(
                        f"download of {url} broke off after {attempts} attempts ({err}); {got} bytes are kept in "
                        f"{part}; run the command again to resume",
                        url,
                        dest,
                    ) from None
                logger.warning("download of %s interrupted (%s); resuming from byte %d", url, err, got)
            except urllib.error.HTTPError as err:
                raise WeightsUnavailableError(f"{url} answered HTTP {err.code} {err.reason}", url, dest) from None
            except (urllib.error.URLError, OSError) as err:
                reason = getattr(err, "reason", None) or err
                raise WeightsUnavailableError(f"cannot reach {url} ({reason})", url, dest) from None
        _check_file(part, size, sha256, what=url, remove=True)
        os.replace(part, dest)
    logger.info("downloaded %s -> %s", url, dest)
    return dest


def _check_file(path: Path, size: int | None, sha256: str | None, what: str, remove: bool = False) -> str | None:
    """Check size then hash (when known); on mismatch remove the file if asked and raise. Returns the digest."""
    problem = None
    actual_size = path.stat().st_size
    digest = None
    if size is not None and actual_size != size:
        problem = f"has {actual_size} bytes, expected {size}"
    elif sha256 is not None:
        digest = sha256_file(path)
        if digest.lower() != sha256.lower():
            problem = f"has sha256 {digest}, expected {sha256}"
    if problem is None:
        return digest
    if remove:
        path.unlink(missing_ok=True)
        problem += "; the file was removed"
    raise WeightsIntegrityError(f"{what} {problem} (a different or corrupt release; do not use it)")


def get_weights(name: str, *, download: bool = True, progress: bool = True, force: bool = False) -> Path:
    """Return the local file of the named weights, downloading it into the cache on first use.

    Args:
        name: a name of ``WEIGHTS`` or an official alias (``recon weights list``).
        download: if False, never touch the network (raise when the file is not cached).
        progress: show a progress bar while downloading.
        force: download again even if a file is cached (it is replaced only once the new one is complete).

    Returns:
        Path of the complete file in ``weights_dir()``.

    Raises:
        UnknownWeightsError: unknown name (close matches are listed).
        WeightsUnavailableError: not cached and the download failed or was not allowed; names the URL and the
            path where the file can be placed by hand.
        WeightsIntegrityError: the cached or downloaded file has the wrong size or hash.
    """
    entry = find(name)
    dest = weights_dir() / entry.filename
    if dest.is_file() and not force:
        fix = f"delete it or run `recon weights download {entry.name} --force`"
        if entry.size is not None and dest.stat().st_size != entry.size:
            raise WeightsIntegrityError(
                f"{dest} has {dest.stat().st_size} bytes but {entry.name} has {entry.size}; {fix}"
            )
        # A cached file is checked against the published digest too (memoised: hashed once per change of the file).
        if entry.sha256 is not None and file_digest(dest, dest.parent).lower() != entry.sha256.lower():
            raise WeightsIntegrityError(f"{dest} does not have the sha256 of {entry.name} (corrupt or replaced); {fix}")
        return dest
    url = resolve_url(entry)
    by_hand = (
        f"download {entry.url} by hand and place it at {dest}, or pass --checkpoint PATH, or set {MIRROR_ENV} "
        "to a mirror"
    )
    if not download:
        raise WeightsUnavailableError(f"{entry.name} is not cached (downloads disabled); {by_hand}", url, dest)
    try:
        return download_url(
            url, dest, size=entry.size, sha256=entry.sha256, progress=progress, desc=entry.name, keep_existing=not force
        )
    except WeightsUnavailableError as err:
        raise WeightsUnavailableError(f"cannot get {entry.name}: {err}; {by_hand}", url, dest) from None


def resolve(name_or_path: str | os.PathLike, *, download: bool = True, progress: bool = True) -> Path:
    """An existing file path is returned as is; anything else is looked up as a weights name (``get_weights``)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    if isinstance(name_or_path, os.PathLike) or os.sep in str(name_or_path):
        raise WeightsUnavailableError(f"checkpoint file not found: {path}", None, path)
    return get_weights(str(name_or_path), download=download, progress=progress)


# --------------------------------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of a successful ``verify``.

    Attributes:
        path: the file checked.
        name: its table name, or None for a file that matches no entry.
        format: the key of ``FORMATS`` it satisfies.
        size: its size in bytes.
        sha256: its hex digest (compare with a published one, or pin it in the table).
    """

    path: Path
    name: str | None
    format: str
    size: int
    sha256: str


def _is_state_dict(obj) -> bool:
    import torch

    return (
        isinstance(obj, Mapping)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _format_problems(fmt: str, obj, image_size: int | None = None) -> list[str]:
    """What keeps ``obj`` (a loaded checkpoint) from having the layout ``fmt``; empty when it has it.

    ``image_size`` (the entry's native size), when given, must match the size the file declares, which catches a
    release saved under another release's file name (e.g. DUSt3R 224 as DUSt3R 512).
    """
    if fmt == "state_dict":
        if not _is_state_dict(obj):
            return ["is not a flat {name: tensor} state dict"]
        if not any(k.endswith("patch_embed.proj.weight") for k in obj):
            return ["has no 'patch_embed.proj.weight' key"]
        return []
    if not isinstance(obj, Mapping):
        return [f"is a {type(obj).__name__}, not a dict"]
    required = {
        "mast3r": ("model", "args"),
        "dust3r": ("model", "args"),
        "dune": ("model", "args"),
        "dune_mast3r": ("dune_backbone_name", "mast3r_model_str", "model"),
        "recon": ("arch", "config", "format", "model"),
    }[fmt]
    missing = [k for k in required if k not in obj]
    if missing:
        return [f"lacks the top-level keys {missing} (has {sorted(map(str, obj))[:8]})"]
    problems = []
    if not _is_state_dict(obj["model"]):
        problems.append("'model' is not a {name: tensor} state dict")
    if fmt in ("mast3r", "dust3r"):
        cls = {"mast3r": "AsymmetricMASt3R", "dust3r": "AsymmetricCroCo3DStereo"}[fmt]
        problems += _constructor_problems(getattr(obj["args"], "model", None), cls, "'args.model'", image_size)
    elif fmt == "dune":
        for attr in ("image_size", "enc_args"):
            if not hasattr(obj["args"], attr):
                problems.append(f"'args' has no {attr!r}")
        declared = getattr(obj["args"], "image_size", None)
        if image_size is not None and declared is not None and declared != image_size:
            problems.append(f"'args.image_size' is {declared}, expected {image_size}")
    elif fmt == "dune_mast3r":
        if not isinstance(obj["dune_backbone_name"], str):
            problems.append("'dune_backbone_name' is not a string")
        problems += _constructor_problems(obj["mast3r_model_str"], "AsymmetricMASt3R", "'mast3r_model_str'")
    return problems


def _constructor_problems(text, cls: str, what: str, image_size: int | None = None) -> list[str]:
    from backbone.checkpoint import CheckpointError, parse_constructor

    if not isinstance(text, str):
        return [f"{what} is not a constructor string"]
    try:
        name, kwargs = parse_constructor(text)
    except CheckpointError as err:
        return [f"{what}: {err}"]
    if name != cls:
        return [f"{what} builds {name}, expected {cls}"]
    declared = kwargs.get("img_size")
    if image_size is not None and isinstance(declared, tuple | list) and declared and max(declared) != image_size:
        return [f"{what} declares img_size={tuple(declared)}, expected {image_size}"]
    return []


def _entry_for_file(path: Path) -> WeightsEntry | None:
    return next((e for e in WEIGHTS.values() if e.filename == path.name), None)


def verify(name_or_path: str | os.PathLike, *, check_hash: bool = True) -> VerifyResult:
    """Check a cached weights file (by name) or any checkpoint file (by path).

    Checks, in order: the file exists; its size and sha256 match the table when known; it loads with
    ``backbone.checkpoint.safe_load`` (no pickled code runs); it has the top-level keys of its format (the entry's
    format, or for a file outside the table the first of ``FORMATS`` it satisfies).

    Args:
        name_or_path: a weights name or alias, or a path to a file.
        check_hash: compute the sha256 (reads the whole file once more).

    Returns:
        A ``VerifyResult``.

    Raises:
        UnknownWeightsError: neither a name nor an existing file.
        WeightsUnavailableError: the named weights are not cached.
        WeightsIntegrityError: wrong size / hash, unsafe or unreadable file, or wrong layout.
    """
    from backbone.checkpoint import CheckpointError, safe_load

    candidate = Path(name_or_path).expanduser()
    if candidate.is_file():
        path, entry = candidate, _entry_for_file(candidate)
    elif isinstance(name_or_path, os.PathLike) or os.sep in str(name_or_path):
        raise WeightsUnavailableError(f"no such file: {candidate}", None, candidate)
    else:
        entry = find(str(name_or_path))
        path = weights_dir() / entry.filename
        if not path.is_file():
            raise WeightsUnavailableError(
                f"{entry.name} is not cached at {path}; run `recon weights download {entry.name}`", entry.url, path
            )
    label = entry.name if entry else str(path)
    digest = _check_file(path, entry.size if entry else None, entry.sha256 if entry else None, what=str(path))
    if check_hash and digest is None:
        digest = sha256_file(path)
    try:
        obj = safe_load(path)
    except CheckpointError as err:
        raise WeightsIntegrityError(f"{label}: {err}") from None
    if entry is not None:
        problems = _format_problems(entry.format, obj, entry.image_size)
        if problems:
            raise WeightsIntegrityError(
                f"{path} is not a {entry.format} checkpoint as {entry.name} should be: {'; '.join(problems)}"
            )
        fmt = entry.format
    else:
        fmt = next((f for f in FORMATS if not _format_problems(f, obj)), None)
        if fmt is None:
            raise WeightsIntegrityError(f"{path} loads but matches no known checkpoint format ({', '.join(FORMATS)})")
    return VerifyResult(path=path, name=entry.name if entry else None, format=fmt, size=path.stat().st_size,
                        sha256=digest or "")  # fmt: skip
