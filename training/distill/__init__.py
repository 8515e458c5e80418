"""DUNE multi-teacher distillation (naver/dune, CVPR 2025) on recon's ``backbone`` package.

A ViT-S/14 or ViT-B/14 student (``backbone.dune.DuneBackbone``) learns, through one transformer projector per
teacher, to reproduce the features of frozen teachers -- DINOv2 ViT-L/14-reg, the MASt3R ViT-L/16 encoder and the
Multi-HMR ViT-L/14 encoder, or any subset -- on a teacher-balanced mix of their training domains.

Entry points: ``python -m training.distill --config cfg.json`` (``recon train distill``), ``train(cfg)``.
Modules: ``config`` (dataclasses, presets), ``teachers``, ``student`` (official checkpoint layout, second-stage
initialisation), ``losses``, ``augment``, ``datasets`` (the 19 paper datasets, teacher-balanced batches), ``train``.
"""
