"""The "Inspect the encoder" tab: what a backbone sees, as pictures (``recon.viz``).

For one photo: the PCA of its patch features (first three components as RGB) and the last encoder block's
attention of a query patch; with a second photo: the decoder's cross-view attention of that patch, which peaks at
the matching patch when the model works. The query is the patch the user clicked (original-photo pixels, mapped
to the network image), or the centre patch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.handlers import RunError

INSPECT_SIZE = 224
"""Network long side of the inspected photos: the attention maps are per patch, so a small image is enough."""


@dataclass(frozen=True)
class Inspection:
    """Pictures (``[H, W, 3]`` uint8, caption) and the query patch ``(row, col)`` of view 1."""

    pictures: list[tuple[np.ndarray, str]]
    query: tuple[int, int]


def query_patch(click_xy: tuple[float, float] | None, net_to_orig: np.ndarray, grid: tuple[int, int], patch: int):
    """``(row, col)`` of the network patch under a click at original-photo pixel ``click_xy`` (centre if None)."""
    h, w = grid
    if click_xy is None:
        return h // 2, w // 2
    x, y, _ = np.linalg.solve(np.asarray(net_to_orig, np.float64), [float(click_xy[0]), float(click_xy[1]), 1.0])
    return int(np.clip(y // patch, 0, h - 1)), int(np.clip(x // patch, 0, w - 1))


def inspect_encoder(
    model, image1: str | Path, image2: str | Path | None = None, click_xy: tuple[float, float] | None = None
) -> Inspection:
    """Feature and attention pictures of ``image1`` (and its cross-attention into ``image2``).

    Raises:
        RunError: a photo cannot be read, or the model cannot show what is asked (no decoder for two photos).
    """
    import torch

    from recon.images import load_images
    from recon.viz import attention_pictures, feature_pictures

    paths = [Path(image1)] + ([Path(image2)] if image2 is not None else [])
    views, skipped = load_images(
        paths, size=INSPECT_SIZE, patch_size=int(model.patch_size), square_ok=True, skip_duplicates=False
    )
    if skipped:
        raise RunError(f"cannot read {Path(skipped[0].path).name}: {skipped[0].reason}")
    p = int(model.patch_size)
    v1 = views[0]
    grid = (v1.image.shape[-2] // p, v1.image.shape[-1] // p)
    query = query_patch(click_xy, v1.net_to_orig, grid, p)
    try:
        with torch.no_grad():
            features = feature_pictures(model, [v.image for v in views])
            att = attention_pictures(model, v1.image, views[1].image if len(views) > 1 else None, query)
    except ValueError as err:
        raise RunError(str(err)) from None
    pictures = [(pic, f"PCA of the patch features, photo {k + 1}") for k, pic in enumerate(features)]
    pictures += [(att.query, f"query patch {query}"), (att.self_attention, "encoder self-attention (last block)")]
    if att.cross_attention is not None:
        pictures.append((att.cross_attention, f"decoder cross-attention into photo 2, peak at patch {att.peak}"))
    return Inspection(pictures, query)
