"""Patch embedding: a stride-p convolution turning an image into a row-major grid of tokens."""

import logging

from torch import Tensor, nn

logger = logging.getLogger(__name__)


def check_image_size(height: int, width: int, patch_size: int) -> tuple[int, int]:
    """Return the patch grid ``(h, w)``; raise ``ValueError`` naming H, W and p when they do not divide.

    The official encoders either assert (CroCo, DINOv2) or silently floor-crop (MuM); cropping would shift
    every pixel-to-token correspondence downstream, so we refuse instead.
    """
    if height % patch_size or width % patch_size or height <= 0 or width <= 0:
        raise ValueError(
            f"image size H={height}, W={width} is not a positive multiple of the patch size {patch_size}; "
            f"resize or crop to e.g. H={max(patch_size, height // patch_size * patch_size)}, "
            f"W={max(patch_size, width // patch_size * patch_size)}"
        )
    return height // patch_size, width // patch_size


class PatchEmbed(nn.Module):
    """``Conv2d(C, D, kernel=stride=p)`` flattened to tokens (key ``proj``, as in every official layout).

    Args:
        patch_size: p.
        embed_dim: D.
        in_chans: C.
    """

    def __init__(self, patch_size: int, embed_dim: int, in_chans: int = 3) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """x: ``[B, C, H, W]`` -> (tokens ``[B, h*w, D]`` row-major, grid ``(h, w)``)."""
        h, w = check_image_size(x.shape[-2], x.shape[-1], self.patch_size)
        x = self.proj(x)  # B D h w
        return x.flatten(2).transpose(1, 2), (h, w)  # B hw D
