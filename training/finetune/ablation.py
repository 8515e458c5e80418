"""Measured comparison of the paper's choices with recon's alternatives, on synthetic scenes (CPU, minutes).

``python -m training.finetune.ablation [--steps 60] [--out runs/ablation]`` prints one line per run: the validation
3D error (scale-normalised point-map error on held-out scenes, lower is better) and matching accuracy (share of
nearest-neighbour descriptor matches within 2 px of the truth) at the end of a short run.

1. **Pixel layers, 16 -> 14.** A tiny patch-16 model is first trained on the synthetic pairs (the "released"
   decoder); a patch-14 model is then initialised from it with the descriptor MLP's per-pixel output layer
   re-initialised (the DUNE supplement B) or resampled over the sub-pixel grid (recon's option), and finetuned.
2. **Crops.** The same tiny model trained with MASt3R's ``aug_crop='auto'`` random crops or with recon's centred
   crops (validation always centred).

Tiny random backbones and few steps: the figures compare the options under identical budgets; they say nothing
about full-scale results.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from training.finetune.config import PRESETS, SourceConfig, replace
from training.finetune.train import train

logger = logging.getLogger(__name__)


def _config(out: Path, steps: int, backbone: str, resolutions, matching_weight: float = 1.0, **data):
    cfg = replace(PRESETS["smoke"], loss={"matching_weight": matching_weight})
    sources = (SourceConfig(scenes=8, views_per_scene=4, render_size=(96, 72), seed=1),)
    val = (SourceConfig(name="held_out", scenes=2, views_per_scene=4, render_size=(96, 72), seed=1000),)
    cfg = replace(cfg, model={"backbone": backbone}, train={"output_dir": str(out), "iterations": steps,
                  "checkpoint_every": steps, "val_every": steps, "log_every": 0, "tensorboard": False})  # fmt: skip
    return replace(cfg, data={"sources": sources, "val_sources": val, "val_pairs": 8, "resolutions": resolutions,
                              **data})  # fmt: skip


def _line(name: str, result, cpu: float) -> str:
    v = result.validation
    return (f"{name:<48} pts3d_err {v['val_held_out/pts3d_err']:.4f}  match_acc {v['val_held_out/match_acc']:.4f}  "
            f"({cpu:.0f} CPU s)")  # fmt: skip


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="optimizer steps per run")
    parser.add_argument("--out", default="runs/ablation", help="folder for the runs")
    parser.add_argument("--source-steps", type=int, default=0, help="steps of the patch-16 source (default: 2 x steps)")
    parser.add_argument("--matching-weight", type=float, default=1.0,
                        help="matching-loss weight (MASt3R: 0.075; higher lets tiny descriptors learn)")  # fmt: skip
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out)
    lines = []

    def run(name, cfg):
        t0 = time.process_time()
        result = train(cfg)
        lines.append(_line(name, result, time.process_time() - t0))
        print(lines[-1], flush=True)
        return result

    p16 = ((64, 48), (64, 32))
    p14 = ((56, 42), (56, 28))
    # The tiny backbones share width 32, so only the patch size differs between source and target.
    mw = args.matching_weight
    src_steps = args.source_steps or 2 * args.steps
    source = run("source patch-16 model", _config(out / "source16", src_steps, "croco_vitl16", p16, mw))
    for resample in (False, True):
        for steps in (1, args.steps):  # 1 step: (nearly) the initialisation itself
            cfg = _config(out / f"p14_resample{int(resample)}_{steps}", steps, "dune_vits14", p14, mw)
            cfg = replace(cfg, model={"init_from": str(source.final_model), "resample_pixel_layers": resample})
            run(f"patch-14, pixel layer {'resampled' if resample else 're-initialised'}, {steps} steps", cfg)
    for crop in ("auto", "centred"):
        cfg = _config(out / f"crop_{crop}", args.steps, "dune_vits14", p14, mw, aug_crop=crop)
        run(f"crops: aug_crop={crop}, {args.steps} steps", cfg)


if __name__ == "__main__":
    main()
