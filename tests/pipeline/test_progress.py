"""recon.progress: the step hook a front-end installs to follow or stop the long loops."""

from __future__ import annotations

import threading

import pytest
import torch

from recon.progress import step, step_hook


def test_steps_reach_the_hook_of_this_thread_only():
    seen, other = [], []
    step("inference", 1, 2)  # no hook: nothing happens
    with step_hook(lambda *a: seen.append(a)):
        step("inference", 1, 2)
        t = threading.Thread(target=lambda: other.append(step("alignment", 1, 1)))
        t.start()
        t.join()
        with step_hook(lambda *a: seen.append(("inner", *a))):
            step("matching", 3, 4, "x")
        step("alignment", 5, 6, "coarse")
    step("inference", 2, 2)  # the hook is gone again
    assert seen == [("inference", 1, 2, ""), ("inner", "matching", 3, 4, "x"), ("alignment", 5, 6, "coarse")]


def test_a_raising_hook_stops_an_alignment_stage_between_iterations():
    from recon.align.model import autograd_step, run_stage

    x = torch.nn.Parameter(torch.tensor([3.0]))
    calls = []

    def hook(stage, done, total, detail):
        calls.append((stage, done, total, detail))
        if done == 5:
            raise KeyboardInterrupt("stop")

    with step_hook(hook), pytest.raises(KeyboardInterrupt):
        run_stage(autograd_step(lambda: (x**2).sum()), [x], lr=0.1, niter=100, name="coarse", progress=False)
    assert calls[-1] == ("alignment", 5, 100, "coarse") and len(calls) == 5
