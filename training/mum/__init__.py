"""MuM multi-view masked image modelling (davnords/MuM) on recon's ``backbone`` package.

A MuM ViT encoder (``backbone.mum``) and the light multi-view decoder (``training.mum.decoder``) learn to
reconstruct the masked patches of every view of image sequences; the pre-trained encoder is then a recon backbone.

Entry points: ``python -m training.mum --config cfg.json`` (``recon train mum``), ``train(cfg)``.
Modules: ``config`` (dataclasses, presets), ``sequences`` (datasets -> sequences), ``batches`` (frame-budget
batches), ``model`` (building, final files, recon model on a MuM encoder), ``visualize``, ``train``.
"""
