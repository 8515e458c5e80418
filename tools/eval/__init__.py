"""Multi-view pose evaluation on CO3Dv2 and RealEstate10K ("10 random frames", PoseDiffusion protocol).

Modules: ``metrics`` (pair errors, RRA/RTA, mAA), ``sampling`` (seeded frame draws saved to JSON),
``predictors`` (the ``predict(frames)`` protocol and the oracle), ``pairwise`` (essential-matrix relative poses
from decoder outputs), ``model_predictors`` (network / pipeline adapters), ``runner`` (resumable JSON-lines
results, shards, summaries), ``benchmark`` (one run end to end), ``distributed`` (torchrun). See docs/eval.md.

Beyond pose: ``mvdepth`` (multi-view depth on the Robust MVD sets) and ``matchprobe`` (feature-matching probes of
a frozen encoder); see docs/evaluation.md. The dataset readers (CO3Dv2, RealEstate10K, their cameras) live in
``recon.datasets``.
"""
