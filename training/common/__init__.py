"""Shared training infrastructure, small and general so that every recipe (distill, finetune, MuM) reuses it.

==================  ==============================================================================================
module              what it gives
==================  ==============================================================================================
``distributed``     ``init_distributed()`` from torchrun env vars (NCCL on GPU, gloo on CPU), rank helpers,
                    ``barrier``, ``all_gather_cat``, ``all_reduce_mean``, ``all_gather_object``; single-process
                    fallback when not launched by torchrun
``checkpoint``      ``CheckpointManager`` (atomic, collective save; resume from the latest in an output dir),
                    RNG capture / restore (python, numpy, torch, CUDA, extra generators)
``schedule``        ``WarmupCosine``: per-iteration linear warm-up then cosine to a floor (lr, momentum, ...)
``optim``           ``param_groups`` (weight decay on matrices only), ``build_adamw``, ``clip_grad_per_param``
``logging``         ``TrainLogger``: TensorBoard scalars on rank 0 + console lines; ``setup_logging``
``config``          frozen-dataclass configs from / to JSON (unknown keys are errors), ``--set a.b=value``
                    overrides, field docstrings, ``resolve_preset`` (named preset + JSON file merged over it),
                    ``RunConfig`` (the ``train.*`` bookkeeping fields every recipe's ``TrainConfig`` derives)
``cli``             ``Recipe``: a recipe's command line as a declaration (``python -m training.X`` and
                    ``recon train X``: --config / --preset / --set / --output-dir / --print-config / --list-fields)
``run``             the one training loop ``run_loop`` (steps, logging, hooks every N, checkpoints every N and at
                    the end, the last good checkpoint saved on a non-finite loss) and around it: ``start_run``
                    (process group, seeds, output folder, config.json), ``wrap_ddp``, ``check_finite``,
                    ``autocast``, ``agreed_digests``
``data``            ``InfiniteDistributedSampler`` (seeded, resumable position, per-sample seeds),
                    ``RobustImageDataset`` (skips and counts corrupt images), image sources, ``seeded_loader``
==================  ==============================================================================================
"""
