"""The recon-tiny chain: MuM-tiny -> DUNE-tiny -> MASt3R-tiny decoder -> export -> held-out evaluation.

Every stage is a function ``stage(opts, previous) -> record`` (a JSON-able dict) run by ``run_chain``; the record is
written to ``out/<stage>/done.json`` when the stage ends, and a stage whose ``done.json`` exists is skipped (its
record is read back), so that the chain resumes where it stopped. The training stages are the recipes' ``tiny``
presets with their iteration counts multiplied by ``steps_scale``; their own checkpoints make an interrupted stage
resume mid-way.

Data seeds (disjoint by construction, see ``HELD_OUT_SEED``): MuM-tiny scenes 1000+, distillation images 5000+,
finetuning pairs 2000+ / 3000+ (validation 4000+), held-out evaluation 900_000+ (orbit) and 901_000+ (room walk).
demo_data (``recon synth`` orbit and room walk, seed 0) is never read.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from backbone.fileio import move_into_place
from training.common.config import write_json_atomic

logger = logging.getLogger(__name__)

HELD_OUT_SEED = 900_000
"""First seed of the held-out scenes (orbit; room walks from ``HELD_OUT_SEED + 1000``); training seeds are below."""
DISTILL_SEED = 5000
"""First seed of the scenes whose views are the distillation images."""
EVAL_LAYOUTS = ("orbit", "room_walk")
MODEL_NAME = "recon-tiny.safetensors"
MATCH_PX = 3.0


@dataclass(frozen=True)
class ChainOptions:
    """What ``run_chain`` runs."""

    out: Path
    """Chain folder: one sub-folder per stage, the final model, ``chain.json``."""
    steps_scale: float = 1.0
    """Multiplies every training stage's iteration count (at least 1 step each)."""
    scenes: int | None = None
    """Replaces every training source's scene count (``None``: the presets'); tests use 1."""
    eval_scenes: int = 4
    """Held-out scenes per layout (orbit and room walk)."""
    eval_views: int = 8
    """Views per held-out scene."""
    eval_size: tuple[int, int] = (168, 126)
    """Held-out render size ``(W, H)``."""
    device: str = "cpu"
    """Training and evaluation device."""


def _scaled(n: int, scale: float) -> int:
    return max(1, round(n * scale))


def _every(n: int, iterations: int) -> int:
    return max(1, min(n, iterations))


# ---------------------------------------------------------------------------------------------- stages
def stage_mum(opts: ChainOptions, previous: dict) -> dict:
    """(a) MuM multi-view masked pretraining of the tiny encoder on ``tools.synth`` sequences."""
    from training.mum.config import PRESETS, replace
    from training.mum.model import BACKBONE_NAME
    from training.mum.train import train

    cfg = PRESETS["tiny"]
    t, ds = cfg.train, cfg.data.datasets[0]
    if opts.scenes:
        ds = dataclasses.replace(ds, synthetic_scenes=opts.scenes)
    iters = _scaled(t.iterations, opts.steps_scale)
    out = opts.out / "mum"
    cfg = replace(
        cfg, data={"datasets": (ds,)},
        train={"output_dir": str(out), "iterations": iters, "warmup": min(t.warmup, iters // 10),
               "checkpoint_every": _every(t.checkpoint_every, iters), "device": opts.device},
    )  # fmt: skip
    result = train(cfg)
    return {"encoder": str(out / BACKBONE_NAME), "iterations": result.iterations}


def render_distill_images(folder: Path, scenes: int, size: int = 160, views: int = 4) -> int:
    """Views of ``scenes`` rendered scenes (orbit / room walk alternately, seeds ``DISTILL_SEED + i``) as PNGs in
    ``folder`` (written to a temporary folder, then renamed). Returns the number of images."""
    from PIL import Image

    from tools.synth import render_scene

    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)  # our own unfinished folder
    tmp.mkdir(parents=True)
    n = 0
    for i in range(scenes):
        for v in render_scene(EVAL_LAYOUTS[i % 2], n_views=views, size=(size, size), seed=DISTILL_SEED + i):
            Image.fromarray(v.rgb).save(tmp / f"scene{i:04d}_{v.name}.png")
            n += 1
    move_into_place(tmp, folder, fsync=False)  # a folder: appears complete or not at all
    return n


def stage_distill(opts: ChainOptions, previous: dict) -> dict:
    """(b) DUNE distillation of the tiny student from the MuM-tiny encoder, on images of rendered scenes."""
    from training.distill.config import PRESETS, DatasetRoot, TeacherConfig, replace
    from training.distill.train import FINAL_NAME, train

    cfg = PRESETS["tiny"]
    t = cfg.train
    images = opts.out / "data" / "distill"
    if not images.is_dir():
        render_distill_images(images, opts.scenes or 64)
    iters = _scaled(t.iterations, opts.steps_scale)
    out = opts.out / "distill"
    cfg = replace(
        cfg,
        teachers=(TeacherConfig("mum_tiny", "mum", checkpoint=previous["mum"]["encoder"]),),
        data={"source": "datasets", "datasets": ("recon_synth",),
              "roots": {"recon_synth": DatasetRoot(root=str(images), domain="mast3r", layout="folder")}},
        train={"output_dir": str(out), "iterations": iters, "checkpoint_every": _every(t.checkpoint_every, iters),
               "device": opts.device},
    )  # fmt: skip
    result = train(cfg)
    return {"student": str(out / FINAL_NAME), "iterations": result.iterations}


def stage_finetune(opts: ChainOptions, previous: dict) -> dict:
    """(c) MASt3R decoder + heads on the frozen DUNE-tiny student, on synthetic pairs at three aspect ratios."""
    from training.finetune.config import PRESETS, replace
    from training.finetune.train import train

    cfg = PRESETS["tiny"]
    t, d = cfg.train, cfg.data
    sources, val = d.sources, d.val_sources
    if opts.scenes:
        sources = tuple(dataclasses.replace(s, scenes=opts.scenes) for s in sources)
        val = tuple(dataclasses.replace(s, scenes=opts.scenes) for s in val)
    iters = _scaled(t.iterations, opts.steps_scale)
    out = opts.out / "finetune"
    cfg = replace(
        cfg,
        model={"backbone_checkpoint": previous["distill"]["student"], "backbone_overrides": {}},
        data={"sources": sources, "val_sources": val},
        train={"output_dir": str(out), "iterations": iters, "checkpoint_every": _every(t.checkpoint_every, iters),
               "val_every": _every(t.val_every, iters), "device": opts.device},
    )  # fmt: skip
    result = train(cfg)
    return {"model": str(result.final_model), "iterations": result.iterations, "validation": result.validation}


def stage_export(opts: ChainOptions, previous: dict) -> dict:
    """The finetuned model as float16 safetensors (``recon.model.loading.save_model``) with its sha256."""
    import recon
    from backbone.fileio import sha256_file
    from recon.model.loading import save_model

    model = recon.load_model(previous["finetune"]["model"])
    path = save_model(model.half(), opts.out / MODEL_NAME)
    return {
        "model": str(path), "sha256": sha256_file(path), "bytes": path.stat().st_size,
        "parameters": sum(p.numel() for p in model.parameters()),
    }  # fmt: skip


def stage_evaluate(opts: ChainOptions, previous: dict) -> dict:
    """Held-out scenes through ``recon.pipeline.reconstruct``; see ``training.chain.evaluate``."""
    from training.chain.evaluate import evaluate_model

    return evaluate_model(Path(previous["export"]["model"]), opts, opts.out / "evaluate")


STAGES: dict[str, Callable[[ChainOptions, dict], dict]] = {
    "mum": stage_mum,
    "distill": stage_distill,
    "finetune": stage_finetune,
    "export": stage_export,
    "evaluate": stage_evaluate,
}


def run_chain(opts: ChainOptions, until: str | None = None) -> dict[str, dict]:
    """Run (or resume) the chain up to and including ``until`` (default: every stage).

    Returns:
        ``{stage: record}``; each record also holds ``cpu_s`` / ``wall_s`` of the run that made it.
    """
    opts.out.mkdir(parents=True, exist_ok=True)
    records: dict[str, dict] = {}
    for name, stage in STAGES.items():
        done = opts.out / name / "done.json"
        if done.is_file():
            records[name] = json.loads(done.read_text())
            logger.info("chain: %s already done (%s)", name, done)
        else:
            logger.info("chain: %s ...", name)
            cpu, wall = time.process_time(), time.perf_counter()
            record = stage(opts, records)
            record.update(cpu_s=time.process_time() - cpu, wall_s=time.perf_counter() - wall)
            done.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(record, done)
            records[name] = record
        if name == until:
            break
    write_json_atomic(records, opts.out / "chain.json")
    return records


def main(argv: list[str] | None = None) -> int:
    """``python -m training.chain --out DIR [--steps-scale S] [--scenes N] [--until STAGE]``."""
    parser = argparse.ArgumentParser(prog="python -m training.chain", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="chain folder (resumes when it exists)")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiplies every stage's iterations")
    parser.add_argument("--scenes", type=int, default=None, help="training scenes per source (default: presets')")
    parser.add_argument("--eval-scenes", type=int, default=4, help="held-out scenes per layout")
    parser.add_argument("--until", choices=list(STAGES), default=None, help="stop after this stage")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if not 0 < args.steps_scale <= 100 or (args.scenes is not None and not 1 <= args.scenes <= 10_000):
        print("error: --steps-scale must be in (0, 100] and --scenes in [1, 10000]", file=sys.stderr)
        return 2
    from training.common.logging import setup_logging

    setup_logging(0)
    opts = ChainOptions(Path(args.out), args.steps_scale, args.scenes, args.eval_scenes, device=args.device)
    records = run_chain(opts, args.until)
    print(json.dumps({k: {f: v for f, v in r.items() if not isinstance(v, dict)} for k, r in records.items()}))
    return 0
