"""Benchmark dataset readers shared by evaluation, synthetic data and training: CO3Dv2 (``co3d``), RealEstate10K
(``re10k``), their camera conventions (``cameras``) and the frame / sequence types and error (``data``)."""
