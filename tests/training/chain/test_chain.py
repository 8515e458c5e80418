"""The recon-tiny chain end to end at a minuscule scale: MuM -> DUNE -> decoder -> safetensors -> held-out figures,
each stage loading the previous stage's output, and a second run skipping every finished stage."""

import json

import numpy as np
import pytest
import torch

import backbone
import recon
from backbone.fileio import sha256_file
from training.chain import run as chain
from training.chain.run import HELD_OUT_SEED as HELD_OUT
from training.chain.run import ChainOptions, run_chain


@pytest.fixture(scope="module")
def tiny_chain(tmp_path_factory):
    out = tmp_path_factory.mktemp("chain")
    opts = ChainOptions(out, steps_scale=0.001, scenes=1, eval_scenes=1, eval_views=3, eval_size=(112, 84))
    return opts, run_chain(opts)


@pytest.mark.slow
def test_each_stage_loads_the_previous_ones_output(tiny_chain):
    opts, records = tiny_chain
    assert list(records) == ["mum", "distill", "finetune", "export", "evaluate"]
    distill_cfg = json.loads((opts.out / "distill" / "config.json").read_text())
    assert distill_cfg["teachers"][0]["checkpoint"] == records["mum"]["encoder"]
    finetune_cfg = json.loads((opts.out / "finetune" / "config.json").read_text())
    assert finetune_cfg["model"]["backbone_checkpoint"] == records["distill"]["student"]
    # The final model's frozen encoder is the distilled student, bit for bit (up to the float16 export).
    student = backbone.load(records["distill"]["student"], with_projectors=False)
    final = recon.load_model(records["export"]["model"])
    for (name, a), (_, b) in zip(student.state_dict().items(), final.backbone.state_dict().items(), strict=True):
        torch.testing.assert_close(b.float(), a.half().float(), msg=name)


@pytest.mark.slow
def test_the_export_is_safetensors_with_its_sha256(tiny_chain):
    opts, records = tiny_chain
    path = opts.out / chain.MODEL_NAME
    assert records["export"]["model"] == str(path) and path.read_bytes()[:8] != b"PK\x03\x04"  # not a torch zip
    assert records["export"]["sha256"] == sha256_file(path)
    assert records["export"]["bytes"] == path.stat().st_size


@pytest.mark.slow
def test_the_held_out_figures_are_measured(tiny_chain):
    _, records = tiny_chain
    figures = records["evaluate"]
    for key in ("all", "orbit", "room_walk"):
        f = figures[key]
        assert 0 <= f["RRA@15"] <= 100 and 0 <= f["RTA@15"] <= 100
        assert f["median_depth_error"] >= 0 and 0 <= f["match_within_3px"] <= 1
    assert (
        figures["all"]["matches_checked"]
        == figures["orbit"]["matches_checked"] + figures["room_walk"]["matches_checked"]
    )


@pytest.mark.slow
def test_a_second_run_skips_the_finished_stages(tiny_chain, monkeypatch):
    opts, records = tiny_chain

    def boom(*args):
        raise AssertionError("a finished stage ran again")

    monkeypatch.setattr(chain, "STAGES", {name: boom for name in chain.STAGES})
    assert run_chain(opts) == records


def test_depth_error_is_scale_free_and_counts_missing_depth_as_100_percent():
    from types import SimpleNamespace

    from tools.synth import render_scene
    from training.chain.evaluate import depth_errors

    views = render_scene("orbit", n_views=2, size=(48, 36), seed=HELD_OUT)
    by_name = {v.name: v for v in views}
    # Network pixels at half the resolution: x_orig = 2 x_net + 0.5 (pixel centres).
    net_to_orig = np.array([[2.0, 0, 0.5], [0, 2.0, 0.5], [0, 0, 1]])
    half = [v.depth[::2, ::2] * 3.0 for v in views]  # the right depths at another scale
    scene = SimpleNamespace(names=[f"{v.name}.png" for v in views], depth=half, net_to_orig=[net_to_orig] * 2)
    err = depth_errors(scene, by_name)
    assert len(err) == sum(int(v.mask[::2, ::2].sum()) for v in views)
    assert np.median(err) < 0.05  # nearest-pixel sampling: x_orig lands between the pixels that were kept
    missing = [np.where(np.arange(d.shape[1]) < d.shape[1] // 2, d, 0.0) for d in half]
    err = depth_errors(SimpleNamespace(names=scene.names, depth=missing, net_to_orig=scene.net_to_orig), by_name)
    assert 0.4 < np.mean(err == 1.0) < 0.6
