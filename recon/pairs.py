"""Scene graphs: which image pairs to decode.

``make_pairs(n, graph)`` returns unordered pairs ``(i, j)`` with ``i < j``, sorted, without duplicates or
self-pairs; inference decodes each of them in both orders. Graph names (semantics of the official
``make_pairs``, reference/mast3r.md §5, except where noted):

=======================  =================================================================================
``complete``             every pair: ``n (n - 1) / 2``
``swin-k``               each image with the ``k`` next ones, wrapping around (``swin-k-noncyclic``: no wrap)
``logwin-k``             each image with those at offsets ``±1, ±2, ±4, ..., ±2^(k-1)`` (wrapping unless
                         ``-noncyclic``)
``oneref-i``             image ``i`` with every other one
``retrieval-Na-k``       official ``make_pairs_fps`` (``recon.retrieval``): ``Na`` key images by farthest-point
                         sampling, linked together and each other image to its nearest key image, plus each
                         image's ``k`` nearest images counting itself; ``retrieval`` alone = the MASt3R demo's
                         ``Na = min(20, n)``, ``k = min(n - 1, 10)``. Similarities from the retrieval model's
                         ASMK (``recon.asmk``) when given, else from the backbone's pooled patch tokens
``auto``                 ``complete`` while it fits the memory budget, else the graph ``choose_graph`` names
=======================  =================================================================================

Differences from the official code, on purpose: unknown or malformed names raise ``ValueError`` (dust3r returns
``[]``, and ``swin-x`` silently meant ``swin-3``); ``k >= n`` never produces self-pairs; ``retrieval`` seeds its
farthest-point start (official: unseeded ``np.random.choice``) and falls back to pooled patch tokens for backbones
without a retrieval model. ``retrieval-K`` with ONE number (recon's old ``retrieval-k[-m]`` order) is an error
that says how to write it.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from recon.errors import UserError
from recon.retrieval import DEMO_KEY_IMAGES, DEMO_NEIGHBOURS, fps_pairs

logger = logging.getLogger(__name__)

GRAPHS = ("complete", "swin-k[-noncyclic]", "logwin-k[-noncyclic]", "oneref-i", "retrieval-Na-k", "auto")

# Official defaults when the number is left out of the name.
DEFAULT_SWIN_K = 3
DEFAULT_LOGWIN_K = 3

# Bytes one unordered pair keeps after inference at 512x384 (both orders): per view pts3d (3) + desc (24) channels
# in float16 and conf + desc_conf in float32 (recon.inference), two views per ordered pair.
BYTES_PER_PAIR_512 = 2 * 2 * ((3 + 24) * 2 + (1 + 1) * 4) * 512 * 384


@dataclass(frozen=True)
class GraphSpec:
    """A parsed scene-graph name.

    Attributes:
        kind: ``complete``, ``swin``, ``logwin``, ``oneref``, ``retrieval`` or ``auto``.
        k: window size (swin/logwin), neighbour count counting the image itself (retrieval; ``None`` = demo
            default ``min(n - 1, 10)``) or reference index (oneref).
        m: number of key images ``Na`` (retrieval; ``None`` = demo default ``min(20, n)``).
        cyclic: swin/logwin windows wrap around the end of the sequence.
    """

    kind: str
    k: int | None = None
    m: int | None = None
    cyclic: bool = True

    @property
    def name(self) -> str:
        if self.kind in ("complete", "auto"):
            return self.kind
        if self.kind in ("swin", "logwin"):
            return f"{self.kind}-{self.k}" + ("" if self.cyclic else "-noncyclic")
        if self.kind == "oneref":
            return f"oneref-{self.k}"
        return "retrieval" if self.k is None else f"retrieval-{self.m}-{self.k}"


_PATTERNS = {
    "complete": re.compile(r"complete"),
    "auto": re.compile(r"auto"),
    "swin": re.compile(r"swin(?:-(\d+))?(-noncyclic)?"),
    "logwin": re.compile(r"logwin(?:-(\d+))?(-noncyclic)?"),
    "oneref": re.compile(r"oneref(?:-(\d+))?"),
    "retrieval": re.compile(r"retrieval(?:-(\d+)(?:-(\d+))?)?"),
}


def parse_graph(graph: str) -> GraphSpec:
    """Parse a scene-graph name (see the module docstring).

    Raises:
        ValueError: unknown name or malformed parameters; the message lists the valid forms.
    """
    name = graph.strip().lower()
    for kind, pattern in _PATTERNS.items():
        m = pattern.fullmatch(name)
        if m is None:
            continue
        if kind in ("swin", "logwin"):
            k = int(m.group(1)) if m.group(1) else (DEFAULT_SWIN_K if kind == "swin" else DEFAULT_LOGWIN_K)
            if k < 1:
                raise ValueError(f"scene graph {graph!r}: the window size must be >= 1")
            return GraphSpec(kind, k=k, cyclic=m.group(2) is None)
        if kind == "oneref":
            return GraphSpec(kind, k=int(m.group(1)) if m.group(1) else 0)
        if kind == "retrieval":
            if m.group(1) is None:
                return GraphSpec(kind)
            if m.group(2) is None:
                n1 = int(m.group(1))
                raise ValueError(
                    f"scene graph {graph!r} is ambiguous: write retrieval-Na-k as the official code, Na key images "
                    f"and the k nearest images counting the image itself, e.g. retrieval-20-{n1 + 1} (recon's old "
                    f"retrieval-{n1} meant {n1} neighbours besides itself and sqrt(n) key images)"
                )
            na, k = int(m.group(1)), int(m.group(2))
            if na + k < 1:
                raise ValueError(f"scene graph {graph!r}: Na and k cannot both be 0")
            return GraphSpec(kind, k=k, m=na)
        return GraphSpec(kind)
    raise ValueError(f"unknown scene graph {graph!r}; valid: {', '.join(GRAPHS)} (e.g. swin-5, retrieval-20-10)")


def _canonical(pairs) -> list[tuple[int, int]]:
    return sorted({(min(i, j), max(i, j)) for i, j in pairs if i != j})


def _window(n: int, offsets: Sequence[int], cyclic: bool) -> list[tuple[int, int]]:
    pairs = []
    for i in range(n):
        for d in offsets:
            j = i + d
            if cyclic:
                j %= n
            elif not 0 <= j < n:
                continue
            pairs.append((i, j))
    return _canonical(pairs)


def global_descriptors(tokens: Sequence[torch.Tensor]) -> torch.Tensor:
    """One global descriptor per image from its patch tokens.

    Each token is L2-normalised, tokens are mean-pooled, the set's mean descriptor is subtracted (ViT tokens
    share a large common component that otherwise makes every image look alike; no trained whitening needed)
    and the result L2-normalised.

    Args:
        tokens: ``n`` tensors ``[N_i, D]`` (token counts may differ: portrait and landscape mixed).

    Returns:
        ``[n, D]`` float32 unit descriptors (on the CPU).
    """
    if not tokens:
        raise ValueError("no tokens given")
    dims = {t.shape[-1] for t in tokens}
    if len(dims) != 1 or any(t.ndim != 2 or t.shape[0] == 0 for t in tokens):
        raise ValueError(f"tokens must be [N_i, D] tensors with one D, got {[tuple(t.shape) for t in tokens]}")
    g = torch.stack([torch.nn.functional.normalize(t.detach().float().cpu(), dim=-1).mean(0) for t in tokens])
    if len(g) > 2:
        # with two images, centring would make them exact opposites; it only helps ranking among many
        g = g - g.mean(0, keepdim=True)
    return torch.nn.functional.normalize(g, dim=-1)


def retrieval_pairs(
    tokens: Sequence[torch.Tensor] | None,
    n_key: int | None = None,
    k: int | None = None,
    seed: int = 0,
    *,
    sim: np.ndarray | None = None,
) -> tuple[list[tuple[int, int]], list[int]]:
    """Official ``retrieval-Na-k`` graph (``recon.retrieval.fps_pairs``); returns ``(pairs, key_images)``.

    Args:
        tokens: ``n`` patch-token tensors ``[N_i, D]``, pooled into global descriptors when ``sim`` is not given.
        n_key: ``Na`` (``None``: the demo's ``min(20, n)``).
        k: neighbours counting the image itself (``None``: the demo's ``min(n - 1, 10)``).
        seed: farthest-point start.
        sim: ``[n, n]`` image similarities, e.g. ASMK scores of the retrieval model (``recon.asmk``).
    """
    if sim is None:
        g = global_descriptors(tokens).double().numpy()
        sim = g @ g.T
    n = len(sim)
    n_key = min(DEMO_KEY_IMAGES, n) if n_key is None else n_key
    k = min(n - 1, DEMO_NEIGHBOURS) if k is None else k
    return fps_pairs(sim, n_key, k, seed)


def available_memory_bytes() -> int | None:
    """Memory the OS reports as available (Linux ``MemAvailable``; else ``sysconf``), or ``None``."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def choose_graph(
    n: int,
    *,
    has_tokens: bool = False,
    memory_bytes: int | None = None,
    bytes_per_pair: int = BYTES_PER_PAIR_512,
) -> tuple[str, str]:
    """The graph ``auto`` picks for ``n`` images, and why.

    ``complete`` (the official default) whenever its stored predictions fit the budget (half the available
    memory); otherwise ``retrieval-Na-k`` when patch tokens are available (``Na <= 20`` key images, ``k <= 11``
    neighbours counting the image itself, as large as memory allows), else ``logwin-k`` (at most 5 octaves).

    Returns:
        ``(graph name, reason)``.
    """
    budget = memory_bytes if memory_bytes is not None else available_memory_bytes()
    budget = budget // 2 if budget is not None else None  # leave room for the model, images and alignment
    n_complete = n * (n - 1) // 2
    fits = budget is None or n_complete * bytes_per_pair <= budget
    mem = "unknown memory" if budget is None else f"{budget / 2**30:.1f} GiB budget"
    if fits:
        return "complete", f"{n} images: all {n_complete} pairs fit ({mem})"
    max_pairs = max(n - 1, budget // bytes_per_pair)
    why = f"a complete graph of {n} images ({n_complete} pairs) exceeds the {mem}"
    if has_tokens:
        # pairs <= n (k - 1) for the neighbours + (n - Na) to the key images + Na (Na - 1) / 2 among them
        k = 1 + int(max(1, min(DEMO_NEIGHBOURS, n - 1, max_pairs // (2 * n))))
        n_key = int(max(1, min(DEMO_KEY_IMAGES, n, math.isqrt(2 * max(max_pairs - n * k, 0)))))
        return f"retrieval-{n_key}-{k}", f"{why}: retrieval graph sized for about {max_pairs} pairs"
    k = 1
    while k < 5 and 2 ** (k + 1) < n and n * (k + 1) <= max_pairs:
        k += 1
    return f"logwin-{k}", f"{why} and no tokens for retrieval: logarithmic windows, about {max_pairs} pairs"


def make_pairs(
    n: int,
    graph: str = "complete",
    *,
    tokens: Sequence[torch.Tensor] | None = None,
    seed: int = 0,
    memory_bytes: int | None = None,
    bytes_per_pair: int = BYTES_PER_PAIR_512,
    sim: np.ndarray | None = None,
) -> list[tuple[int, int]]:
    """Unordered image pairs of a scene graph.

    Args:
        n: number of images (>= 2).
        graph: graph name (module docstring); case-insensitive.
        tokens: ``n`` tensors ``[N_i, D]`` of backbone patch tokens, one per image; needed by ``retrieval``
            (and used by ``auto`` when given).
        seed: seeds the farthest-point start of ``retrieval``; equal inputs give equal pairs.
        memory_bytes: memory ``auto`` may plan with (default: what the OS reports available).
        bytes_per_pair: stored prediction size of one unordered pair (``auto``; default 512x384).
        sim: ``[n, n]`` image similarities for ``retrieval`` (e.g. ``recon.asmk``); else pooled ``tokens``.

    Returns:
        Sorted list of ``(i, j)`` with ``0 <= i < j < n``, no duplicates.

    Raises:
        ValueError: unknown graph, ``n < 2``, a reference index out of range, or ``retrieval`` without tokens.
    """
    spec = parse_graph(graph)
    if n < 2:
        raise ValueError(f"a scene graph needs at least 2 images, got {n}")
    if tokens is not None and len(tokens) != n:
        raise ValueError(f"got {len(tokens)} token tensors for {n} images")
    if spec.kind == "auto":
        name, why = choose_graph(
            n, has_tokens=tokens is not None, memory_bytes=memory_bytes, bytes_per_pair=bytes_per_pair
        )
        logger.info("scene graph auto -> %s (%s)", name, why)
        spec = parse_graph(name)
    if spec.kind == "complete":
        return [(i, j) for i in range(n) for j in range(i + 1, n)]
    if spec.kind == "swin":  # offsets >= n add nothing (k >= n - 1 is complete): bounded for any k
        return _window(n, range(1, min(spec.k, n - 1) + 1), spec.cyclic)
    if spec.kind == "logwin":
        offsets = [s * 2**e for e in range(_logwin_octaves(spec.k, n)) for s in (1, -1)]
        return _window(n, offsets, spec.cyclic)
    if spec.kind == "oneref":
        if not 0 <= spec.k < n:
            raise ValueError(f"scene graph {graph!r}: reference image {spec.k} is out of range for {n} images")
        return _canonical((spec.k, j) for j in range(n))
    if tokens is None and sim is None:
        raise ValueError(f"scene graph {graph!r} needs the images' patch tokens (tokens=[...], one [N_i, D] each)")
    if sim is not None and np.shape(sim) != (n, n):
        raise ValueError(f"sim must be [{n}, {n}], got {np.shape(sim)}")
    pairs, keys = retrieval_pairs(tokens, spec.m, spec.k, seed, sim=sim)
    logger.info("retrieval graph: key images %s, %d pairs", keys, len(pairs))
    return pairs


def describe_graph(n: int, graph: str, pairs: Sequence[tuple[int, int]] | None = None) -> str:
    """One line saying what a graph means for ``n`` images, e.g. ``swin-3 (cyclic): 30 pairs, 60 decoder passes``."""
    spec = parse_graph(graph)
    what = {
        "complete": "every pair",
        "swin": f"each image with the next {spec.k}" + (", wrapping around" if spec.cyclic else ""),
        "logwin": f"offsets ±1..±{2 ** ((spec.k or 1) - 1)}" + (", wrapping around" if spec.cyclic else ""),
        "oneref": f"image {spec.k} with every other image",
        "retrieval": f"{spec.m or 'min(20, n)'} key images + {spec.k or 'min(n - 1, 10)'} nearest counting itself",
        "auto": "chosen from image count and memory",
    }[spec.kind]
    line = f"{spec.name} over {n} images ({what})"
    if pairs is not None:
        line += f": {len(pairs)} pairs, {2 * len(pairs)} decoder passes"
    return line


# ------------------------------------------------------------------------------------------------ planning
class GraphError(UserError, ValueError):
    """A scene-graph name that cannot be used for this many images; the message lists the valid forms."""


@dataclass(frozen=True)
class PairPlan:
    """What a scene graph costs for ``n`` images, computed without enumerating pairs.

    Attributes:
        graph: the graph name as given (``auto`` resolved to what it picks).
        n_images: number of images planned for.
        n_pairs: unordered pairs (exact, or an upper bound when ``exact`` is False: retrieval depends on the
            images).
        exact: whether ``n_pairs`` is exact.
    """

    graph: str
    n_images: int
    n_pairs: int
    exact: bool = True

    @property
    def n_decodes(self) -> int:
        """Decoder passes: every pair is decoded in both orders."""
        return 2 * self.n_pairs

    def stored_bytes(self, bytes_per_pair: int = BYTES_PER_PAIR_512) -> int:
        """Bytes the pair predictions take once decoded (``bytes_per_pair`` per unordered pair)."""
        return self.n_pairs * bytes_per_pair


def _logwin_octaves(k: int, n: int) -> int:
    """logwin offsets ``2^e`` for ``e < k`` that are below ``n`` (larger ones would only wrap onto smaller ones)."""
    return min(k, (n - 1).bit_length())


def _cyclic_pairs(n: int, distances: set[int]) -> int:
    """Unordered pairs ``{i, i + d mod n}`` over the cyclic distances ``d`` (``1 <= d <= n // 2``)."""
    return sum(n // 2 if 2 * d == n else n for d in distances)


def check_graph(graph: str) -> GraphSpec:
    """``parse_graph`` for user input: a name of bounded length, and a ``GraphError`` (a ``UserError``) if bad."""
    if not isinstance(graph, str) or len(graph) > 40:
        raise GraphError(f"scene graph {str(graph)[:40]!r}... is not a graph name; valid: {', '.join(GRAPHS)}")
    try:
        return parse_graph(graph)
    except ValueError as err:
        raise GraphError(str(err)) from None


def plan_pairs(
    graph: str, n: int, *, memory_bytes: int | None = None, bytes_per_pair: int = BYTES_PER_PAIR_512
) -> PairPlan:
    """Count the pairs of ``graph`` over ``n`` images in O(log n), without enumerating them.

    ``make_pairs(n, graph)`` returns exactly ``n_pairs`` pairs (retrieval: at most ``n_pairs``), so this is what a
    front-end checks against its budget before any image is decoded.

    Raises:
        GraphError: unknown or malformed graph name, ``n < 2``, a reference image out of range.
    """
    spec = check_graph(graph)
    if n < 2:
        raise GraphError(f"a scene graph needs at least 2 images, got {n}")
    if spec.kind == "auto":
        name, _ = choose_graph(n, has_tokens=True, memory_bytes=memory_bytes, bytes_per_pair=bytes_per_pair)
        return replace(plan_pairs(name, n), graph=f"auto -> {name}")
    complete = n * (n - 1) // 2
    if spec.kind == "complete":
        count = complete
    elif spec.kind == "oneref":
        if not 0 <= spec.k < n:
            raise GraphError(
                f"scene graph {graph!r}: reference image {spec.k} is out of range for {n} images (0..{n - 1})"
            )
        count = n - 1
    elif spec.kind == "swin":
        k = min(spec.k, n - 1)
        count = _cyclic_pairs(n, set(range(1, min(k, n // 2) + 1))) if spec.cyclic else k * n - k * (k + 1) // 2
    elif spec.kind == "logwin":
        offsets = {2**e for e in range(_logwin_octaves(spec.k, n))}
        if spec.cyclic:
            count = _cyclic_pairs(n, {min(d, n - d) for d in offsets})
        else:
            count = sum(n - d for d in offsets)
    else:  # retrieval (fps_pairs): Na key images complete among themselves, every other image to its nearest
        # key image, every image to its k nearest (itself usually among them); k >= n or Na >= n is complete
        m = min(DEMO_KEY_IMAGES if spec.m is None else spec.m, n)
        k = min(n - 1, DEMO_NEIGHBOURS) if spec.k is None else spec.k
        bound = m * (m - 1) // 2 + (n - m) + n * min(k, n - 1)
        return PairPlan(spec.name, n, min(complete, bound), exact=k >= n or m >= n or bound <= 0)
    return PairPlan(spec.name, n, count)
