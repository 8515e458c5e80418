"""Run a predictor over sampled sequences: resumable JSON-lines results, shards, per-category summaries.

Results go to ``<out>/results.jsonl`` (``results.shard-I-of-N.jsonl`` for shard I of N), one line per sequence,
flushed and fsynced as soon as the sequence is done. A rerun with the same ``<out>`` skips every sequence found
in any results file of the folder, so a killed run resumes; a torn last line (killed mid-write) is cut off and
its sequence recomputed. ``<out>/run.json`` records what produced the results; resuming with a different
predictor, sampling or convention is refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import resource
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from backbone.fileio import write_json_atomic, write_text_atomic
from recon.datasets.data import DatasetError
from recon.errors import UserError
from tools.eval.metrics import METRIC_KEYS, aggregate, all_pairs, pair_errors, pooled_metrics
from tools.eval.predictors import as_prediction
from tools.eval.sampling import SampledSequence, Sampling

logger = logging.getLogger(__name__)

RUN_FILE = "run.json"
RESULTS_GLOB = "results*.jsonl"


class RunMismatchError(UserError, ValueError):
    """The output folder holds results of a different run."""


def shard_items(items: Sequence, shard: tuple[int, int]) -> list:
    """Round-robin shard ``i`` of ``n``: items ``i, i+n, i+2n, ...`` (balances categories across shards)."""
    i, n = shard
    return list(items[i::n])


def results_path(out_dir: Path, shard: tuple[int, int]) -> Path:
    i, n = shard
    return out_dir / ("results.jsonl" if n == 1 else f"results.shard-{i}-of-{n}.jsonl")


def sampling_digest(sampling: Sampling) -> str:
    """SHA-256 of the sampled sequences and frames (what a result depends on)."""
    payload = json.dumps([[s.category, s.sequence, s.frame_ids] for s in sampling.sequences])
    return hashlib.sha256(payload.encode()).hexdigest()


def check_run_info(out_dir: Path, info: dict) -> None:
    """Write ``run.json``, or check that an existing one describes the same run."""
    path = out_dir / RUN_FILE
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old != info:
            diff = sorted(k for k in set(old) | set(info) if old.get(k) != info.get(k))
            raise RunMismatchError(
                f"{out_dir} holds results of a different run (differs in {diff}); use another --out or delete it"
            )
        return
    write_json_atomic(path, info)


def _repair_torn_tail(path: Path) -> None:
    """Cut a partial last line left by a killed writer, so appends start on a fresh line."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        keep = data.rfind(b"\n") + 1
        logger.warning("%s: dropping a torn last line (%d bytes) from an interrupted run", path, len(data) - keep)
        f.truncate(keep)


def load_results(out_dir: Path) -> list[dict]:
    """All complete records of all results files of ``out_dir``; the first record of a sequence wins."""
    seen: dict[tuple[str, str], dict] = {}
    for path in sorted(Path(out_dir).glob(RESULTS_GLOB)):
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                if not line.endswith("\n"):
                    continue  # torn tail of a killed run; recomputed on resume
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as err:
                    raise DatasetError(f"{path}:{n} is not valid JSON ({err}); remove the line to continue") from err
                seen.setdefault((rec["category"], rec["sequence"]), rec)
    return list(seen.values())


def _peak_memory() -> tuple[float, float | None]:
    """(process peak RSS in MiB so far, peak CUDA memory allocated in MiB since the last reset or None)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports KiB
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return rss, torch.cuda.max_memory_allocated() / 2**20
    return rss, None


def _reset_peak_memory() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()


def _mat(a: np.ndarray) -> list:
    return np.asarray(a, dtype=np.float64).tolist()


@dataclass
class EvalStats:
    done: int = 0
    skipped: int = 0
    failed: int = 0
    failed_pairs: int = 0
    """Pairs without a pose (counted with 180° errors), failed sequences' pairs included."""
    seconds: float = 0.0


def evaluate(
    reader,
    sequences: Sequence[SampledSequence],
    predictor,
    out_dir: str | Path,
    *,
    shard: tuple[int, int] = (0, 1),
    convention: str = "pd",
    rotation_numerics: str = "exact",
    progress: Callable[[int, int, SampledSequence], None] | None = None,
    fail_fast: bool = False,
) -> EvalStats:
    """Evaluate this shard's sequences, appending one JSON line per sequence; skip those already done.

    Args:
        reader: dataset reader with ``dataset`` and ``load_frames(category, sequence, frame_ids)``.
        sequences: the sampled sequences of the whole run (this function takes its shard).
        predictor: object with ``predict(frames)`` (see ``tools.eval.predictors``).
        out_dir: output folder (``run.json`` must already be checked by the caller).
        shard: ``(i, n)``.
        convention, rotation_numerics: see ``tools.eval.metrics.pair_errors``.
        progress: called as ``progress(k, total, seq)`` before each sequence.
        fail_fast: stop at the first sequence the predictor fails on. By default the failure is recorded (its
            line has ``"failed": true``, the error, and 180° errors on every pair, so it counts as wrong in every
            metric, as a method that returns nothing must) and the run goes on.

    Returns:
        Counts of sequences done / skipped (already present) and the seconds spent predicting.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = results_path(out_dir, shard)
    _repair_torn_tail(path)
    done = {(r["category"], r["sequence"]) for r in load_results(out_dir)}
    mine = shard_items(sequences, shard)
    todo = [s for s in mine if s.key not in done]
    stats = EvalStats(skipped=len(mine) - len(todo))
    if stats.skipped:
        logger.info("resuming: %d of %d sequences of this shard already done", stats.skipped, len(mine))
    with open(path, "a", encoding="utf-8") as f:
        for k, s in enumerate(todo):
            if progress is not None:
                progress(k, len(todo), s)
            frames = reader.load_frames(s.category, s.sequence, s.frame_ids)
            _reset_peak_memory()
            t0 = time.perf_counter()
            error = None
            try:
                pred = as_prediction(predictor.predict(frames), len(frames))
            except (ImportError, MemoryError):
                raise  # the environment, not this sequence: every other sequence would fail the same way
            except Exception as err:
                # Finished sequences are safe on disk; name the failing one so it can be investigated.
                logger.error("predictor failed on %s/%s (frames %s): %s", s.category, s.sequence, s.frame_ids, err)
                if fail_fast:
                    raise
                pred, error = None, f"{type(err).__name__}: {err}"
            seconds = time.perf_counter() - t0
            rss, gpu = _peak_memory()
            T_gt = np.stack([fr.T_world_cam for fr in frames])
            pairs = all_pairs(len(frames))
            if pred is None:
                rot = trans = np.full(len(pairs), 180.0)
                failed_pairs = len(pairs)
            else:
                rot, trans = pair_errors(
                    T_gt, pred.T_world_cam, T_rel_pred=pred.T_rel, convention=convention,
                    rotation_numerics=rotation_numerics,
                )  # fmt: skip
                # A pair without a pose is wrong, not skipped: the protocol's worst error (as a failed sequence).
                bad = pred.pair_failed if pred.pair_failed is not None else np.zeros(len(pairs), bool)
                rot, trans = np.where(bad, 180.0, rot), np.where(bad, 180.0, trans)
                failed_pairs = int(bad.sum())
            rec = {
                "category": s.category,
                "sequence": s.sequence,
                "frame_ids": [int(v) for v in s.frame_ids],
                "image_paths": [fr.rel_path for fr in frames],
                "T_world_cam_gt": _mat(T_gt),
                "K_gt": _mat(np.stack([fr.K for fr in frames])),
                "T_world_cam_pred": None if pred is None else _mat(pred.T_world_cam),
                "K_pred": None if pred is None else _mat(pred.K),
                "T_rel_pred": None if pred is None or pred.T_rel is None else _mat(pred.T_rel),
                "pairs": pairs.tolist(),
                "rot_err_deg": rot.tolist(),
                "trans_err_deg": trans.tolist(),
                "metrics": pooled_metrics(rot, trans),
                "seconds": seconds,
                "peak_rss_mb": rss,
                "peak_gpu_mb": gpu,
                "info": {} if pred is None else pred.info,
                "failed": pred is None,
                "failed_pairs": failed_pairs,
                "error": error,
            }
            f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())
            stats.done += 1
            stats.failed += pred is None
            stats.failed_pairs += failed_pairs
            stats.seconds += seconds
            logger.info(
                "%s/%s: RRA@15 %.1f RTA@15 %.1f mAA(30) %.1f (%.2fs)",
                s.category, s.sequence, rec["metrics"]["RRA@15"], rec["metrics"]["RTA@15"],
                rec["metrics"]["mAA(30)"], seconds,
            )  # fmt: skip
    if stats.failed or stats.failed_pairs:
        logger.warning(
            "%d sequence(s) failed and %d pair(s) had no pose; each counts with 180° errors (see %s: "
            "'failed', 'failed_pairs', 'error')",
            stats.failed, stats.failed_pairs, path,
        )  # fmt: skip
    return stats


def summarize(out_dir: str | Path, expected: Sequence[tuple[str, str]] | None = None) -> dict:
    """Merge all results files of ``out_dir`` and write ``summary.{json,md,csv}`` (atomically).

    Args:
        out_dir: the run's output folder.
        expected: ``(category, sequence)`` keys the run should cover; missing ones are reported.

    Returns:
        ``{"categories": {cat: row}, "mean": row, "missing": [...], "complete": bool}``; a row holds the metrics
        (percent), ``sequences``, ``pairs``, ``sec_per_seq``, ``peak_rss_mb`` and ``peak_gpu_mb``.
    """
    out_dir = Path(out_dir)
    records = load_results(out_dir)
    if not records:
        raise DatasetError(f"no results in {out_dir}")
    if expected is not None:
        want = list(expected)
        keep = set(want)
        records = [r for r in records if (r["category"], r["sequence"]) in keep]
        have = {(r["category"], r["sequence"]) for r in records}
        missing = [list(k) for k in want if k not in have]
    else:
        missing = []
    by_cat: dict[str, list[dict]] = {}
    for r in records:
        by_cat.setdefault(r["category"], []).append(r)
    agg = aggregate({c: [(r["rot_err_deg"], r["trans_err_deg"]) for r in rs] for c, rs in sorted(by_cat.items())})

    def resources(rs: list[dict]) -> dict:
        gpu = [r["peak_gpu_mb"] for r in rs if r.get("peak_gpu_mb") is not None]
        return {
            "failed": sum(bool(r.get("failed")) for r in rs),
            "failed_pairs": sum(int(r.get("failed_pairs", 0)) for r in rs),
            "sec_per_seq": float(np.mean([r["seconds"] for r in rs])),
            "peak_rss_mb": float(max(r["peak_rss_mb"] for r in rs)),
            "peak_gpu_mb": float(max(gpu)) if gpu else None,
        }

    cats = {c: agg["categories"][c] | resources(rs) for c, rs in sorted(by_cat.items())}
    summary = {
        "categories": cats,
        "mean": agg["mean"] | resources(records),
        "missing": missing,
        "complete": not missing,
    }
    write_json_atomic(out_dir / "summary.json", summary)
    write_text_atomic(out_dir / "summary.md", format_markdown(summary))
    write_text_atomic(out_dir / "summary.csv", format_csv(summary))
    if missing:
        logger.warning("summary of %s covers %d sequences; %d still missing", out_dir, len(records), len(missing))
    return summary


COLUMNS = ("sequences", "pairs") + METRIC_KEYS + ("sec_per_seq", "peak_rss_mb", "peak_gpu_mb", "failed", "failed_pairs")


def _rows(summary: dict) -> list[tuple[str, dict]]:
    return list(summary["categories"].items()) + [("mean", summary["mean"])]


def _fmt(v, column: str = "") -> str:
    if v is None:
        return ""
    if isinstance(v, int):
        return str(v)
    if column == "sec_per_seq":
        return f"{v:.3g}"  # oracle runs take well under 10 ms
    return f"{v:.2f}"


def format_markdown(summary: dict) -> str:
    """A markdown table: one row per category and a ``mean`` row (unweighted mean over categories)."""
    head = "| category | " + " | ".join(COLUMNS) + " |"
    sep = "|---" * (len(COLUMNS) + 1) + "|"
    lines = [head, sep]
    for name, row in _rows(summary):
        cells = [f"**{name}**" if name == "mean" else name] + [_fmt(row.get(c), c) for c in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    note = "\nMetrics in percent; `mean` = unweighted mean over categories; sec_per_seq = prediction time."
    if summary["missing"]:
        note += f"\n\n**Incomplete**: {len(summary['missing'])} sampled sequences have no result yet."
    return "\n".join(lines) + "\n" + note + "\n"


def format_csv(summary: dict) -> str:
    """CSV with the same rows and columns as ``format_markdown`` (full precision)."""
    lines = ["category," + ",".join(COLUMNS)]
    for name, row in _rows(summary):
        lines.append(name + "," + ",".join("" if row.get(c) is None else repr(row[c]) for c in COLUMNS))
    return "\n".join(lines) + "\n"
