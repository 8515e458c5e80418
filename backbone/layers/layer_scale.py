"""LayerScale: a learned per-channel gain on a residual branch (CaiT; used by DINOv2 and DUNE)."""

import logging

import torch
from torch import Tensor, nn

logger = logging.getLogger(__name__)


class LayerScale(nn.Module):
    """``x * gamma`` with ``gamma`` of shape ``[D]`` (state-dict key ``gamma``, as in DINOv2 checkpoints).

    Args:
        dim: channel count D.
        init_values: initial value of every gain.
    """

    def __init__(self, dim: int, init_values: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_values)))

    def forward(self, x: Tensor) -> Tensor:
        """x: ``[..., D]`` -> ``[..., D]``."""
        return x * self.gamma
