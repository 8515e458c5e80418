"""Image similarities for ``retrieval-Na-k`` with the released MASt3R retrieval model: its head and ASMK.

The official retrieval (``mast3r/retrieval/{model,processor}.py``, reference/mast3r.md §3.8 and §5) turns each
image's encoder tokens into local features and scores image pairs with ASMK (jenicek/asmk, a compiled
extension plus faiss). This module reproduces both in numpy / torch, with no compiler:

- ``RetrievalHead`` (the ``*_retrieval_trainingfree.pth`` checkpoint): pre-whitening ``(x - m) @ p`` (float64),
  a projector MLP (``hdims``: Linear, then LayerNorm + GELU + Linear per extra layer; optionally residual),
  attention = L2 norm of the projected token, the ``nfeat`` tokens of highest attention, post-whitening;
- ASMK with the official parameters: each feature is assigned to its nearest codebook centroid(s) (L2; 1 when
  building the database, 5 when querying); per image and visual word the residuals ``x - c`` are summed and
  binarised (``> 0``); two images' vectors of a shared word compare as ``s = 1 - 2 h / B`` (``h`` differing bits,
  ``B`` the bit count rounded up to a multiple of 32, as the packed uint32 original), kept when ``s >= 0`` and
  raised to ``alpha = 3``; an image pair's score is the sum over shared words divided by
  ``sqrt(#query words * #database words)`` (no idf).

``similarity_matrix`` scores every image as a query against all of them, ``sim[query, database]``, as the official
``Retriever`` does. The codebook file (``*_codebook.pkl``) is a pickle: ``load_codebook`` reads it with an
unpickler that only admits what a numpy array needs (anything else is refused; nothing is executed).
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from recon.errors import UserError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ASMKParams:
    """The official retrieval settings (mast3r/retrieval/processor.py)."""

    alpha: float = 3.0
    """Selectivity exponent applied to each word's similarity."""
    similarity_threshold: float = 0.0
    """Word similarities below this are dropped."""
    query_assignments: int = 5
    """Nearest centroids per feature when querying."""
    database_assignments: int = 1
    """Nearest centroids per feature when building the database."""


class CodebookError(UserError, ValueError):
    """A codebook file that is not a plain ASMK codebook (or asks to run code)."""


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Admits the globals a pickled numpy array needs, and nothing else."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise CodebookError(f"the codebook pickle asks for {module}.{name}; only numpy arrays are allowed")
        return super().find_class(module, name)


def load_codebook(path: str | os.PathLike) -> np.ndarray:
    """Centroids ``[K, D]`` float32 of an ASMK codebook pickle (``{"state": {"centroids": array}, ...}``).

    Raises:
        CodebookError: anything but plain data, a missing or non-numeric ``centroids`` array.
    """
    data = Path(path).read_bytes()
    try:
        obj = _ArrayOnlyUnpickler(io.BytesIO(data)).load()
    except CodebookError:
        raise
    except Exception as err:
        raise CodebookError(f"{path}: not a readable codebook pickle ({err})") from None
    cent = obj.get("state", {}).get("centroids") if isinstance(obj, dict) else None
    if not isinstance(cent, np.ndarray) or cent.ndim != 2 or cent.dtype.kind != "f":
        raise CodebookError(f"{path}: no float [K, D] 'centroids' array in state")
    return np.ascontiguousarray(cent, np.float32)


def codebook_path(checkpoint: str | os.PathLike) -> Path:
    """The official codebook name next to a retrieval checkpoint: ``a_b_c_trainingfree.pth -> a_b_c_codebook.pkl``."""
    p = Path(checkpoint)
    return p.with_name("_".join(p.name.split("_")[:-1]) + "_codebook.pkl")


def quantize(des: np.ndarray, centroids: np.ndarray, k: int, chunk: int = 4096) -> np.ndarray:
    """``[n, k]`` ids of the ``k`` nearest centroids (L2) of each row of ``des [n, D]``, nearest first."""
    c = torch.as_tensor(centroids, dtype=torch.float32)
    out = []
    for s in range(0, len(des), chunk):
        d = torch.as_tensor(des[s : s + chunk], dtype=torch.float32)
        dist = torch.cdist(d, c)
        out.append(dist.topk(min(k, len(c)), dim=1, largest=False).indices.numpy())
    return np.concatenate(out) if out else np.zeros((0, k), np.int64)


@dataclass
class AggregatedImage:
    """One image's visual words and their packed binary residual signs."""

    words: np.ndarray  # [w] sorted unique word ids
    bits: np.ndarray  # [w, ceil(D/8)] uint8 (np.packbits of residual > 0)
    n_bits: int  # D rounded up to a multiple of 32


def aggregate(des: np.ndarray, word_ids: np.ndarray, centroids: np.ndarray) -> AggregatedImage:
    """ASMK aggregation with the binary kernel: per word, the sign pattern of the summed residuals."""
    words = np.unique(word_ids)
    agg = np.zeros((len(words), des.shape[1]), np.float64)
    for r, w in enumerate(words):
        rows = (word_ids == w).any(axis=1)
        agg[r] = (des[rows].astype(np.float64) - centroids[w]).sum(0)
    return AggregatedImage(words, np.packbits(agg > 0, axis=1), int(np.ceil(des.shape[1] / 32) * 32))


def asmk_scores(queries: Sequence[AggregatedImage], database: Sequence[AggregatedImage], params=ASMKParams()):
    """``[len(queries), len(database)]`` ASMK scores (module docstring)."""
    scores = np.zeros((len(queries), len(database)))
    for a, q in enumerate(queries):
        for b, d in enumerate(database):
            common, iq, idb = np.intersect1d(q.words, d.words, assume_unique=True, return_indices=True)
            if len(common) == 0:
                continue
            h = np.unpackbits(q.bits[iq] ^ d.bits[idb], axis=1).sum(1)  # differing bits
            s = 1.0 - 2.0 * h / q.n_bits
            s = s[s >= params.similarity_threshold]
            scores[a, b] = np.power(s, params.alpha).sum() / np.sqrt(len(q.words) * len(d.words))
    return scores


def similarity_matrix(features: Sequence[np.ndarray], centroids: np.ndarray, params=ASMKParams()) -> np.ndarray:
    """``[n, n]`` ASMK scores of every image (as a query) against every image (as the database).

    Args:
        features: ``n`` arrays ``[F_i, D]`` of local features (``RetrievalHead`` output).
        centroids: ``[K, D]`` codebook.
    """
    db = [aggregate(f, quantize(f, centroids, params.database_assignments), centroids) for f in features]
    qs = [aggregate(f, quantize(f, centroids, params.query_assignments), centroids) for f in features]
    return asmk_scores(qs, db, params)


class _Whitener(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.m = nn.Parameter(torch.zeros(1, dim, dtype=torch.float64), requires_grad=False)
        self.p = nn.Parameter(torch.eye(dim, dtype=torch.float64), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ((x.double() - self.m) @ self.p).to(x.dtype)


class RetrievalHead(nn.Module):
    """The retrieval model's layers on top of the (frozen) MASt3R encoder.

    Args:
        dim: encoder width (1024 for ViT-L).
        hdims: projector widths (official ``args.hdims``, e.g. ``[1024]``); empty = no projector.
        prewhiten, postwhiten: whether the checkpoint has those whiteners (``args.prewhiten`` / ``postwhiten``
            not None).
        residual: add the pre-whitened token to the projector output.
        nfeat: local features kept per image (highest attention first).
    """

    def __init__(
        self, dim: int, hdims: Sequence[int], prewhiten: bool, postwhiten: bool, residual: bool, nfeat: int
    ) -> None:
        super().__init__()
        self.prewhiten = _Whitener(dim) if prewhiten else nn.Identity()
        layers: list[nn.Module] = []
        d = dim
        for h in list(hdims)[:-1]:
            layers += [nn.Linear(d, h), nn.LayerNorm(h), nn.GELU()]
            d = h
        if hdims:
            layers.append(nn.Linear(d, hdims[-1]))
        self.projector = nn.Sequential(*layers) if layers else nn.Identity()
        self.postwhiten = _Whitener(hdims[-1] if hdims else dim) if postwhiten else nn.Identity()
        self.residual, self.nfeat = residual, nfeat

    @torch.no_grad()
    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """``tokens [N, D]`` encoder tokens of one image -> ``[min(nfeat, N), D']`` local features."""
        x = self.prewhiten(tokens.float())
        proj = self.projector(x) + (x if self.residual else 0.0)
        attention = proj.norm(dim=-1)  # official featweights='l2norm', before post-whitening
        keep = attention.topk(min(self.nfeat, len(attention))).indices
        return self.postwhiten(proj)[keep]

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike) -> RetrievalHead:
        """Load a ``*_retrieval_trainingfree.pth`` (``{"model", "args"}``; backbone keys absent) strictly."""
        from backbone.checkpoint import CheckpointError, load_strict, safe_load

        ckpt = safe_load(path)
        args = ckpt.get("args") if isinstance(ckpt, dict) else None
        if not isinstance(args, argparse.Namespace) or not isinstance(ckpt.get("model"), dict):
            raise CheckpointError(f"{path}: not a MASt3R retrieval checkpoint (needs 'model' and 'args')")
        if getattr(args, "featweights", "l2norm") != "l2norm":
            raise CheckpointError(f"{path}: featweights={args.featweights!r} is not supported (only 'l2norm')")
        state = {k: v for k, v in ckpt["model"].items() if not k.startswith("backbone.")}
        hdims = [int(h) for h in str(getattr(args, "hdims", "")).split("_") if h]
        dim = state["prewhiten.m"].shape[1] if "prewhiten.m" in state else int(getattr(args, "enc_embed_dim", 1024))
        head = cls(
            dim,
            hdims,
            prewhiten=args.prewhiten is not None,
            postwhiten=args.postwhiten is not None,
            residual=bool(getattr(args, "residual", False)),
            nfeat=int(args.nfeat),
        )
        load_strict(head, state, what=str(path))
        head.nclusters = int(getattr(args, "nclusters", 0))
        return head.eval()


def retrieval_similarity(
    tokens: Sequence[torch.Tensor], checkpoint: str | os.PathLike, codebook: str | os.PathLike | None = None
) -> np.ndarray:
    """``[n, n]`` official retrieval scores of ``n`` images from their encoder tokens ``[N_i, D]``.

    Args:
        tokens: the MASt3R encoder's tokens of each image (``recon.inference.encode_views``).
        checkpoint: ``*_retrieval_trainingfree.pth``.
        codebook: its codebook (default: the official name next to the checkpoint, ``codebook_path``).
    """
    head = RetrievalHead.from_checkpoint(checkpoint)
    cent = load_codebook(codebook or codebook_path(checkpoint))
    if head.nclusters and head.nclusters != len(cent):
        raise CodebookError(f"the codebook has {len(cent)} centroids, the checkpoint expects {head.nclusters}")
    feats = [head(t.detach().float().cpu()).numpy() for t in tokens]
    return similarity_matrix(feats, cent)
