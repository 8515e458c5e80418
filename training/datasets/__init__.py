"""Readers for the datasets the papers trained on, in the layouts their releases or preprocessing scripts write.

- ``training.datasets.pairs``: the MASt3R pair mixture (Habitat, ARKitScenes, BlendedMVS, MegaDepth, ScanNet++,
  CO3Dv2, WildRGB-D as DUSt3R's ``datasets_preprocess`` writes them; TartanAir, Virtual KITTI 2, Map-free, DL3DV and
  UnrealStereo4K as published). Each reader returns typed views (``training.finetune.geometry.Frame``: image,
  depth, ``K``, ``T_world_cam``, sky) and pairs of them.
- ``training.datasets.mixture``: the ``"N @ Dataset(key=value, ...) + ..."`` syntax of the MASt3R README, parsed
  with ``ast`` (never evaluated) into a weighted mixture of pair datasets.
- ``training.datasets.images``: image lists of the distillation sets (ImageNet-19K, Mapillary, GLDv2, BEDLAM,
  AGORA, CUFFS, UBody).
- ``training.datasets.io``: depth decoders (EXR, 16-bit PNG, npy) and the one-line layout error.
"""
