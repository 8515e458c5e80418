"""One benchmark run end to end: sampling file, this process's shard, resumable results, merged summary.

Used by ``recon eval co3d|re10k``; callable from Python with any reader and predictor.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from recon.datasets.data import DatasetError
from tools.eval.distributed import DistContext
from tools.eval.options import BenchmarkOptions
from tools.eval.runner import EvalStats, check_run_info, evaluate, sampling_digest, summarize
from tools.eval.sampling import Sampling, build_sampling, get_recipe

logger = logging.getLogger(__name__)


def load_or_build_sampling(reader, opts: BenchmarkOptions, path: Path) -> Sampling:
    """Read the sampling file at ``path``, or build it (categories resolved by the reader) and write it there."""
    if path.is_file():
        sampling = Sampling.load(path)
        if sampling.dataset != reader.dataset:
            raise DatasetError(f"{path} samples {sampling.dataset!r}, not {reader.dataset!r}")
        for name, asked, have in (
            ("seed", opts.seed, sampling.seed),
            ("recipe", opts.recipe, sampling.recipe),
            ("num_frames", opts.num_frames, sampling.num_frames),
        ):
            if asked is not None and asked != have:
                raise DatasetError(
                    f"{path} was made with {name}={have!r}, but {name}={asked!r} was asked; "
                    "drop the option or give another --sampling path"
                )
        logger.info("using sampling file %s (%d sequences)", path, len(sampling.sequences))
        return sampling
    categories = reader.resolve_categories(opts.categories)
    recipe = get_recipe(opts.recipe or "pd")
    sampling = build_sampling(reader, categories, 0 if opts.seed is None else opts.seed, recipe, opts.num_frames)
    sampling.save(path)
    logger.info("wrote sampling file %s (%d sequences)", path, len(sampling.sequences))
    return sampling


def run_benchmark(
    reader,
    predictor,
    out_dir: str | Path,
    opts: BenchmarkOptions = BenchmarkOptions(),
    dist: DistContext | None = None,
    progress: Callable | None = None,
) -> tuple[EvalStats, dict | None]:
    """Sample (or reuse the sampling file), evaluate this process's shard, and summarise.

    Under torchrun rank 0 writes the sampling file and, after every rank is done, the summary. A manual shard
    (``opts.shard``) summarises whatever results the folder holds (marked incomplete until all shards are done).

    Returns:
        ``(stats of this process, summary or None on ranks other than 0)``.
    """
    dist = dist or DistContext()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = Path(opts.sampling_path) if opts.sampling_path else out_dir / "sampling.json"
    shard = (dist.rank, dist.world_size) if dist.active else opts.shard
    info = None
    if dist.is_main:
        sampling = load_or_build_sampling(reader, opts, path)
        info = _run_info(reader, predictor, sampling, opts)
        check_run_info(out_dir, info)
    dist.barrier()
    if not dist.is_main:
        sampling = Sampling.load(path)
        check_run_info(out_dir, _run_info(reader, predictor, sampling, opts))
    sequences = sampling.select(opts.categories)
    stats = evaluate(
        reader,
        sequences,
        predictor,
        out_dir,
        shard=shard,
        convention=opts.convention,
        rotation_numerics=opts.rotation_numerics,
        progress=progress,
        fail_fast=opts.fail_fast,
    )
    dist.barrier()
    summary = summarize(out_dir, expected=[s.key for s in sequences]) if dist.is_main else None
    return stats, summary


def _run_info(reader, predictor, sampling: Sampling, opts: BenchmarkOptions) -> dict:
    describe = getattr(predictor, "describe", None)
    return {
        "dataset": reader.dataset,
        "predictor": describe() if callable(describe) else {"predictor": getattr(predictor, "name", "?")},
        "sampling": sampling_digest(sampling),
        "recipe": sampling.recipe,
        "seed": sampling.seed,
        "convention": opts.convention,
        "rotation_numerics": opts.rotation_numerics,
    }
