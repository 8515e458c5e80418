"""recon-tiny: the whole training chain with weights recon trains itself (issue 18).

``python -m training.chain --out DIR [--steps-scale S]`` runs, each stage's output loading into the next:

1. ``mum``: MuM multi-view masked pretraining of a tiny encoder (``training.mum`` preset ``tiny``) on
   ``tools.synth`` sequences;
2. ``distill``: DUNE distillation of a tiny student (``training.distill`` preset ``tiny``) from the MuM-tiny
   encoder, on images of rendered scenes written to ``DIR/data/distill``;
3. ``finetune``: MASt3R decoder + heads on the frozen student (``training.finetune`` preset ``tiny``);
4. ``export``: the final model as ``DIR/recon-tiny.safetensors`` (float16) with its sha256;
5. ``evaluate``: held-out ``tools.synth`` scenes (orbit and room, seeds from 900_000, never trained on) through
   ``recon.pipeline.reconstruct``: RRA / RTA @ 15 deg, median relative depth error, and the share of reciprocal
   descriptor matches within 3 px of the true match.

A finished stage leaves ``DIR/<stage>/done.json`` and is skipped when the chain runs again; an interrupted
training stage resumes from its own latest checkpoint. See ``training.chain.run``.
"""
