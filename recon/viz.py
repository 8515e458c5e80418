"""Pictures of what an encoder sees: PCA of patch features as RGB, self-attention of the encoder's last block and
the decoder's cross-view attention for a query patch (DUNE supplement C, MuM figure 6).

Attention weights are computed on request only: the network keeps its fused ``scaled_dot_product_attention``
path, and these functions capture a block's *inputs* with a forward pre-hook during an ordinary forward pass,
then recompute that one block's softmax(q k^T / sqrt(d)) explicitly, with the same RoPE the block applied.
``tests/test_viz.py`` checks that the recomputed weights reproduce the fused block's output.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from recon.errors import UserError

logger = logging.getLogger(__name__)


def pca_rgb(feats: np.ndarray | Tensor, *, clip: float = 1.0) -> np.ndarray:
    """Project features on their first three principal components and map each to [0, 1].

    Args:
        feats: ``[..., D]`` features (e.g. ``[h, w, D]`` patch tokens, or two views stacked: ``[2, h, w, D]``,
            which share one basis so that colours correspond across views).
        clip: per component, values outside the ``clip``-th and ``100 - clip``-th percentiles saturate
            (robust to a few outlier tokens).

    Returns:
        ``[..., 3]`` float32 in [0, 1]; channel ``c`` is component ``c`` (sign fixed so that its largest
        loading is positive, which makes the colours reproducible).
    """
    X = torch.as_tensor(feats).detach().double().cpu().numpy()
    shape = X.shape[:-1]
    X = X.reshape(-1, X.shape[-1])
    if X.shape[0] < 2:
        raise ValueError(f"PCA needs at least two feature vectors, got {X.shape[0]}")
    X = X - X.mean(0)
    _, _, Vt = np.linalg.svd(X, full_matrices=False)
    Vt = Vt[:3]
    Vt = Vt * np.sign(Vt[np.arange(len(Vt)), np.abs(Vt).argmax(1)])[:, None]
    Y = X @ Vt.T  # M x (<=3)
    if Y.shape[1] < 3:  # fewer than three dimensions: pad with grey
        Y = np.concatenate([Y, np.zeros((Y.shape[0], 3 - Y.shape[1]))], 1)
    lo, hi = np.percentile(Y, clip, axis=0), np.percentile(Y, 100 - clip, axis=0)
    rgb = np.clip((Y - lo) / np.maximum(hi - lo, 1e-12), 0.0, 1.0)
    return rgb.reshape(*shape, 3).astype(np.float32)


def _softmax_weights(q: Tensor, k: Tensor) -> Tensor:
    """``[B, heads, N, d]``, ``[B, heads, M, d]`` -> ``[B, heads, N, M]`` with SDPA's default scale."""
    scale = q.shape[-1] ** -0.5
    return torch.softmax((q.float() @ k.float().transpose(-1, -2)) * scale, dim=-1)


def _capture_inputs(module: torch.nn.Module, run: Callable[[], object]) -> tuple[tuple, dict]:
    """Run ``run()`` and return the positional and keyword arguments ``module`` was first called with."""
    seen: list[tuple[tuple, dict]] = []

    def hook(_mod, args, kwargs):
        if not seen:
            seen.append((args, kwargs))

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        run()
    finally:
        handle.remove()
    if not seen:
        raise RuntimeError(f"{type(module).__name__} was not called by the forward pass")
    return seen[0]


def self_attention_weights(attn, x: Tensor, rope=None) -> Tensor:
    """Explicit weights of a ``backbone.layers.Attention`` on its (already normalised) input.

    Args:
        attn: the attention module (``qkv``, ``num_heads``).
        x: ``[B, N, D]`` its input (the block's ``norm1(x)``).
        rope: the block's RoPE closure, or ``None``.

    Returns:
        ``[B, heads, N, N]`` weights; each row sums to 1.
    """
    B, N, D = x.shape
    qkv = attn.qkv(x).reshape(B, N, 3, attn.num_heads, D // attn.num_heads)
    q, k, _ = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each B heads N Dh
    if rope is not None:
        q, k = rope(q), rope(k)
    return _softmax_weights(q, k)


@torch.no_grad()
def encoder_attention(backbone, images: Tensor, block: int = -1) -> Tensor:
    """Self-attention weights of one encoder block (default the last), prefix tokens included.

    Args:
        backbone: a ``backbone.vit.VisionTransformer`` (every registered backbone is one).
        images: ``[B, 3, H, W]`` in [0, 1].
        block: block index (negative counts from the end).

    Returns:
        ``[B, heads, P + h*w, P + h*w]`` with ``P = backbone.num_prefix_tokens`` (cls / registers first).
    """
    blk = backbone.blocks[block]
    args, kwargs = _capture_inputs(blk, lambda: backbone(images))
    x = args[0]
    rope = kwargs.get("rope", args[1] if len(args) > 1 else None)
    return self_attention_weights(blk.attn, blk.norm1(x), rope)


def cross_attention_weights(block, x: Tensor, y: Tensor, rope_x, rope_y) -> Tensor:
    """Cross-attention weights of a ``recon.model.decoder.DecoderBlock`` given the block's inputs.

    The block first self-attends (``x + attn(norm1(x))``), then queries ``norm2`` of that against the other
    view's ``norm_y(y)``; this repeats those steps and returns the weights instead of the attended values.

    Args:
        block: the decoder block.
        x: ``[B, N, C]`` this view's tokens entering the block; y: ``[B, M, C]`` the other view's.
        rope_x, rope_y: the two grids' RoPE closures.

    Returns:
        ``[B, heads, N, M]``; each row sums to 1.
    """
    x = x + block.attn(block.norm1(x), rope_x)
    ca = block.cross_attn
    q = rope_x(ca._heads(ca.projq(block.norm2(x))))
    k = rope_y(ca._heads(ca.projk(block.norm_y(y))))
    return _softmax_weights(q, k)


@torch.no_grad()
def decoder_cross_attention(model, img1: Tensor, img2: Tensor, block: int = -1) -> Tensor:
    """Cross-view attention of view 1's tokens to view 2's in one block of the first decoder stack.

    Args:
        model: a ``recon.model.ReconModel``.
        img1, img2: ``[1, 3, H, W]`` in [0, 1] (view 1 is the reference).
        block: decoder block (default the last).

    Returns:
        ``[heads, h1*w1, h2*w2]``.
    """
    blk = model.decoder.dec_blocks[block]
    args, _ = _capture_inputs(blk, lambda: model(img1, img2))
    x, y, rope_x, rope_y = args[:4]
    return cross_attention_weights(blk, x, y, rope_x, rope_y)[0]


def query_map(weights: Tensor, query: int, grid: tuple[int, int], prefix: int = 0) -> np.ndarray:
    """One query's attention over a patch grid, averaged over heads.

    Args:
        weights: ``[heads, N_q, P + h*w]`` weights (``P`` prefix keys dropped here).
        query: row index into ``N_q`` (for self-attention include the prefix offset: ``P + r * w + c``).
        grid: ``(h, w)`` of the keys.
        prefix: number of leading prefix keys.

    Returns:
        ``[h, w]`` float32 (the mass on prefix tokens is left out, so it sums to at most 1).
    """
    h, w = grid
    row = weights[:, query, prefix:].float().mean(0)
    if row.numel() != h * w:
        raise ValueError(f"{row.numel()} keys after the prefix, grid {h}x{w} has {h * w}")
    return row.reshape(h, w).cpu().numpy().astype(np.float32)


# --- images -------------------------------------------------------------------------------------------------------

# A perceptually ordered dark-to-bright ramp (black, purple, red, orange, pale yellow), like "inferno".
_RAMP = np.array([[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]], np.float64) / 255


def colormap(values: np.ndarray) -> np.ndarray:
    """``[H, W]`` values -> ``[H, W, 3]`` uint8 through ``_RAMP`` after min-max scaling."""
    v = np.asarray(values, np.float64)
    v = (v - v.min()) / max(float(v.max() - v.min()), 1e-12)
    t = np.linspace(0, 1, len(_RAMP))
    rgb = np.stack([np.interp(v, t, _RAMP[:, c]) for c in range(3)], -1)
    return np.rint(rgb * 255).astype(np.uint8)


def upsample(grid_img: np.ndarray, patch: int) -> np.ndarray:
    """Nearest upsampling of a patch-grid picture ``[h, w, ...]`` to pixels ``[h*patch, w*patch, ...]``."""
    return np.repeat(np.repeat(grid_img, patch, axis=0), patch, axis=1)


def overlay(image: np.ndarray, heat_rgb: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Blend a ``[H, W, 3]`` uint8 heat map over a ``[H, W, 3]`` uint8 image."""
    out = (1 - alpha) * image.astype(np.float64) + alpha * heat_rgb.astype(np.float64)
    return np.rint(out).astype(np.uint8)


def mark_patch(image: np.ndarray, row: int, col: int, patch: int) -> np.ndarray:
    """Draw a 1-pixel cyan square around patch ``(row, col)`` of a ``[H, W, 3]`` uint8 image (a copy)."""
    out = image.copy()
    y0, x0, y1, x1 = row * patch, col * patch, (row + 1) * patch - 1, (col + 1) * patch - 1
    cyan = np.array([0, 255, 255], np.uint8)
    out[y0, x0 : x1 + 1] = out[y1, x0 : x1 + 1] = cyan
    out[y0 : y1 + 1, x0] = out[y0 : y1 + 1, x1] = cyan
    return out


# --- whole pictures (what the CLI writes and an app can show) ------------------------------------------------


def _as_uint8(image: Tensor) -> np.ndarray:
    """``[3, H, W]`` in [0, 1] -> ``[H, W, 3]`` uint8."""
    return np.rint(image.detach().float().cpu().permute(1, 2, 0).numpy() * 255).astype(np.uint8)


@torch.no_grad()
def feature_pictures(model, images: list[Tensor]) -> list[np.ndarray]:
    """PCA-RGB pictures of the encoder's patch features of one or more images, on one shared basis.

    Args:
        model: a ``ReconModel`` (or anything with ``backbone`` and ``patch_size``).
        images: ``[3, H_k, W_k]`` network images in [0, 1] (multiples of the patch size).

    Returns:
        One ``[H_k, W_k, 3]`` uint8 picture per image (each patch one colour).
    """
    p = int(model.patch_size)
    device = next(model.backbone.parameters()).device
    feats = [model.backbone(im[None].to(device))[0].float().cpu() for im in images]  # N_k D
    rgb = pca_rgb(torch.cat(feats))
    out, start = [], 0
    for im, f in zip(images, feats, strict=True):
        h, w = im.shape[-2] // p, im.shape[-1] // p
        part = rgb[start : start + len(f)].reshape(h, w, 3)
        start += len(f)
        out.append(upsample(np.rint(part * 255).astype(np.uint8), p))
    return out


class QueryError(UserError, ValueError):
    """A query patch or block outside the model's grid / depth; the message names the valid range."""


@dataclass
class AttentionPictures:
    """``query`` (view 1, query patch marked), ``self_attention`` (view 1 overlay), ``cross_attention`` (view 2
    overlay, ``None`` without a second image) as ``[H, W, 3]`` uint8, and the cross-attention ``peak`` patch
    ``(row, col)`` of view 2 (``None`` without a second image)."""

    query: np.ndarray
    self_attention: np.ndarray
    cross_attention: np.ndarray | None = None
    peak: tuple[int, int] | None = None


def attention_pictures(model, image1: Tensor, image2: Tensor | None, query: tuple[int, int], block: int = -1):
    """Encoder self-attention and (with ``image2``) decoder cross-attention of one query patch of view 1.

    Args:
        model: a ``ReconModel`` (a bare-encoder stand-in works without ``image2``).
        image1, image2: ``[3, H, W]`` network images in [0, 1].
        query: ``(row, col)`` on view 1's patch grid.
        block: encoder and decoder block (default the last).

    Returns:
        ``AttentionPictures``.

    Raises:
        QueryError: query outside the grid, block out of range, or ``image2`` with a model without a decoder.
    """
    p = int(model.patch_size)
    h, w = image1.shape[-2] // p, image1.shape[-1] // p
    row, col = query
    if not (0 <= row < h and 0 <= col < w):
        raise QueryError(f"query {row},{col} is outside view 1's {h}x{w} patch grid")
    limits = {"encoder": len(model.backbone.blocks)}
    if image2 is not None:
        if getattr(model, "decoder", None) is None:
            raise QueryError("cross-attention needs a model with a decoder")
        limits["decoder"] = len(model.decoder.dec_blocks)
    for what, n in limits.items():
        if not -n <= block < n:
            raise QueryError(f"block {block} is outside the {what}'s {n} blocks")
    device = next(model.backbone.parameters()).device
    prefix = int(model.backbone.num_prefix_tokens)
    weights = encoder_attention(model.backbone, image1[None].to(device), block)[0]
    amap = query_map(weights, prefix + row * w + col, (h, w), prefix)
    picture1 = _as_uint8(image1)
    out = AttentionPictures(
        query=mark_patch(picture1, row, col, p),
        self_attention=mark_patch(overlay(picture1, upsample(colormap(amap), p)), row, col, p),
    )
    if image2 is not None:
        cross = decoder_cross_attention(model, image1[None].to(device), image2[None].to(device), block)
        cmap = query_map(cross, row * w + col, (image2.shape[-2] // p, image2.shape[-1] // p))
        out.cross_attention = overlay(_as_uint8(image2), upsample(colormap(cmap), p))
        r, c = np.unravel_index(int(np.argmax(cmap)), cmap.shape)
        out.peak = (int(r), int(c))
    return out
