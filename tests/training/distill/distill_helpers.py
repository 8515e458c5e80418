"""Tiny configurations shared by the distillation tests (seconds on one CPU thread)."""

import numpy as np
import torch

from training.distill.config import DataConfig, DistillConfig, StudentConfig, TeacherConfig, TrainConfig
from training.distill.datasets import synthetic_image

TINY_TEACHER = {"embed_dim": 16, "depth": 1, "num_heads": 2}


def tiny_config(output_dir, **train) -> DistillConfig:
    """Student 32-d x 1 block at 28 px, DINOv2-like + MASt3R-like random teachers, synthetic images."""
    train_kw = dict(
        output_dir=str(output_dir), batch_size_per_gpu=6, iterations=6, lr=0.1, warmup_fraction=0.34,
        checkpoint_every=2, log_every=0, device="cpu", tensorboard=False, seed=3,
    )  # fmt: skip
    train_kw.update(train)
    return DistillConfig(
        student=StudentConfig(arch="custom", embed_dim=32, depth=1, num_heads=2, image_size=28),
        teachers=(
            TeacherConfig("dino2reg_vitlarge_14", "dinov2", random_overrides=TINY_TEACHER, seed=1),
            TeacherConfig("mast3r_vitlarge_16", "mast3r", random_overrides=TINY_TEACHER, seed=2),
        ),
        data=DataConfig(source="synthetic", synthetic_images=10, synthetic_domains=("dinov2", "mast3r"), num_workers=0),
        train=TrainConfig(**train_kw),
    )


def synthetic_batch(n: int, size: int) -> torch.Tensor:
    """``[n, 3, size, size]`` smooth images in [0, 1]."""
    arrays = [np.asarray(synthetic_image(i, size), dtype=np.float32) / 255 for i in range(n)]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
