"""VGGT-style feed-forward multi-view reconstruction on a frozen recon backbone.

All views of a sequence go through the network at once; it predicts every camera, depth map and point map with
confidences, without pairs or global optimisation (the 3D results of the MuM supplement use this design with
MuM, DINOv3 or CroCo v2 as the frozen encoder).

1. The frozen encoder (any ``backbone.create`` / ``backbone.load`` model) turns each view into ``h*w`` patch
   tokens, computed without gradient.
2. The aggregator projects them to its width and prepends, per frame, one camera token and ``R`` register
   tokens. The first frame gets its own learned camera / register tokens (VGGT): it defines the world frame.
3. Blocks alternate frame-wise attention (within a view) and global attention (over all tokens of all views),
   frame-wise first, as MuM's multi-view decoder (``training.mum.decoder``), with the same ``Block`` and axial
   RoPE modules; prefix tokens are not rotated.
4. The camera head reads the camera tokens and refines a 9-d pose encoding (``recon.feedforward.camera``)
   ``camera_iterations`` times: each pass adds an embedding of the (detached) previous estimate to the tokens,
   runs a small transformer over the sequence's camera tokens and adds the predicted update.
5. Two dense heads predict depth + confidence and world points + confidence. ``dense_head = "dpt"`` (VGGT): a
   DPT (``recon.model.heads.dpt.DPT``, the DUSt3R / MASt3R module) on four intermediate aggregator outputs (frame
   || global tokens after pairs ``dpt_hooks``), reassembled at strides 4 to 1/2 of the patch grid, fused
   coarse to fine and upsampled to pixels. ``dense_head = "mlp"``: a per-patch MLP and pixel shuffle on the last
   pair's tokens (MASt3R's "linear" head; cheaper, blockier).

Activations (VGGT): depth ``exp``, points ``sign(x) (exp|x| - 1)``, confidences ``1 + exp``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbone.layers import AxialRoPE, Block
from recon.feedforward.camera import POSE_DIM
from recon.model.heads.dpt import DPT

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeedForwardConfig:
    """Sizes of the aggregator and heads (the encoder is given separately)."""

    embed_dim: int = 1024
    """Aggregator width C."""
    depth: int = 48
    """Aggregator blocks: ``depth / 2`` frame-wise and ``depth / 2`` global, alternating (VGGT: 24 + 24)."""
    num_heads: int = 16
    """Attention heads (head dim divisible by 4 for the axial RoPE)."""
    mlp_ratio: float = 4.0
    """Feed-forward hidden width relative to C."""
    num_register_tokens: int = 4
    """Register tokens per frame (VGGT: 4)."""
    layer_scale_init: float | None = 0.01
    """LayerScale gain at initialisation (VGGT: 0.01); ``None``: no LayerScale (the small preset: its few blocks
    must pass information between views from the first steps)."""
    camera_depth: int = 4
    """Transformer blocks of the camera head's trunk (VGGT: 4)."""
    camera_iterations: int = 4
    """Refinement passes of the camera head (VGGT: 4); the loss sees every pass."""
    dense_head: Literal["dpt", "mlp"] = "dpt"
    """Depth / point heads: a DPT on four intermediate outputs (VGGT) or a per-patch MLP on the last one."""
    dpt_features: int = 256
    """``dense_head = "dpt"``: fusion width of the DPT (VGGT: 256)."""
    dpt_layer_dims: tuple[int, int, int, int] = (256, 512, 1024, 1024)
    """``dense_head = "dpt"``: reassembly widths at strides 4, 8, 16, 32 of the patch grid (VGGT's)."""
    head_hidden: int = 256
    """``dense_head = "mlp"``: hidden width of the per-patch MLP."""
    rope_base: float = 100.0
    """Period base of the axial RoPE."""
    max_views: int = 1024
    """Largest number of views one forward pass accepts (a bound on memory before anything is computed)."""

    def __post_init__(self) -> None:
        if self.depth < 2 or self.depth % 2:
            raise ValueError(f"depth must be even and >= 2 (frame + global pairs), got {self.depth}")
        if self.embed_dim % self.num_heads or (self.embed_dim // self.num_heads) % 4:
            raise ValueError(f"embed_dim {self.embed_dim} / num_heads {self.num_heads} must give a head dim % 4 == 0")
        if self.camera_iterations < 1 or self.camera_depth < 1:
            raise ValueError("camera_iterations and camera_depth must be >= 1")
        if self.dense_head not in ("dpt", "mlp"):
            raise ValueError(f"dense_head must be 'dpt' or 'mlp', got {self.dense_head!r}")
        object.__setattr__(self, "dpt_layer_dims", tuple(int(d) for d in self.dpt_layer_dims))  # JSON gives lists
        if len(self.dpt_layer_dims) != 4:
            raise ValueError(f"dpt_layer_dims must hold 4 widths, got {self.dpt_layer_dims}")

    @property
    def dpt_hooks(self) -> list[int]:
        """The four frame + global pairs (0-based) whose outputs feed the DPT, evenly spaced, the last one last
        (VGGT's [4, 11, 17, 23] of 24 is [5, 11, 17, 23] here; 2 pairs: [0, 0, 1, 1])."""
        n = self.depth // 2
        return [max(0, round((k + 1) * n / 4) - 1) for k in range(4)]


PRESETS = {
    # Trains on one CPU core in about a minute (tests, docs/feedforward.md figures).
    "small": FeedForwardConfig(
        embed_dim=64,
        depth=4,
        num_heads=4,
        num_register_tokens=2,
        layer_scale_init=None,
        camera_depth=1,
        camera_iterations=2,
        dpt_features=32,
        dpt_layer_dims=(16, 32, 64, 64),
    ),
    # VGGT's aggregator and heads (1024-d, 24 + 24 blocks, 16 heads, 4 registers, 4-block camera trunk, 4 passes).
    "paper": FeedForwardConfig(),
}


@dataclass
class FeedForwardOutput:
    """Predictions for ``B`` sequences of ``V`` views of ``H x W`` pixels (world = first camera's frame).

    Attributes:
        pose_enc: ``camera_iterations`` tensors ``[B, V, 9]``, coarse to fine (the last one is the answer).
        depth: ``[B, V, H, W]`` z-depth (> 0).
        depth_conf: ``[B, V, H, W]`` depth confidence (> 1).
        pts3d: ``[B, V, H, W, 3]`` world points.
        pts_conf: ``[B, V, H, W]`` point confidence (> 1).
    """

    pose_enc: list[Tensor]
    depth: Tensor
    depth_conf: Tensor
    pts3d: Tensor
    pts_conf: Tensor


def inverse_log(x: Tensor) -> Tensor:
    """VGGT's point activation ``sign(x) (exp(|x|) - 1)``: linear near 0, covers large ranges."""
    return torch.sign(x) * torch.expm1(x.abs())


class FeedForwardDPT(nn.Module):
    """DPT on the intermediate aggregator outputs: a list of ``[N, hw, C_in]`` -> ``[N, out, H, W]``."""

    def __init__(self, dim_in: int, config: FeedForwardConfig, patch_size: int, out_channels: int) -> None:
        super().__init__()
        c = config
        self.dpt = DPT(
            [dim_in] * 4,
            [0, 1, 2, 3],  # the caller passes the four hooked outputs in order
            patch_size,
            out_channels=out_channels,
            feature_dim=c.dpt_features,
            last_dim=max(1, c.dpt_features // 2),
            layer_dims=c.dpt_layer_dims,
        )

    def forward(self, tokens: list[Tensor], grid: tuple[int, int]) -> Tensor:
        p = self.dpt.patch_size
        return self.dpt(tokens, (grid[0] * p, grid[1] * p))


class DenseHead(nn.Module):
    """Per-patch MLP + pixel shuffle on the last of a list of ``[N, hw, C_in]`` -> ``[N, out, H, W]``."""

    def __init__(self, dim_in: int, hidden: int, patch_size: int, out_channels: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.norm = nn.LayerNorm(dim_in)
        self.mlp = nn.Sequential(nn.Linear(dim_in, hidden), nn.GELU(), nn.Linear(hidden, out_channels * patch_size**2))

    def forward(self, tokens: list[Tensor], grid: tuple[int, int]) -> Tensor:
        h, w = grid
        x = self.mlp(self.norm(tokens[-1]))  # N hw out*p*p
        x = x.transpose(1, 2).reshape(x.shape[0], -1, h, w)  # N out*p*p h w
        return F.pixel_shuffle(x, self.patch_size)  # N out H W


class CameraHead(nn.Module):
    """Iterative refinement of the 9-d pose encodings from the camera tokens ``[B, V, C_in]``."""

    def __init__(self, dim_in: int, config: FeedForwardConfig) -> None:
        super().__init__()
        c = config
        self.iterations = c.camera_iterations
        self.token_norm = nn.LayerNorm(dim_in)
        self.proj = nn.Linear(dim_in, c.embed_dim)
        self.pose_embed = nn.Linear(POSE_DIM, c.embed_dim)
        self.trunk = nn.ModuleList(
            Block(c.embed_dim, c.num_heads, mlp_ratio=c.mlp_ratio, layer_scale_init=c.layer_scale_init)
            for _ in range(c.camera_depth)
        )
        self.out_norm = nn.LayerNorm(c.embed_dim)
        self.out = nn.Linear(c.embed_dim, POSE_DIM)
        # Start of the refinement: identity rotation, zero translation, ~57 deg field of view.
        self.register_buffer("start", torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1], dtype=torch.float32), persistent=False)

    def forward(self, tokens: Tensor) -> list[Tensor]:
        B, V, _ = tokens.shape
        x0 = self.proj(self.token_norm(tokens))  # B V C
        pose = self.start.to(x0.dtype).expand(B, V, POSE_DIM)
        out = []
        for _ in range(self.iterations):
            # The previous estimate is detached, as in VGGT: each pass learns an update, not the whole chain.
            x = x0 + self.pose_embed(pose.detach())
            for blk in self.trunk:
                x = blk(x)
            pose = pose + self.out(self.out_norm(x))
            out.append(pose)
        return out


class FeedForwardModel(nn.Module):
    """Frozen encoder + alternating-attention aggregator + camera, depth and point heads.

    Args:
        encoder: a recon backbone (``spec``, ``forward(images) -> [B, h*w, D]``); frozen here (no gradient, eval
            mode whatever ``train()`` is called with).
        config: aggregator and head sizes.
    """

    def __init__(self, encoder: nn.Module, config: FeedForwardConfig = PRESETS["small"]) -> None:
        super().__init__()
        c = config
        self.config = c
        self.encoder = encoder.requires_grad_(False).eval()
        self.patch_size = int(encoder.spec.patch_size)
        self.embed = nn.Linear(encoder.spec.embed_dim, c.embed_dim)
        # Index 0: the first frame (the world frame), index 1: every other frame.
        self.camera_token = nn.Parameter(torch.randn(2, 1, c.embed_dim) * 1e-6)
        self.register_tokens = nn.Parameter(torch.randn(2, c.num_register_tokens, c.embed_dim) * 1e-6)
        self.rope = AxialRoPE(c.embed_dim // c.num_heads, base=c.rope_base)

        def block() -> Block:
            return Block(c.embed_dim, c.num_heads, mlp_ratio=c.mlp_ratio, layer_scale_init=c.layer_scale_init)

        self.frame_blocks = nn.ModuleList(block() for _ in range(c.depth // 2))
        self.global_blocks = nn.ModuleList(block() for _ in range(c.depth // 2))
        self.camera_head = CameraHead(2 * c.embed_dim, c)
        if c.dense_head == "dpt":
            self.depth_head = FeedForwardDPT(2 * c.embed_dim, c, self.patch_size, 2)
            self.point_head = FeedForwardDPT(2 * c.embed_dim, c, self.patch_size, 4)
        else:
            self.depth_head = DenseHead(2 * c.embed_dim, c.head_hidden, self.patch_size, 2)
            self.point_head = DenseHead(2 * c.embed_dim, c.head_hidden, self.patch_size, 4)

    def train(self, mode: bool = True) -> FeedForwardModel:
        super().train(mode)
        self.encoder.eval()  # frozen: dropout / norm statistics never switch to training behaviour
        return self

    def trainable_state_dict(self) -> dict[str, Tensor]:
        """Everything but the frozen encoder (what a feed-forward checkpoint stores)."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("encoder.")}

    def _check_input(self, images: Tensor) -> None:
        if images.ndim != 5 or images.shape[2] != 3:
            raise ValueError(f"images must be [B, V, 3, H, W] (one aspect ratio per call), got {tuple(images.shape)}")
        V, (H, W), p = images.shape[1], images.shape[-2:], self.patch_size
        if not 1 <= V <= self.config.max_views:
            raise ValueError(f"{V} views per sequence; between 1 and {self.config.max_views} are accepted")
        if H % p or W % p:
            raise ValueError(f"image size {H}x{W} is not a multiple of the encoder's patch size {p}")

    def head_pairs(self) -> list[int]:
        """The frame + global pairs whose outputs the dense heads read, in order (the last one is the final)."""
        c = self.config
        return c.dpt_hooks if c.dense_head == "dpt" else [c.depth // 2 - 1]

    def aggregate(self, images: Tensor) -> tuple[dict[int, Tensor], tuple[int, int]]:
        """``images [B, V, 3, H, W]`` -> ``{pair: tokens [B, V, 1 + R + h*w, 2C]}`` (frame || global output of that
        frame + global pair) for the pairs of ``head_pairs`` and the last pair, and the patch grid ``(h, w)``."""
        self._check_input(images)
        B, V, _, H, W = images.shape
        p, c = self.patch_size, self.config
        h, w = H // p, W // p
        with torch.no_grad():
            feats = self.encoder(images.flatten(0, 1))  # BV hw D
        x = self.embed(feats)  # BV hw C
        first = torch.zeros(B, V, dtype=torch.long, device=x.device)
        first[:, 1:] = 1
        first = first.flatten()
        prefix = torch.cat((self.camera_token[first], self.register_tokens[first]), dim=1)  # BV 1+R C
        x = torch.cat((prefix.to(x.dtype), x), dim=1)  # BV P C
        n_prefix = 1 + c.num_register_tokens
        P, C = x.shape[1], x.shape[2]
        frame_rope = self.rope.for_grid(h, w, num_prefix=n_prefix)

        def global_rope(q: Tensor) -> Tensor:  # B heads V*P Dh: each view's tokens get their own grid positions
            heads = q.shape[1]
            return frame_rope(q.unflatten(2, (V, P)).flatten(1, 2)).unflatten(1, (heads, V)).flatten(2, 3)

        keep = {*self.head_pairs(), len(self.frame_blocks) - 1}
        frame_out = global_out = x
        outputs = {}
        for k, (frame_blk, global_blk) in enumerate(zip(self.frame_blocks, self.global_blocks, strict=True)):
            frame_out = frame_blk(global_out, rope=frame_rope)  # BV P C
            global_out = global_blk(frame_out.reshape(B, V * P, C), rope=global_rope).reshape(B * V, P, C)
            if k in keep:
                outputs[k] = torch.cat((frame_out, global_out), dim=-1).reshape(B, V, P, 2 * C)
        return outputs, (h, w)

    def forward(self, images: Tensor) -> FeedForwardOutput:
        """Predict cameras, depth and points for ``images [B, V, 3, H, W]`` RGB in [0, 1].

        Raises:
            ValueError: not a 5-d batch, too many views, or H / W not multiples of the patch size.
        """
        B, V, _, H, W = images.shape if images.ndim == 5 else (0, 0, 0, 0, 0)
        outputs, grid = self.aggregate(images)
        n_prefix = 1 + self.config.num_register_tokens
        pose_enc = self.camera_head(outputs[len(self.frame_blocks) - 1][:, :, 0])
        patches = [outputs[k][:, :, n_prefix:].flatten(0, 1) for k in self.head_pairs()]  # each BV hw 2C
        d = self.depth_head(patches, grid).float().unflatten(0, (B, V))  # B V 2 H W
        pt = self.point_head(patches, grid).float().unflatten(0, (B, V))  # B V 4 H W
        return FeedForwardOutput(
            pose_enc=[pe.float() for pe in pose_enc],
            depth=torch.exp(d[:, :, 0].clamp(max=30.0)),
            depth_conf=1 + torch.exp(d[:, :, 1].clamp(max=30.0)),
            pts3d=inverse_log(pt[:, :, :3].clamp(-30.0, 30.0)).permute(0, 1, 3, 4, 2),
            pts_conf=1 + torch.exp(pt[:, :, 3].clamp(max=30.0)),
        )


def build_model(encoder: nn.Module, preset: str | FeedForwardConfig = "small") -> FeedForwardModel:
    """A feed-forward model on ``encoder`` with a named preset (``small`` / ``paper``) or a config."""
    if isinstance(preset, str):
        if preset not in PRESETS:
            raise ValueError(f"unknown feed-forward preset {preset!r}; known: {sorted(PRESETS)}")
        preset = PRESETS[preset]
    return FeedForwardModel(encoder, preset)
