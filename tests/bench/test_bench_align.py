"""``recon bench align`` end to end on a tiny synthetic scene (figures printed, never asserted against a clock)."""

from __future__ import annotations

import json

import numpy as np

from cli import main
from tools.bench.align import available_methods, pose_errors


def test_bench_align_synthetic_end_to_end(tmp_path, capsys):
    out = tmp_path / "rows.json"
    rc = main(["bench", "align", "--synthetic", "--views", "3", "--sizes", "64x48", "--methods", "sparse", "dense",
               "--json", str(out), "--profile"])  # fmt: skip
    assert rc == 0
    text = capsys.readouterr().out
    assert "| orbit3@64x48 | sparse |" in text and "hottest functions" in text
    rows = json.loads(out.read_text())
    assert [r["method"] for r in rows] == ["sparse", "dense"]
    for r in rows:
        assert r["registered"] == "3/3" and r["cpu_s"] > 0 and r["peak_rss_mb"] > 0 and r["iters"] > 0
        assert r["rot_deg"] < 5 and r["focal_pct"] < 10, r
    assert rows[0]["matches"] > 0 and "match_cpu_s" in rows[0]


def test_methods_come_from_the_dispatcher():
    methods = available_methods()
    assert {"sparse", "dense"} <= set(methods)


def test_pose_errors_are_gauge_free():
    rng = np.random.default_rng(0)
    T = np.tile(np.eye(4), (4, 1, 1))
    T[:, :3, 3] = rng.normal(size=(4, 3))
    Q = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    G = np.eye(4)
    G[:3, :3] = Q * np.sign(np.linalg.det(Q))  # a rotation (det +1)
    rot, tdir = pose_errors(G @ T, T)
    np.testing.assert_allclose(rot, 0, atol=1e-6)
    np.testing.assert_allclose(tdir, 0, atol=1e-5)


def test_bad_arguments_are_one_line_errors(capsys, tmp_path):
    assert main(["bench", "align"]) != 0
    assert main(["bench", "align", str(tmp_path)]) != 0
    assert main(["bench", "align", "--synthetic", "--sizes", "big"]) != 0
    err = capsys.readouterr().err
    assert "case.json" in err and "WxH" in err
