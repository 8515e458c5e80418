"""``recon bench pipeline --oracle`` end to end on a tiny synthetic orbit (figures printed, never timed)."""

from __future__ import annotations

import json

from cli import main

STAGES = ("pairs", "inference", "matching", "alignment", "export")


def test_bench_pipeline_oracle_end_to_end(tmp_path, capsys):
    out = tmp_path / "rows.json"
    rc = main(["bench", "pipeline", "--oracle", "--views", "3", "4", "--sizes", "64x48", "--max-ram-gb", "2",
               "--json", str(out)])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "graph swin-2" in text and "max RAM 2.0 GB" in text and "| 4 | 64x48 |" in text
    rows = json.loads(out.read_text())
    assert [(r["views"], r["pairs"]) for r in rows] == [(3, 3), (4, 6)]  # swin-2 on 3 and 4 views: complete
    for r in rows:
        assert r["registered"] == f"{r['views']}/{r['views']}" and r["matches"] > 0 and r["iters"] > 0
        assert all(r[f"{s}_cpu_s"] is not None and r[f"{s}_peak_mb"] > 0 for s in STAGES), r
        assert r["within_ram"] and r["peak_mb"] < 2048
        # exact predictions up to a per-pair scale: the alignment recovers the cameras
        assert r["rot_deg"] < 1 and r["tdir_deg"] < 2 and r["focal_pct"] < 3, r


def test_bad_arguments_are_one_line_errors(capsys):
    assert main(["bench", "pipeline", "--oracle", "--sizes", "65x48"]) != 0
    assert main(["bench", "pipeline", "--oracle", "--max-ram-gb", "0"]) != 0
    err = capsys.readouterr().err
    assert "multiple of 16" in err and "--max-ram-gb" in err
