"""MuM's light multi-view decoder and the masked autoencoder around the MuM encoder (davnords/MuM, ``decoderb``).

Pre-training only: the reconstruction backbone is the encoder alone (``backbone.mum``). Reference:
reference/dune_mum.md section 9 (decoder, masking, loss) and 10 (checkpoint keys), conformance README section 4.

Masked forward (``MuMAutoEncoder.forward_normalized``), for ``imgs [B, S, 3, H, W]`` (ImageNet-normalised):

1. patch-embed every view (``N = B*S`` images, ``L = h*w`` patches);
2. mask each view independently: keep ``int(L * (1 - ratio))`` patches, those with the smallest uniform noise
   (MAE's ``argsort(noise)``); the kept patches keep their own RoPE positions (tables gathered per view);
3. prepend cls, run the encoder blocks and the final norm;
4. decoder: ``decoder_embed``, mask tokens at the removed positions (unshuffled with ``ids_restore``), then
   frame-wise and global blocks alternating, frame-wise first. Frame blocks attend within a view (RoPE on the
   patches, cls unrotated); global blocks attend over all ``S`` views of a sequence with a RoPE table whose cls
   rows are **zero for sin and cos**, so the cls query and key are zeroed (the official behaviour, reproduced on
   purpose: the released decoder was trained with it). No view embedding: views are permutation-equivariant.
5. ``decoder_norm``, ``decoder_pred`` to ``p*p*3`` normalised pixels per patch, cls dropped.

Loss: per-patch normalised target (mean and unbiased variance over the ``p*p*3`` values, eps 1e-6), MSE over the
values, averaged over the masked patches of every view.

State dicts: ``official_state_dict`` / ``load_official`` give the flat layout of ``MuM_ViTLarge_BaseDecoder.pth``
(446 keys at full size) and ``encoder_official_state_dict`` the one of ``MuM_ViTLarge.pth`` (294 keys).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from backbone.checkpoint import CheckpointError, check_state_dict, load_strict, safe_load
from backbone.layers import AxialRoPE, Block
from backbone.layers.rope import RopeFn, rotate_half
from backbone.limits import check_heads, count_blocks
from backbone.mum import MUM_DECODER_PREFIXES, NUMERICS, mum_config_from_state, split_mum_state
from backbone.vit import VisionTransformer, ViTConfig

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MuMDecoderConfig:
    """Sizes of the light multi-view decoder (official ``vit_large``: 768-d, 12 blocks, 16 heads of 48)."""

    embed_dim: int = 768
    """Decoder width."""
    depth: int = 12
    """Total blocks: ``depth / 2`` frame-wise and ``depth / 2`` global, alternating, frame-wise first."""
    num_heads: int = 16
    """Attention heads (official: 16, i.e. head dim 48; not 12)."""
    mlp_ratio: float = 4.0
    """Feed-forward hidden width relative to the width."""
    norm_eps: float = 1e-6
    """LayerNorm epsilon (the autoencoder's ``norm_layer``: 1e-6 in the release, 1e-5 in train-dev's config)."""
    patch_size: int = 16
    """Patch side p; the prediction has ``p*p*3`` values per patch."""
    rope_base: float = 100.0
    """Period base of the decoder's axial RoPE."""

    def __post_init__(self) -> None:
        if self.depth < 2 or self.depth % 2:
            raise ValueError(f"decoder depth must be even and >= 2 (frame + global pairs), got {self.depth}")
        if self.embed_dim % self.num_heads or (self.embed_dim // self.num_heads) % 4:
            raise ValueError(
                f"decoder embed_dim {self.embed_dim} / num_heads {self.num_heads} must give a head dim divisible by 4"
            )


# ---------------------------------------------------------------------------------------------- helpers
def random_masking(
    num: int,
    length: int,
    mask_ratio: float,
    *,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> tuple[Tensor, Tensor, Tensor]:
    """MAE masking of ``num`` token sequences of ``length``; each sequence (view) is masked independently.

    Args:
        num: N sequences (``B*S`` views).
        length: L patches per view.
        mask_ratio: share of masked patches; ``int(L * (1 - ratio))`` are kept in every view.
        noise: ``[N, L]`` uniform noise to use (e.g. a recorded one); drawn with ``torch.rand`` otherwise.
        generator: CPU generator for the noise (the noise is drawn on the CPU and moved, so that it does not
            depend on the device).
        device: where the outputs go.

    Returns:
        ``ids_keep [N, L_keep]`` int64, ``ids_restore [N, L]`` int64, ``mask [N, L]`` float (1 = masked).
    """
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
    len_keep = int(length * (1 - mask_ratio))
    if len_keep < 1:
        raise ValueError(f"mask_ratio {mask_ratio} keeps no patch of {length}; use larger images or a lower ratio")
    if noise is None:
        noise = torch.rand(num, length, generator=generator)
    if tuple(noise.shape) != (num, length):
        raise ValueError(f"noise must be [{num}, {length}], got {tuple(noise.shape)}")
    noise = noise.to(device)
    ids_shuffle = torch.argsort(noise, dim=1)  # ascending: small noise is kept
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :len_keep]
    mask = torch.ones(num, length, device=noise.device)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return ids_keep, ids_restore, mask


def patchify(imgs: Tensor, patch_size: int) -> Tensor:
    """``[N, 3, H, W]`` -> ``[N, h*w, p*p*3]``, each patch ordered (row in patch, column in patch, channel)."""
    N, C, H, W = imgs.shape
    p = patch_size
    h, w = H // p, W // p
    x = imgs.reshape(N, C, h, p, w, p)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(N, h * w, p * p * C)


def unpatchify(patches: Tensor, patch_size: int, grid: tuple[int, int]) -> Tensor:
    """Inverse of ``patchify`` for any ``grid = (h, w)`` (the official one is square-only): ``[N, 3, H, W]``."""
    N = patches.shape[0]
    h, w = grid
    p = patch_size
    x = patches.reshape(N, h, w, p, p, 3)
    x = torch.einsum("nhwpqc->nchpwq", x)
    return x.reshape(N, 3, h * p, w * p)


def normalized_targets(imgs: Tensor, patch_size: int) -> Tensor:
    """Per-patch normalised pixels ``[N, L, p*p*3]``: ``(t - mean) / sqrt(var_unbiased + 1e-6)`` per patch."""
    target = patchify(imgs, patch_size)
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)  # unbiased, as the official norm_pix_loss
    return (target - mean) / (var + 1e-6) ** 0.5


def masked_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean over masked patches of the per-patch MSE: ``pred``/``target`` ``[N, L, P]``, ``mask [N, L]``."""
    per_patch = (pred.float() - target.float()).pow(2).mean(dim=-1)  # N L
    return (per_patch * mask).sum() / mask.sum()


def _table_rope(sin: Tensor, cos: Tensor, num_prefix: int, dtype: torch.dtype) -> RopeFn:
    """A ``RopeFn`` from explicit tables broadcastable to ``[B, heads, N - num_prefix, Dh]``.

    The whole q / k passes through ``dtype`` as in ``AxialRoPE.for_grid`` (and the official attention).
    """

    def apply(x: Tensor) -> Tensor:  # B heads N Dh
        y = x.to(dtype)
        rot = y[:, :, num_prefix:]
        rot = rot * cos + rotate_half(rot) * sin
        y = torch.cat((y[:, :, :num_prefix], rot), dim=2) if num_prefix else rot
        return y.to(x.dtype)

    return apply


# ---------------------------------------------------------------------------------------------- decoder
class MuMDecoder(nn.Module):
    """The light multi-view decoder; its attribute names are the official state-dict keys.

    Args:
        encoder_dim: width of the encoder tokens it reads.
        config: decoder sizes.
    """

    def __init__(self, encoder_dim: int, config: MuMDecoderConfig = MuMDecoderConfig()) -> None:
        super().__init__()
        c = config
        self.config = c
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.embed_dim))
        self.rope_embed_decoder = AxialRoPE(c.embed_dim // c.num_heads, base=c.rope_base, dtype=torch.float32)
        self.decoder_embed = nn.Linear(encoder_dim, c.embed_dim)

        def block() -> Block:
            return Block(c.embed_dim, c.num_heads, mlp_ratio=c.mlp_ratio, norm_eps=c.norm_eps)

        self.decoder_frame_blocks = nn.ModuleList(block() for _ in range(c.depth // 2))
        self.decoder_global_blocks = nn.ModuleList(block() for _ in range(c.depth // 2))
        self.decoder_norm = nn.LayerNorm(c.embed_dim, eps=c.norm_eps)
        self.decoder_pred = nn.Linear(c.embed_dim, c.patch_size**2 * 3)

    def forward(self, latent: Tensor, ids_restore: Tensor, num_views: int, grid: tuple[int, int]) -> Tensor:
        """Predict the normalised pixels of every patch.

        Args:
            latent: ``[B*S, 1 + L_keep, D_enc]`` encoder output (cls first, kept patches in ``ids_keep`` order).
            ids_restore: ``[B*S, L]`` from ``random_masking``.
            num_views: S (views per sequence; consecutive groups of S rows form a sequence).
            grid: patch grid ``(h, w)`` with ``h*w = L``.

        Returns:
            ``[B*S, L, p*p*3]`` predictions (cls dropped).
        """
        N, L = ids_restore.shape
        S = num_views
        if N % S:
            raise ValueError(f"{N} views are not a whole number of sequences of {S}")
        B = N // S
        x = self.decoder_embed(latent)  # N 1+Lk C
        C = x.shape[-1]
        masks = self.mask_token.to(x.dtype).expand(N, L + 1 - x.shape[1], C)
        patches = torch.cat((x[:, 1:], masks), dim=1)  # N L C, kept first then masked
        patches = torch.gather(patches, 1, ids_restore[:, :, None].expand(-1, -1, C))  # unshuffle
        x = torch.cat((x[:, :1], patches), dim=1)  # N 1+L C
        P = L + 1
        h, w = grid
        rope = self.rope_embed_decoder
        sin, cos = rope.tables(h, w)  # hw Dh
        frame_rope = _table_rope(sin, cos, 1, rope.dtype)
        # Global attention: each view contributes [cls, patches]; the cls rows of the table are 0 for sin AND cos,
        # which zeroes the cls q and k (official quirk, see the module doc).
        zero = sin.new_zeros(1, sin.shape[-1])
        sin_g, cos_g = torch.cat((zero, sin)).repeat(S, 1), torch.cat((zero, cos)).repeat(S, 1)  # S*P Dh
        global_rope = _table_rope(sin_g, cos_g, 0, rope.dtype)
        for frame_blk, global_blk in zip(self.decoder_frame_blocks, self.decoder_global_blocks, strict=True):
            x = frame_blk(x, rope=frame_rope)  # N P C
            x = global_blk(x.reshape(B, S * P, C), rope=global_rope).reshape(N, P, C)
        x = self.decoder_pred(self.decoder_norm(x))
        return x[:, 1:]


# ---------------------------------------------------------------------------------------------- autoencoder
class MuMAutoEncoder(nn.Module):
    """MuM encoder (``backbone.vit.VisionTransformer`` with a MuM config) + the light multi-view decoder.

    Args:
        encoder_config: a MuM ``ViTConfig`` (``backbone.create("mum_vitl16", numerics="autoencoder", ...).config``).
        decoder_config: decoder sizes (``patch_size`` must equal the encoder's).
    """

    def __init__(self, encoder_config: ViTConfig, decoder_config: MuMDecoderConfig = MuMDecoderConfig()) -> None:
        super().__init__()
        if encoder_config.rope != "axial" or not encoder_config.cls_token or encoder_config.num_register_tokens:
            raise ValueError("MuMAutoEncoder needs a MuM encoder config (axial RoPE, one cls token, no registers)")
        if decoder_config.patch_size != encoder_config.patch_size:
            decoder_config = dataclasses.replace(decoder_config, patch_size=encoder_config.patch_size)
        self.encoder = VisionTransformer(encoder_config)
        self.decoder = MuMDecoder(encoder_config.embed_dim, decoder_config)
        self.patch_size = encoder_config.patch_size
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """The official ``init_weights`` for training from scratch; a no-op on the meta device.

        Linear: trunc-normal 0.02, bias 0; cls and mask tokens: normal 0.02; LayerNorm: ones / zeros; patch
        embedding: uniform +-1/sqrt(3 p^2) (weight and bias, the conv default bound without the sqrt(5) factor).
        """
        if self.encoder.patch_embed.proj.weight.is_meta:
            return
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.encoder.cls_token, std=0.02)
        nn.init.normal_(self.decoder.mask_token, std=0.02)
        bound = 1.0 / math.sqrt(3 * self.patch_size**2)
        nn.init.uniform_(self.encoder.patch_embed.proj.weight, -bound, bound)
        nn.init.uniform_(self.encoder.patch_embed.proj.bias, -bound, bound)

    def normalize(self, images: Tensor) -> Tensor:
        """``[B, S, 3, H, W]`` RGB in [0, 1] -> ImageNet-normalised (the encoder's mean / std)."""
        return self.encoder.normalize(images.flatten(0, 1)).reshape(images.shape)

    def forward_encoder(
        self, imgs: Tensor, mask_ratio: float, noise: Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, tuple[int, int]]:
        """Masked encoder on normalised ``imgs [N, 3, H, W]``.

        Returns:
            ``latent [N, 1 + L_keep, D]`` (after the final norm), ``mask [N, L]``, ``ids_restore [N, L]``,
            ``ids_keep [N, L_keep]``, grid ``(h, w)``.
        """
        enc = self.encoder
        x, (h, w) = enc.patch_embed(imgs)  # N L D
        N, L, D = x.shape
        ids_keep, ids_restore, mask = random_masking(
            N, L, mask_ratio, noise=noise, generator=generator, device=x.device
        )
        x = torch.gather(x, 1, ids_keep[:, :, None].expand(-1, -1, D))
        x = torch.cat((enc.cls_token.to(x.dtype).expand(N, -1, -1), x), dim=1)
        rope = enc.rope_embed
        sin, cos = rope.tables(h, w)  # L Dh
        # Each kept patch keeps its own position: the tables are gathered per view, shared over heads.
        rope_fn = _table_rope(sin[ids_keep][:, None], cos[ids_keep][:, None], 1, rope.dtype)
        for blk in enc.blocks:
            x = blk(x, rope=rope_fn)
        return enc.norm(x), mask, ids_restore, ids_keep, (h, w)

    def forward_normalized(
        self,
        imgs: Tensor,
        mask_ratio: float = 0.75,
        *,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """The official ``forward`` on ImageNet-normalised sequences.

        Args:
            imgs: ``[B, S, 3, H, W]`` normalised; H and W multiples of the patch size.
            mask_ratio: share of masked patches per view.
            noise: ``[B*S, L]`` masking noise (e.g. recorded); otherwise drawn with ``generator``.
            generator: CPU generator for the noise.

        Returns:
            ``loss`` (scalar), ``pred [B*S, L, p*p*3]``, ``mask [B*S, L]`` (1 = masked), ``ids_restore``.
        """
        if imgs.ndim != 5 or imgs.shape[2] != 3:
            raise ValueError(f"expected imgs [B, S, 3, H, W], got shape {tuple(imgs.shape)}")
        B, S = imgs.shape[:2]
        flat = imgs.flatten(0, 1)
        latent, mask, ids_restore, _, grid = self.forward_encoder(flat, mask_ratio, noise, generator)
        pred = self.decoder(latent, ids_restore, S, grid)
        target = normalized_targets(flat.float(), self.patch_size)
        loss = masked_mse(pred, target, mask)
        return {"loss": loss, "pred": pred, "mask": mask, "ids_restore": ids_restore}

    def forward(
        self,
        images: Tensor,
        mask_ratio: float = 0.75,
        *,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """``forward_normalized`` on ``images [B, S, 3, H, W]`` RGB in [0, 1] (normalised here)."""
        return self.forward_normalized(self.normalize(images), mask_ratio, noise=noise, generator=generator)


# ---------------------------------------------------------------------------------------------- official layout
def official_state_dict(model: MuMAutoEncoder) -> dict[str, Tensor]:
    """The flat key layout of ``MuM_ViTLarge_BaseDecoder.pth``: encoder keys as in ``backbone.mum`` + decoder keys.

    Our modules already carry the official names under ``encoder.`` / ``decoder.``; the map removes the prefix and
    puts the keys in the release's order (``cls_token``, ``mask_token``, encoder, decoder).
    """
    encoder = dict(model.encoder.state_dict())
    decoder = dict(model.decoder.state_dict())
    out = {"cls_token": encoder.pop("cls_token"), "mask_token": decoder.pop("mask_token")}
    out.update(encoder)
    out.update(decoder)
    return out


def encoder_official_state_dict(model: MuMAutoEncoder | VisionTransformer) -> dict[str, Tensor]:
    """The key layout of ``MuM_ViTLarge.pth`` (encoder only, 294 keys at full size).

    The release's ``mum_vitl16`` class keeps ``rope_embed.periods`` in bfloat16, so the periods are stored in
    bfloat16 here too (recomputed values; the official loader casts to its buffer's dtype either way). A file in
    this layout is read back by ``backbone.load`` with the encoder-only entry point's numerics (LayerNorm eps
    1e-5, bf16 RoPE), as the official code would: save with ``backbone.save`` to keep the training numerics.
    """
    encoder = model.encoder if isinstance(model, MuMAutoEncoder) else model
    state = dict(encoder.state_dict())
    rope = encoder.rope_embed
    exponent = 2 * torch.arange(rope.head_dim // 4, dtype=torch.bfloat16) / (rope.head_dim // 2)
    state["rope_embed.periods"] = (rope.base**exponent).to(state["rope_embed.periods"].device)
    return state


def _decoder_config_from_state(state: Mapping[str, Tensor], encoder_config: ViTConfig) -> MuMDecoderConfig:
    try:
        dim, _ = state["decoder_embed.weight"].shape
        n_periods = state["rope_embed_decoder.periods"].shape[0]
        out_dim = state["decoder_pred.weight"].shape[0]
    except KeyError as err:
        raise CheckpointError(f"not a MuM autoencoder state dict: missing {err.args[0]!r}") from None
    frame = count_blocks(state, "decoder_frame_blocks.")  # bounded before anything is built
    glob = count_blocks(state, "decoder_global_blocks.")
    if frame != glob:
        raise CheckpointError(f"MuM decoder has {frame} frame blocks but {glob} global blocks")
    check_heads("decoder ", dim, dim // (4 * n_periods) if n_periods else 0, rope=True)
    patch = encoder_config.patch_size
    if out_dim != patch * patch * 3:
        raise CheckpointError(f"decoder_pred has {out_dim} outputs; patch size {patch} needs {patch * patch * 3}")
    return MuMDecoderConfig(
        embed_dim=dim,
        depth=2 * frame,
        num_heads=dim // (4 * n_periods),
        norm_eps=encoder_config.norm_eps,
        patch_size=patch,
    )


def autoencoder_configs_from_state(
    state: Mapping[str, Tensor], numerics: str = "autoencoder"
) -> tuple[ViTConfig, MuMDecoderConfig]:
    """Encoder and decoder configs from the shapes of an official autoencoder state dict."""
    encoder_state, had_decoder = split_mum_state(state)
    if not had_decoder:
        raise CheckpointError("this MuM state dict has no decoder keys (encoder-only layout); use backbone.load")
    encoder_config = mum_config_from_state(encoder_state, numerics)
    return encoder_config, _decoder_config_from_state(state, encoder_config)


def load_official(
    path_or_state: str | os.PathLike | Mapping,
    *,
    device: str | torch.device = "cpu",
    numerics: str = "autoencoder",
) -> MuMAutoEncoder:
    """Load ``MuM_ViTLarge_BaseDecoder.pth`` (or one in its layout, any size) strictly into a ``MuMAutoEncoder``.

    Args:
        path_or_state: ``.pth`` path, a raw state dict, or a recon training checkpoint (``{"model": ...}``).
        device: where the model ends up.
        numerics: encoder numerics (``backbone.mum.NUMERICS``); ``"autoencoder"`` is the official one here.

    Raises:
        CheckpointError: missing, unexpected or mis-shaped keys (named).
    """
    if numerics not in NUMERICS:
        raise ValueError(f"numerics must be one of {sorted(NUMERICS)}, got {numerics!r}")
    state = safe_load(path_or_state) if isinstance(path_or_state, (str, os.PathLike)) else path_or_state
    if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping):
        state = state["model"]
    if not isinstance(state, Mapping):
        raise CheckpointError(f"a MuM checkpoint is a raw state dict, got {type(state).__name__}")
    encoder_config, decoder_config = autoencoder_configs_from_state(state, numerics)
    with torch.device("meta"):
        model = MuMAutoEncoder(encoder_config, decoder_config)
    expected = official_state_dict(model)
    check_state_dict(expected, state, "MuM autoencoder checkpoint")
    mapped = {}
    for key, value in state.items():
        prefix = "decoder." if key.startswith(MUM_DECODER_PREFIXES) else "encoder."
        mapped[prefix + key] = value.to(expected[key].dtype)  # bf16-stored periods -> the module's float32
    load_strict(model, mapped, "MuM autoencoder checkpoint")
    return model.to(device)
