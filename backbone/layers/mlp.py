"""Feed-forward layers: the GELU MLP of every ViT here, and the fused SwiGLU of DINOv2 ViT-g."""

import logging

import torch.nn.functional as F
from torch import Tensor, nn

logger = logging.getLogger(__name__)


class Mlp(nn.Module):
    """``fc2(GELU(fc1(x)))`` with exact (erf) GELU, as in timm / CroCo / DINOv2.

    Args:
        dim: input and output width D.
        hidden_dim: hidden width (``mlp_ratio * D``).
        bias: whether both linear layers have a bias.
        out_dim: output width (default D; MASt3R's local-feature head maps to per-pixel channels).
    """

    def __init__(self, dim: int, hidden_dim: int, bias: bool = True, out_dim: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim, bias=bias)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, out_dim or dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        """x: ``[B, N, D]`` -> ``[B, N, out_dim]``."""
        return self.fc2(self.act(self.fc1(x)))


def swiglu_hidden_dim(hidden_dim: int) -> int:
    """Hidden width of DINOv2's ``SwiGLUFFNFused``: 2/3 of the MLP width rounded up to a multiple of 8.

    The 2/3 keeps the parameter count of a GELU MLP with the same nominal width (SwiGLU has three matrices
    instead of two); ViT-g/14: 4 * 1536 = 6144 -> 4096.
    """
    return (int(hidden_dim * 2 / 3) + 7) // 8 * 8


class SwiGLUFFN(nn.Module):
    """SwiGLU feed-forward with the DINOv2 key layout ``w12`` (both gates in one matrix) and ``w3``.

    Args:
        dim: input and output width D.
        hidden_dim: nominal hidden width (``mlp_ratio * D``); the real one is ``swiglu_hidden_dim(hidden_dim)``.
        bias: whether the linear layers have biases.
    """

    def __init__(self, dim: int, hidden_dim: int, bias: bool = True) -> None:
        super().__init__()
        hidden = swiglu_hidden_dim(hidden_dim)
        self.w12 = nn.Linear(dim, 2 * hidden, bias=bias)
        self.w3 = nn.Linear(hidden, dim, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        """x: ``[B, N, D]`` -> ``[B, N, D]``."""
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)
