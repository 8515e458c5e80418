"""Batched pair inference that encodes every image exactly once.

The official ``inference()`` re-encodes both images of every ordered pair (2·N(N-1) encoder calls for a complete
graph) and keeps every output in RAM. Here each view is encoded once (N encoder calls), the decoder runs on
batches of pairs in both orders, and each ``PairPrediction`` is stored compactly (float16) in a ``PairStore``
that spills to disk past a RAM budget, so hundreds of images fit.

A ``PairStore`` with a ``cache_dir`` is also a resume point: pairs already on disk for the same model and the
same images are loaded instead of recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from backbone.fileio import atomic_file
from recon.progress import step
from recon.types import PairPrediction, View

logger = logging.getLogger(__name__)

_FIELDS = ("pts3d_i", "pts3d_j", "conf_i", "conf_j", "desc_i", "desc_j", "desc_conf_i", "desc_conf_j")


@dataclass(frozen=True)
class InferenceConfig:
    """Knobs of ``run_inference``.

    Attributes:
        batch_size: ordered pairs per decoder call.
        encode_batch_size: images per encoder call.
        storage_dtype: dtype of stored point maps and descriptors (float16 halves RAM; pts3d keep ~3 significant
            digits). Confidences are always stored as float32: float16 turns conf > 65504 into inf (then zero
            weight), and a confidence is one channel of 29.
        max_ram_bytes: predictions beyond this budget are written to ``cache_dir`` (if given) instead of RAM.
        cache_dir: folder for spilled / resumable predictions; ``None`` keeps everything in RAM.
        autocast: run the network under bf16 autocast on CUDA (heads stay float32, as official).
        spill_dir: without ``cache_dir``, predictions beyond ``max_ram_bytes`` go to a private temporary folder
            made inside this one, removed by ``PairStore.close()``; ``None`` keeps everything in RAM.
    """

    batch_size: int = 8
    encode_batch_size: int = 8
    storage_dtype: torch.dtype = torch.float16
    max_ram_bytes: int = 4 << 30
    cache_dir: Path | None = None
    autocast: bool = True
    spill_dir: Path | None = None


def _pair_nbytes(pred: PairPrediction) -> int:
    return sum(t.numel() * t.element_size() for f in _FIELDS if (t := getattr(pred, f)) is not None)


class PairStore(Sequence[PairPrediction]):
    """An append-only sequence of ``PairPrediction`` kept in RAM up to a budget, then on disk (safetensors).

    Args:
        cache_dir: where spilled pairs go (a sub-folder per fingerprint); ``None`` = RAM only.
        fingerprint: identifies model + images; files of another fingerprint are never read.
        max_ram_bytes: RAM budget for predictions held in memory.
        spill_dir: without ``cache_dir``: pairs beyond the budget go to a temporary folder made in it on first
            need (and nothing is written while the budget holds); ``close()`` removes that folder.
    """

    def __init__(
        self,
        cache_dir: Path | None = None,
        fingerprint: str = "default",
        max_ram_bytes: int = 4 << 30,
        spill_dir: Path | None = None,
    ):
        self._items: list[PairPrediction | Path] = []
        self._index: dict[tuple[int, int], int] = {}
        self._ram_bytes = 0
        self.max_ram_bytes = max_ram_bytes
        self.folder = Path(cache_dir) / fingerprint if cache_dir is not None else None
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
        self._spill_parent = Path(spill_dir) if spill_dir is not None and self.folder is None else None
        self._spill: tempfile.TemporaryDirectory | None = None

    def close(self) -> None:
        """Remove the temporary spill folder (if one was made); spilled pairs can no longer be read."""
        if self._spill is not None:
            self._spill.cleanup()
            self._spill = None

    def __enter__(self) -> PairStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, k):  # type: ignore[override]
        if isinstance(k, slice):
            return [self[i] for i in range(*k.indices(len(self)))]
        item = self._items[k]
        return self._read(item) if isinstance(item, Path) else item

    def __iter__(self) -> Iterator[PairPrediction]:
        for k in range(len(self)):
            yield self[k]

    def keys(self) -> list[tuple[int, int]]:
        return list(self._index)

    def get(self, i: int, j: int) -> PairPrediction | None:
        k = self._index.get((i, j))
        return None if k is None else self[k]

    @property
    def ram_bytes(self) -> int:
        return self._ram_bytes

    def _path(self, i: int, j: int) -> Path:
        assert self.folder is not None
        return self.folder / f"pair_{i:05d}_{j:05d}.safetensors"

    def cached(self, i: int, j: int) -> bool:
        """True if a finished, readable prediction for ``(i, j)`` is on disk (from this or an earlier run).

        A file whose header cannot be read (a damaged disk, a file edited by hand) is removed (it is recon's own,
        in recon's cache folder) so the pair is computed again instead of failing later.
        """
        if self.folder is None or not self._path(i, j).is_file():
            return False
        from safetensors import safe_open

        try:
            with safe_open(str(self._path(i, j)), framework="pt") as f:
                ok = {"pts3d_i", "pts3d_j", "conf_i", "conf_j"} <= set(f.keys()) and f.metadata() is not None
        except Exception:  # SafetensorError, OSError: unreadable
            ok = False
        if not ok:
            logger.warning("cached prediction %s is unreadable; computing the pair again", self._path(i, j))
            self._path(i, j).unlink(missing_ok=True)
        return ok

    def add_cached(self, i: int, j: int) -> None:
        self._register(i, j, self._path(i, j))

    def append(self, pred: PairPrediction) -> None:
        """Store ``pred``: written through to disk when there is a cache folder, kept in RAM within budget."""
        nbytes = _pair_nbytes(pred)
        path = self._write(pred) if self.folder is not None else None
        if path is None and self._spill_parent is not None and self._ram_bytes + nbytes > self.max_ram_bytes:
            path = self._write(pred, self._spill_folder())
        if path is not None and self._ram_bytes + nbytes > self.max_ram_bytes:
            self._register(pred.i, pred.j, path)
        else:
            self._ram_bytes += nbytes
            self._register(pred.i, pred.j, pred)

    def _register(self, i: int, j: int, item: PairPrediction | Path) -> None:
        if (i, j) in self._index:
            raise ValueError(f"pair ({i}, {j}) stored twice")
        self._index[(i, j)] = len(self._items)
        self._items.append(item)

    def _spill_folder(self) -> Path:
        if self._spill is None:
            self._spill = tempfile.TemporaryDirectory(prefix="recon-spill-", dir=self._spill_parent)
            logger.info("pair predictions beyond the RAM budget go to %s (removed at the end)", self._spill.name)
        return Path(self._spill.name)

    def _write(self, pred: PairPrediction, folder: Path | None = None) -> Path:
        from safetensors.torch import save_file

        tensors = {f: getattr(pred, f).contiguous() for f in _FIELDS if getattr(pred, f) is not None}
        path = self._path(pred.i, pred.j) if folder is None else folder / f"pair_{pred.i:05d}_{pred.j:05d}.safetensors"
        with atomic_file(path, fsync=False) as tmp:  # a cache: a power failure costs a recomputation, no more
            save_file(tensors, str(tmp), metadata={"i": str(pred.i), "j": str(pred.j)})
        return path

    @staticmethod
    def _read(path: Path) -> PairPrediction:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
        return PairPrediction(i=int(meta["i"]), j=int(meta["j"]), **tensors)


def fingerprint(model_key: str, views: Sequence[View]) -> str:
    """A short hash of the model's identity (``model_key``) and the exact network inputs."""
    h = hashlib.sha256(model_key.encode())
    for v in views:
        h.update(str(tuple(v.image.shape)).encode())
        h.update(v.image.detach().cpu().to(torch.float16).numpy().tobytes())
    return h.hexdigest()[:16]


def model_key(model, config: InferenceConfig, memo_dir: Path | None = None) -> str:
    """What a cached prediction depends on besides the images: the weights' CONTENT, the model config, and the
    settings that change the numbers (parameter dtypes, device type, autocast, storage dtype).

    The weights are identified by the sha256 of the checkpoint files the model was loaded from
    (``model.checkpoint_files``, set by ``recon.load_model``; memoised in ``memo_dir`` by path, size and mtime, so a
    rerun does not rehash gigabytes but an overwritten file is noticed), else by hashing the weights themselves.
    A path or a name is never enough: overwriting a checkpoint must not reuse the old predictions.
    """
    from backbone.checkpoint import state_digest
    from backbone.hub import file_digest

    files = getattr(model, "checkpoint_files", None)
    if files:
        weights = ",".join(file_digest(f, memo_dir) for f in files)
    else:
        weights = state_digest(model.state_dict())
    device = next(model.parameters()).device
    settings = {
        "weights": weights,
        "config": getattr(getattr(model, "config", None), "__dict__", None),
        "dtypes": sorted({str(p.dtype) for p in model.parameters()}),
        "device": device.type,
        "autocast": bool(config.autocast and device.type == "cuda"),
        "storage": str(config.storage_dtype),
        "conf_storage": "float32",  # confidences are never stored in float16 (_to_pair); older caches had them so
    }
    return json.dumps(settings, sort_keys=True, default=repr)


def _autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@torch.inference_mode()
def encode_views(
    model, views: Sequence[View], *, batch_size: int = 8, autocast: bool = True, progress: bool = True
) -> list[torch.Tensor]:
    """Encode every view once.

    Views of the same shape are batched together.

    Returns:
        One tensor ``[h_i*w_i, D]`` per view (on the model's device), in view order.
    """
    device = next(model.parameters()).device
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for k, v in enumerate(views):
        groups[v.true_shape].append(k)
    feats: list[torch.Tensor | None] = [None] * len(views)
    bar = tqdm(total=len(views), desc="encode", unit="img", disable=not progress, leave=False)
    done = 0
    for idxs in groups.values():
        for start in range(0, len(idxs), batch_size):
            chunk = idxs[start : start + batch_size]
            images = torch.stack([views[k].image for k in chunk]).to(device, torch.float32)
            with _autocast(device, autocast):
                out = model.encode(images)
            for k, f in zip(chunk, out, strict=True):
                feats[k] = f
            bar.update(len(chunk))
            done += len(chunk)
            step("encode", done, len(views))
    bar.close()
    return feats  # type: ignore[return-value]


def _to_pair(i: int, j: int, p1: dict, p2: dict, b: int, dtype: torch.dtype) -> PairPrediction:
    def get(pred: dict, key: str):
        t = pred.get(key)
        keep = torch.float32 if key in ("conf", "desc_conf") else dtype  # no finite confidence may become inf
        return None if t is None else t[b].detach().to("cpu", keep)

    return PairPrediction(
        i=i,
        j=j,
        pts3d_i=get(p1, "pts3d"),
        pts3d_j=get(p2, "pts3d"),
        conf_i=get(p1, "conf"),
        conf_j=get(p2, "conf"),
        desc_i=get(p1, "desc"),
        desc_j=get(p2, "desc"),
        desc_conf_i=get(p1, "desc_conf"),
        desc_conf_j=get(p2, "desc_conf"),
    )


@torch.inference_mode()
def run_inference(
    model,
    views: Sequence[View],
    pairs: Sequence[tuple[int, int]],
    config: InferenceConfig = InferenceConfig(),
    *,
    model_id: str = "model",
    progress: bool = True,
    feats: list[torch.Tensor] | None = None,
) -> PairStore:
    """Run the binocular decoder on every pair in both orders, encoding each view once.

    Args:
        model: a ``recon.model`` model with ``encode(images [B,3,H,W]) -> [B,N,D]`` and
            ``decode(feat1, feat2, shape1, shape2) -> (pred1, pred2)``.
        views: the N views (``View.image`` ``[3,H,W]`` in [0,1]).
        pairs: unordered pairs ``(i, j)``; both ``(i, j)`` and ``(j, i)`` are decoded.
        config: batching, storage and cache settings.
        model_id: a label of the model for logs; the cache key is the model's content (``model_key``).
        feats: precomputed encoder features (from ``encode_views``), e.g. shared with retrieval.

    Returns:
        A ``PairStore`` with ``2 * len(pairs)`` predictions (pairs found in the cache first, then the rest in
        batch order; look pairs up with ``store.get(i, j)``).
    """
    device = next(model.parameters()).device
    ordered = [p for i, j in pairs for p in ((i, j), (j, i))]
    # hashing every image (and the weights) only matters when a cache folder is keyed by them
    key = fingerprint(model_key(model, config, config.cache_dir), views) if config.cache_dir is not None else "default"
    store = PairStore(config.cache_dir, key, config.max_ram_bytes, spill_dir=config.spill_dir)
    todo = [(i, j) for i, j in ordered if not store.cached(i, j)]
    if len(todo) < len(ordered):
        logger.info(
            "resuming: %d of %d pair predictions of %s found in %s",
            len(ordered) - len(todo), len(ordered), model_id, store.folder,
        )  # fmt: skip
    if todo and feats is None:
        needed = sorted({k for p in todo for k in p})
        sub = encode_views(
            model,
            [views[k] for k in needed],
            batch_size=config.encode_batch_size,
            autocast=config.autocast,
            progress=progress,
        )
        feats_by_view = dict(zip(needed, sub, strict=True))
    else:
        feats_by_view = dict(enumerate(feats or []))

    # Batch pairs whose two shapes agree, so mixed portrait / landscape sets still batch.
    groups: dict[tuple, list[tuple[int, int]]] = defaultdict(list)
    for i, j in todo:
        groups[(views[i].true_shape, views[j].true_shape)].append((i, j))
    todo_set = set(todo)
    for i, j in ordered:
        if (i, j) not in todo_set:
            store.add_cached(i, j)  # finished by an earlier (possibly interrupted) run
    bar = tqdm(total=len(todo), desc="decode", unit="pair", disable=not progress, leave=False)
    done = 0
    for (shape1, shape2), items in groups.items():
        for start in range(0, len(items), config.batch_size):
            chunk = items[start : start + config.batch_size]
            f1 = torch.stack([feats_by_view[i] for i, _ in chunk])
            f2 = torch.stack([feats_by_view[j] for _, j in chunk])
            with _autocast(device, config.autocast):
                p1, p2 = model.decode(f1, f2, shape1, shape2)
            for b, (i, j) in enumerate(chunk):
                store.append(_to_pair(i, j, p1, p2, b, config.storage_dtype))  # on disk at once: resumable
            bar.update(len(chunk))
            done += len(chunk)
            step("inference", done, len(todo))
    bar.close()
    release_freed_memory()
    return store


def release_freed_memory() -> None:
    """Give the heap's free pages back to the system (glibc ``malloc_trim``; elsewhere nothing).

    glibc keeps freed buffers of the decoder's batches in its heap: after inference the process held ~150 MB more
    than it used at 256x192 (docs/performance.md), memory the later stages could not count on.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    except OSError:
        pass
