"""Tiny configurations and inputs shared by the MuM tests (seconds on one CPU thread)."""

import math

import torch

from training.mum.config import DataConfig, DatasetConfig, ModelConfig, MuMConfig, TrainConfig

TINY_MODEL = ModelConfig(
    encoder="custom", embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=32, decoder_depth=2, decoder_num_heads=2
)


def tiny_config(output_dir, **train) -> MuMConfig:
    """32-d x 1 encoder, 32-d x 2 decoder, 32 px frames of 3 synthetic scenes, 8-frame budget, S in [2, 4]."""
    train_kw = dict(
        output_dir=str(output_dir), iterations=6, warmup=2, lr=2e-3, checkpoint_every=2, log_every=0,
        image_every=0, device="cpu", tensorboard=False, seed=3,
    )  # fmt: skip
    train_kw.update(train)
    data = DataConfig(
        datasets=(
            DatasetConfig(name="synth", kind="synthetic", synthetic_scenes=3, synthetic_views=5, synthetic_size=40),
        ),
        frame_budget=8,
        views=(2, 4),
        image_size=32,
        single_view_prob=0.25,
        num_workers=0,
    )
    return MuMConfig(model=TINY_MODEL, data=data, train=TrainConfig(**train_kw))


def smooth_sequences(n: int, S: int, size: int, seed: int = 0) -> torch.Tensor:
    """``[n, S, 3, size, size]`` smooth images in [0.1, 0.9] (one random planar sinusoid per channel)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    phases = torch.rand(n * S, 3, 3, generator=g) * 2 * math.pi
    fx, fy, phase = (phases[..., i, None, None] for i in range(3))  # each n*S 3 1 1
    out = 0.5 + 0.4 * torch.sin(fx * xx + fy * yy + phase)
    return out.reshape(n, S, 3, size, size)
