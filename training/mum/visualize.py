"""Reconstruction images: input | masked input | reconstruction (visible patches pasted back), one row per view.

The prediction is in per-patch normalised pixels; it is brought back to image values with each target patch's own
mean and standard deviation (as the official ``qualitative_evaluation``), then from ImageNet normalisation to RGB.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from backbone.fileio import write_bytes_atomic
from training.mum.decoder import MuMAutoEncoder, patchify, unpatchify

logger = logging.getLogger(__name__)


@torch.no_grad()
def reconstruction_grid(images: Tensor, pred: Tensor, mask: Tensor, model: MuMAutoEncoder, max_views: int = 4):
    """``[rows * H, 3 * W, 3]`` uint8 grid for the first sequence of a batch.

    Args:
        images: ``[n, S, 3, H, W]`` RGB in [0, 1].
        pred: ``[n*S, L, p*p*3]`` predictions of the step.
        mask: ``[n*S, L]`` (1 = masked).
        model: the autoencoder (patch size and normalisation).
        max_views: rows shown.
    """
    S = images.shape[1]
    rows = min(S, max_views)
    x = images[0, :rows].float()
    H, W = x.shape[-2:]
    p = model.patch_size
    grid = (H // p, W // p)
    normed = model.encoder.normalize(x)
    target = patchify(normed, p)  # V L P
    mean, std = target.mean(-1, keepdim=True), (target.var(-1, keepdim=True) + 1e-6).sqrt()
    recon = pred[:rows].float() * std + mean
    m = mask[:rows, :, None].float()
    pasted = unpatchify(recon * m + target * (1 - m), p, grid)
    masked = unpatchify(target * (1 - m), p, grid)
    mean_rgb = torch.tensor(model.encoder.spec.mean, device=x.device).view(1, 3, 1, 1)
    std_rgb = torch.tensor(model.encoder.spec.std, device=x.device).view(1, 3, 1, 1)

    def rgb(t: Tensor) -> Tensor:
        return (t * std_rgb + mean_rgb).clamp(0, 1)

    masked = rgb(masked) * unpatchify((1 - m).expand_as(target), p, grid)  # black where masked
    panel = torch.cat((x, masked, rgb(pasted)), dim=-1)  # V 3 H 3W
    panel = panel.permute(0, 2, 3, 1).reshape(rows * H, 3 * W, 3)
    return (panel.cpu().numpy() * 255).round().astype(np.uint8)


class ReconstructionLogger:
    """Writes reconstruction grids to TensorBoard (``tb/``, tag ``reconstruction``) and ``reconstructions/*.png``."""

    def __init__(self, output_dir: str | os.PathLike, enabled: bool = True, tensorboard: bool = True) -> None:
        self.enabled = enabled
        self.folder = Path(output_dir) / "reconstructions"
        self._writer = None
        if enabled and tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(Path(output_dir) / "tb"), filename_suffix=".images")

    def log(self, step: int, images: Tensor, pred: Tensor, mask: Tensor, model: MuMAutoEncoder) -> Path | None:
        if not self.enabled:
            return None
        grid = reconstruction_grid(images, pred, mask, model)
        if self._writer is not None:
            self._writer.add_image("reconstruction", grid, step, dataformats="HWC")
            self._writer.flush()
        from PIL import Image

        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"it_{step:08d}.png"
        buf = io.BytesIO()
        Image.fromarray(grid).save(buf, format="PNG")
        return write_bytes_atomic(path, buf.getvalue())

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
