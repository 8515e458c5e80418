"""Validate a reconstruction's inputs and plan its cost before any image is decoded or any model is loaded.

``plan_run(images, model, config, priors)`` checks every setting and input file and returns a ``RunPlan``: the
number of candidate images, the scene graph's pairs and decoder passes (counted in closed form by
``recon.pairs.plan_pairs``, never enumerated), and the memory the stored pair predictions will take. A bad
input raises ``InputError`` (a ``UserError``) whose one-line message names the input and what would be valid.
``RunPlan.refusal(...)`` says why a plan is too large for a budget, and what to do instead.

The images themselves are not opened: a folder is listed as ``recon.images`` lists it, so the image count is an
upper bound (unreadable files are skipped later). A video's frame count is unknown until it is decoded.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from recon.errors import UserError
from recon.pairs import BYTES_PER_PAIR_512, PairPlan, plan_pairs

if TYPE_CHECKING:
    from recon.pipeline import ReconstructConfig, UserPriors

# Bounds of the settings; wide enough for any real use, tight enough that nothing absurd reaches the model.
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 32, 4096
MAX_BATCH_SIZE = 4096
MAX_SEED = 2**32 - 1  # numpy and torch both accept it; larger seeds are not portable
# The CLI refuses larger plans without --yes: 2000 decoder passes are ~30 min of a ViT-L on a laptop GPU.
DEFAULT_MAX_DECODES = 2000
DEVICE_FORMS = "auto, cpu, cuda or cuda:K"
# recon.align.align's methods
ALIGN_METHODS = ("sparse", "dense", "mast3r-sfm", "dust3r", "feedforward", "feedforward+sparse")
_DEVICE = re.compile(r"auto|cpu|cuda(?::(\d{1,3}))?")


class InputError(UserError, ValueError):
    """A setting or input file that cannot be used; the message names it and says what would be valid."""


def check_finite(name: str, value: float | None, *, minimum: float | None = None, strict: bool = False) -> None:
    """Refuse NaN, infinities and values below ``minimum`` (or at it, when ``strict``)."""
    if value is None:
        return
    finite = isinstance(value, (int, float)) and math.isfinite(value)
    if minimum is None and not finite:
        raise InputError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and not (finite and (value > minimum if strict else value >= minimum)):
        raise InputError(f"{name} must be a number {'>' if strict else '>='} {minimum:g}, got {value!r}")


def check_int(name: str, value: int | None, lo: int, hi: int) -> None:
    """Refuse integers outside ``[lo, hi]`` (and non-integers)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InputError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")


def check_device(device: str) -> None:
    """Refuse a device string that is not ``auto``, ``cpu``, ``cuda`` or ``cuda:K`` (syntax only)."""
    if not isinstance(device, str) or _DEVICE.fullmatch(device) is None:
        raise InputError(f"device {device!r} is not supported; use {DEVICE_FORMS}")


def check_config(config: ReconstructConfig) -> None:
    """Validate the fields of a ``ReconstructConfig`` (called by its ``__post_init__``).

    The graph name is checked by ``reconstruct`` itself before any work (``recon.pairs.check_graph``), and by
    ``plan_run`` against the image count.
    """
    if config.align not in ALIGN_METHODS:
        raise InputError(f"alignment {config.align!r} is not supported; use {', '.join(ALIGN_METHODS)}")
    check_int("image size", config.image_size, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)
    check_int("batch size", config.batch_size, 1, MAX_BATCH_SIZE)
    check_int("seed", config.seed, 0, MAX_SEED)
    check_int("subsample", config.subsample, 1, 1024)
    check_finite("max RAM (GB)", config.max_ram_gb, minimum=0)
    check_finite("match confidence threshold", config.match_conf_thr, minimum=0)
    check_device(config.device)
    if config.cache_dir is not None:
        check_folder("cache folder", Path(config.cache_dir))


def check_priors(priors: UserPriors) -> None:
    """Validate ``UserPriors`` (called by its ``__post_init__``); the files are read by ``check_prior_files``."""
    check_finite("focal length", priors.focal, minimum=0, strict=True)


def check_folder(what: str, path: Path) -> None:
    """``path`` is a writable folder, or can be created as one (its nearest existing ancestor is a writable folder)."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"{what} {path}: {probe} is a file, not a folder; choose a folder")
    if not writable(probe):
        raise InputError(f"{what} {path}: {probe} is not writable; choose a folder you can write to")


def writable(folder: Path) -> bool:
    """Whether a file can be created in ``folder`` (tried for real: permission bits say nothing to root)."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def check_prior_files(priors: UserPriors) -> None:
    """Read and check ``--intrinsics`` / ``--poses`` files now, so a bad file fails before any work."""
    from recon.pipeline import read_camera_file

    for flag, path in (("--intrinsics", priors.intrinsics_file), ("--poses", priors.poses_file)):
        if path is None:
            continue
        if not Path(path).is_file():
            raise InputError(f"{flag} file not found: {path}")
        cams = read_camera_file(Path(path))
        key = "T_world_cam" if flag == "--poses" else None
        if key is not None and not any(key in c for c in cams.values()):
            raise InputError(f"{flag} {path}: no record has a 'T_world_cam' (4x4 camera-to-world)")
        if key is None and not any("K" in c or "focal" in c for c in cams.values()):
            raise InputError(f"{flag} {path}: no record has 'K' or 'fx'/'fy'/'cx'/'cy' or 'focal'")


@dataclass(frozen=True)
class ModelInfo:
    """What is known about a model before it is loaded: its name and native input size (None: unknown)."""

    name: str
    image_size: int | None
    random: bool


def check_model(model: str | os.PathLike | None, default: str) -> ModelInfo:
    """Resolve a model argument without loading it: a ``random:`` preset, a weights name or a checkpoint path.

    Raises:
        CheckpointError / UnknownWeightsError (``UserError``): unknown preset or name, missing file.
    """
    from backbone import hub
    from backbone.checkpoint import CheckpointError
    from recon.model.loading import RANDOM_PREFIX, parse_random_name
    from recon.model.presets import PRESETS

    text = str(model or default)
    if text.startswith(RANDOM_PREFIX):
        name, _ = parse_random_name(text)
        return ModelInfo(text, PRESETS[name].config.image_size, random=True)
    path = Path(text).expanduser()
    if path.exists() or hub.is_path(text):  # the one path-or-name rule (backbone.hub.resolve)
        if not path.exists():
            raise CheckpointError(f"checkpoint not found: {path}")
        return ModelInfo(text, None, random=False)
    entry = hub.find(text)  # UnknownWeightsError lists close matches
    return ModelInfo(text, entry.image_size, random=False)


def count_inputs(images: str | os.PathLike | Sequence[str | os.PathLike]) -> tuple[int | None, list[str]]:
    """Candidate images among the inputs, without opening them: ``(count, missing paths)``; count None = a video."""
    from recon.images import VIDEO_EXTENSIONS, _expand

    single = images if isinstance(images, (str, os.PathLike)) else None
    if single is not None and Path(single).is_file() and Path(single).suffix.lower() in VIDEO_EXTENSIONS:
        return None, []
    paths, skipped = _expand(images)
    return len(paths), [s.path for s in skipped]


def pair_bytes(image_size: int) -> int:
    """Stored bytes of one unordered pair at ``image_size`` (long side, 4:3; 224 is the official square crop)."""
    short = image_size if image_size == 224 else image_size * 3 // 4
    return BYTES_PER_PAIR_512 * image_size * short // (512 * 384)


@dataclass(frozen=True)
class RunPlan:
    """The planned cost of a reconstruction.

    Attributes:
        n_images: candidate images (an upper bound: unreadable ones are skipped later); None for a video.
        pairs: the scene graph's pairs for ``n_images`` (None for a video).
        image_size: network input size used for the estimate.
        model: what is known of the model.
        stored_bytes: memory of the stored pair predictions (float16), None for a video.
        ram_budget_bytes: ``max_ram_gb`` in bytes; predictions beyond it are spilled to disk.
        spill_dir: where they go: the cache folder, or a temporary folder removed when the run ends.
        working_bytes: the largest stage's working set besides the predictions (``working_set_bytes``).
    """

    n_images: int | None
    pairs: PairPlan | None
    image_size: int
    model: ModelInfo
    stored_bytes: int | None
    ram_budget_bytes: int
    spill_dir: Path
    working_bytes: int | None = None

    batch_size: int = 8

    @property
    def _px(self) -> tuple[int, int]:
        short = self.image_size if self.image_size == 224 else self.image_size * 3 // 4
        return self.image_size * short, self.batch_size

    @property
    def spills(self) -> bool:
        return self.stored_bytes is not None and self.stored_bytes > self.ram_budget_bytes

    def summary(self) -> str:
        """One line: images, graph, pairs, decoder passes, stored memory."""
        if self.pairs is None:
            return f"plan: frames of a video at {self.image_size} px (count known once decoded)"
        bound = "" if self.pairs.exact else "at most "
        line = (
            f"plan: {self.n_images} images, graph {self.pairs.graph}: {bound}{self.pairs.n_pairs} pairs "
            f"({bound}{self.pairs.n_decodes} decoder passes) at {self.image_size} px, "
            f"~{_gib(self.stored_bytes)} of stored predictions"
        )
        if self.spills:
            line += f" (beyond {_gib(self.ram_budget_bytes)} of RAM: spilled to {self.spill_dir})"
        return line

    def refusal(self, max_decodes: int | None) -> str | None:
        """Why this plan is too large (one line saying what to do), or None when it fits."""
        if self.pairs is None:
            return None
        if max_decodes is not None and self.pairs.n_decodes > max_decodes:
            return (
                f"graph {self.pairs.graph} over {self.n_images} images plans {self.pairs.n_decodes} decoder passes "
                f"(more than {max_decodes}); choose a sparser --graph (e.g. swin-3, logwin-3, retrieval-20-10) or "
                "pass --yes to run it anyway"
            )
        if self.working_bytes is not None and self.ram_budget_bytes > 0:
            try:  # the model is not loaded yet: reconstruct checks again, with it, before decoding
                prediction_ram_bytes(self.ram_budget_bytes, rss_bytes(), self.n_images, self.pairs.n_pairs, *self._px)
            except InputError as err:
                return str(err)
        if self.spills:
            free = _free_bytes(self.spill_dir)
            if free is not None and self.stored_bytes > free:
                return (
                    f"the pair predictions need ~{_gib(self.stored_bytes)}: more than the {_gib(self.ram_budget_bytes)}"
                    f" RAM budget (--max-ram-gb) plus the {_gib(free)} free at {self.spill_dir}; choose a sparser "
                    "--graph, a smaller --image-size or a --cache-dir on a larger disk"
                )
        return None


# Bytes per pixel of one view held by each stage besides the stored predictions (measured with recon bench pipeline
# --oracle, docs/performance.md "Memory"): decoding, per ordered pair of a batch (its float32 outputs, 2 maps x 29
# channels, and their temporaries; a network's activations come on top); matching one pair at a time (its 2
# predictions read back from the spill store, the float32 descriptor copies of 4 maps, the nearest-neighbour
# caches); aligning, per unordered pair (the aligners' float32 copies of both predictions' point maps and
# confidences, 2 x 2 maps x 4 floats) and per view (float64 canonical maps, the Scene's dense outputs, the export).
DECODE_BYTES_PER_PIXEL = 900
MATCH_BYTES_PER_PIXEL = 1024
ALIGN_BYTES_PER_PIXEL_PAIR = 96  # 64 of copies, the rest the sparse aligner's per-pair arrays (measured)
ALIGN_BYTES_PER_PIXEL_VIEW = 64
# The modules matching, alignment and export import once inference has begun (recon.align, roma, trimesh: ~100 MB).
LATER_IMPORT_BYTES = 128 << 20
# What the stored predictions must at least be allowed (one batch); a smaller budget cannot be honoured.
MIN_PREDICTION_RAM = 64 << 20


def working_set_bytes(n_views: int, n_pairs: int, pixels: int, batch_size: int) -> int:
    """Peak RAM a run needs besides the process's baseline and the pair predictions kept in RAM.

    The stages run one after the other while the stored predictions stay, so the run's peak is baseline +
    predictions in RAM + the largest stage's working set.

    Args:
        n_views: views; n_pairs: unordered pairs; pixels: pixels of the largest view at network size;
        batch_size: ordered pairs per decoder call.
    """
    decode = batch_size * DECODE_BYTES_PER_PIXEL * pixels
    match = MATCH_BYTES_PER_PIXEL * pixels
    align = (n_pairs * ALIGN_BYTES_PER_PIXEL_PAIR + n_views * ALIGN_BYTES_PER_PIXEL_VIEW) * pixels
    return LATER_IMPORT_BYTES + max(decode, match, align)


def prediction_ram_bytes(
    max_ram_bytes: int, baseline_bytes: int, n_views: int, n_pairs: int, pixels: int, batch_size: int
) -> int:
    """RAM the pair predictions may keep (the rest spills to disk) so that the whole run stays in ``max_ram_bytes``.

    Args:
        max_ram_bytes: the process's budget (``--max-ram-gb``).
        baseline_bytes: what the process holds already (interpreter, torch, model, views): its RSS now.
        n_views, n_pairs, pixels, batch_size: see ``working_set_bytes``.

    Returns:
        The predictions' RAM; 0 for a budget of 0 (every prediction on disk, the process not bounded).

    Raises:
        InputError: the budget cannot be met even with every prediction on disk (one line, before decoding).
    """
    if max_ram_bytes <= 0:
        return 0
    work = working_set_bytes(n_views, n_pairs, pixels, batch_size)
    free = max_ram_bytes - baseline_bytes - work
    if free < MIN_PREDICTION_RAM:
        need = baseline_bytes + work + MIN_PREDICTION_RAM
        raise InputError(
            f"--max-ram-gb {max_ram_bytes / 2**30:g} cannot be met: this run needs ~{_gib(need)} even with every "
            f"pair prediction spilled to disk ({_gib(baseline_bytes)} already in use, {_gib(work)} of working set "
            f"for {n_views} views, {n_pairs} pairs at {pixels} pixels); raise --max-ram-gb, or lower --image-size, "
            "--batch-size or the graph's pairs"
        )
    return free


def rss_bytes() -> int:
    """The process's resident memory now (Linux ``/proc/self/statm``; 0 where it cannot be read)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**30:.2f} GiB" if n >= 2**27 else f"{n / 2**20:.0f} MiB"


def _free_bytes(folder: Path) -> int | None:
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        return shutil.disk_usage(probe).free
    except OSError:
        return None


def plan_run(
    images: str | os.PathLike | Sequence[str | os.PathLike],
    model: str | os.PathLike | None,
    config: ReconstructConfig,
    priors: UserPriors,
) -> RunPlan:
    """Validate everything a run needs (inputs, model name, device, prior files) and plan its cost.

    Opens no image and loads no model; reads only the prior files (small JSON) and lists folders.

    Raises:
        UserError: the first invalid input, named, with what would be valid.
    """
    from recon.pipeline import resolve_device
    from recon.weights import default_model

    resolve_device(config.device)  # an absent CUDA fails now, not after the model is loaded
    count, missing = count_inputs(images)
    if missing:
        raise InputError(
            f"image input not found: {missing[0]}" + (f" (and {len(missing) - 1} more)" * (len(missing) > 1))
        )
    if count is not None and count < 2:
        where = images if isinstance(images, (str, os.PathLike)) else ", ".join(map(str, images))
        raise InputError(f"need at least 2 images, found {count} in {where} (jpg, png, heic, ... or one video)")
    info = check_model(model, default_model())
    check_prior_files(priors)
    size = config.image_size or info.image_size or 512
    spill = Path(config.cache_dir) if config.cache_dir is not None else Path(tempfile.gettempdir())
    budget = int(config.max_ram_gb * 2**30)
    if count is None:
        return RunPlan(None, None, size, info, None, budget, spill)
    pairs = plan_pairs(config.graph, count, bytes_per_pair=pair_bytes(size))
    short = size if size == 224 else size * 3 // 4
    work = working_set_bytes(count, pairs.n_pairs, size * short, config.batch_size)
    return RunPlan(
        count, pairs, size, info, pairs.stored_bytes(pair_bytes(size)), budget, spill, work, config.batch_size
    )
