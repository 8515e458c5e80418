"""MASt3R-decoder finetuning on a frozen backbone (DUNE supplementary B; MASt3R's training recipe).

==============  ================================================================================================
module          what it gives
==============  ================================================================================================
``config``      ``FinetuneConfig`` (net, data, loss, train) with a docstring per field, presets, JSON files
``model``       ``build_model`` (frozen backbone + MASt3R decoder + catmlp+dpt heads), ``FinetuneNet`` (what DDP
                wraps), ``init_from_checkpoint`` with an ``InitReport`` (copied / resampled / re-initialised /
                skipped)
``geometry``    crops and resizes keeping intrinsics right, point maps, ground-truth correspondences
``datasets``    synthetic and CO3Dv2 pair sources, ``PairDataset``, ``MixtureDataset``, ``AspectBatchSampler``
                (one resolution per batch), the resolution lists
``losses``      MASt3R's confidence-weighted 3D regression (``?avg_dis``) + InfoNCE matching loss; validation
                metrics
``export``      final files: official DUNE-MASt3R decoder layout or recon's layout
``train``       ``FinetuneTrainer`` (one optimizer step, validation) and ``train(cfg)`` (DDP, resume)
``cli``         ``python -m training.finetune`` and ``recon train finetune``
==============  ================================================================================================

See docs/finetune.md.
"""
