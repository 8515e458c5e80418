"""Tiny configurations shared by the finetuning tests (seconds on one CPU thread)."""

from training.finetune.config import DataConfig, FinetuneConfig, LossConfig, NetConfig, SourceConfig, TrainConfig

TINY_BACKBONE = {"embed_dim": 32, "depth": 1, "num_heads": 2}
# Narrow DPT: the release widths make every tiny model ~40 M parameters.
TINY_NET = dict(
    backbone="dune_vits14", backbone_overrides=TINY_BACKBONE, decoder_embed_dim=32, decoder_depth=10,
    decoder_num_heads=2, dpt_feature_dim=16, dpt_layer_dims=(8, 16, 24, 32),
)  # fmt: skip
RESOLUTIONS = ((56, 42), (56, 28))


def tiny_config(output_dir, net=None, data=None, **train) -> FinetuneConfig:
    """Tiny DUNE-like backbone (32-d, 1 block), 10-block 32-d decoder, 56x42 / 56x28 pairs of synthetic orbits."""
    train_kw = dict(
        output_dir=str(output_dir), batch_size_per_gpu=2, accum_iter=2, iterations=4, lr=2e-3, warmup_fraction=0.25,
        checkpoint_every=2, val_every=2, log_every=0, device="cpu", tensorboard=False, seed=5,
    )  # fmt: skip
    train_kw.update(train)
    data_kw = dict(
        sources=(SourceConfig(scenes=3, views_per_scene=3, render_size=(84, 63), seed=1),),
        resolutions=RESOLUTIONS, n_corres=64, num_workers=0,
        val_sources=(SourceConfig(name="held_out", scenes=1, views_per_scene=3, render_size=(84, 63), seed=900),),
        val_pairs=2,
    )  # fmt: skip
    data_kw.update(data or {})
    return FinetuneConfig(
        model=NetConfig(**{**TINY_NET, **(net or {})}),
        data=DataConfig(**data_kw),
        loss=LossConfig(blocksize=64),
        train=TrainConfig(**train_kw),
    )
