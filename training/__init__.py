"""Training recipes for recon's backbones and decoders.

- ``training.common``: shared infrastructure (torchrun/DDP set-up, atomic checkpoints with exact resume,
  schedules, AdamW parameter groups, TensorBoard logging, JSON dataclass configs, infinite distributed sampler,
  robust image datasets). Every recipe builds on it.
- ``training.distill``: DUNE multi-teacher distillation (``python -m training.distill --config cfg.json`` or
  ``recon train distill``).

Importing a recipe changes no global state; the entry points set seeds, threads and process groups.
"""
