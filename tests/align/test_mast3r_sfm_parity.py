"""Parity of ``align(method="mast3r-sfm")`` with the OFFICIAL ``sparse_global_alignment`` on the ga_parity cases.

Each case (tests/fixtures/ga_parity/<case>, copied from shared/conformance/ga_parity) holds the exact pair
predictions the official code saw and its outputs for two configs: the function defaults (``matching_conf_thr=5``,
so the deliberately weak pair falls back to the DUSt3R regression loss) and the demo defaults
(``matching_conf_thr=0``). Metrics and tolerances are the checker's (``ga_parity_check``, a copy of our shared
checker): gauge-free pose, focal and depth distances within ``case.json["tolerances"]``, and the output confidence
``> 1.5`` (the demo's threshold) selecting the official pixels up to 0.5 %.

One official-size run costs about 5-6 CPU seconds (one thread); each (case, config) runs once per session.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .ga_parity_check import build_recon_inputs, distance, load_case, mask_diff, official, within

CASES_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "ga_parity"
CASES = ("orbit5", "room_walk5")
CONFIGS = ("function_defaults", "demo_defaults")
CASE_FILES = (
    "case.json",
    "gt.json",
    "gt_depth.safetensors",
    "inputs.safetensors",
    "official_sparse.safetensors",
    "images/view_000.png",
)
CONF_THR = 1.5
MASK_TOL = 0.005  # stricter than the checker's 1 % default


def case_dir(name: str) -> Path:
    """The committed case folder; a missing file FAILS the test (these are golden fixtures, not optional)."""
    d = CASES_DIR / name
    missing = [f for f in CASE_FILES if not (d / f).is_file()]
    if missing:
        pytest.fail(f"golden fixture {d} is missing {missing} (copy it from shared/conformance/ga_parity/{name})")
    return d


_RUNS: dict = {}


def run(name: str, config: str):
    """``(case, scene)`` of ``align(method="mast3r-sfm")`` as the checker calls it, cached per session."""
    if (name, config) not in _RUNS:
        import recon.align as ra

        c = load_case(case_dir(name))
        views, preds = build_recon_inputs(c)
        kw = {"matching_conf_thr": 0.0} if config == "demo_defaults" else {}
        _RUNS[(name, config)] = c, ra.align(views, preds, matches=None, method="mast3r-sfm", **kw)
    return _RUNS[(name, config)]


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("name", CASES)
def test_parity_with_official(name, config):
    c, scene = run(name, config)
    ref = official(c["dir"], "sparse", config)
    tol = c["case"]["tolerances"][f"sparse_{config}"]
    d = distance(scene.T_world_cam, scene.K[:, 0, 0], list(scene.depth), ref["T"], ref["f"], ref["depth"])
    ok, bad = within(d, tol)
    assert ok, f"{name} [{config}] out of tolerance: " + ", ".join(f"{k} {d[k]:.4g} > {tol[k]:.4g}" for k in bad)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("name", CASES)
def test_conf_mask_matches_official(name, config):
    c, scene = run(name, config)
    ref = official(c["dir"], "sparse", config)
    md = mask_diff(list(scene.conf), ref["conf"], CONF_THR)
    assert md <= MASK_TOL, f"{name} [{config}]: {md:.4f} of pixels disagree on conf > {CONF_THR}"


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("name", CASES)
def test_fallback_pairs_are_the_officials(name, config):
    c, scene = run(name, config)
    official_cfg = c["case"]["official_sparse"][config]
    expected = sorted(sorted(int(v) for v in k.split("_")) for k in official_cfg["fallback_pairs_dust3r_regression"])
    assert scene.info["fallback_pairs"] == expected
    n_official = {k: v["n"] for k, v in official_cfg["matches"].items()}
    assert scene.info["n_matches"] == {k: n_official[k] for k in scene.info["n_matches"]}
    assert scene.registered.all() and scene.info["unregistered"] == []


def test_case_json_names_the_config_we_reproduce():
    """The official kwargs recorded in each case are the defaults of ``Mast3rSfmConfig`` (demo: + conf thr 0)."""
    from recon.align.mast3r_sfm import Mast3rSfmConfig

    cfg = Mast3rSfmConfig()
    for name in CASES:
        kw = json.loads((case_dir(name) / "case.json").read_text())["official_sparse"]["function_defaults"]["kwargs"]
        assert (kw["subsample"], kw["kinematic_mode"], kw["shared_intrinsics"]) == (8, cfg.kinematic_mode, False)
        assert (kw["lr1"], kw["niter1"], kw["lr2"], kw["niter2"]) == (cfg.lr1, cfg.niter1, cfg.lr2, cfg.niter2)
        assert (kw["loss1"], kw["loss2"], kw["lossd"]) == ("gamma_loss(1.5)", "gamma_loss(0.5)", "gamma_loss(1.1)")
        assert (cfg.loss1, cfg.loss2, cfg.lossd) == (1.5, 0.5, 1.1)
        assert (kw["opt_pp"], kw["opt_depth"], kw["depth_mode"], kw["exp_depth"]) == (
            cfg.opt_pp,
            cfg.opt_depth,
            cfg.depth_mode,
            cfg.exp_depth,
        )
        assert (kw["matching_conf_thr"], kw["loss_dust3r_w"]) == (cfg.matching_conf_thr, cfg.loss_dust3r_w)
