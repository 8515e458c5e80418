"""Fixtures for the alignment tests: small synthetic scenes with known cameras, and oracle predictions.

The issue's acceptance scenes are demo_data-sized (8-12 views at about 512x384); to keep each test within a few
seconds on two shared cores, these tests render 8 views at 256x192, ask the oracle for 256 matches per pair and
run fewer iterations than the defaults (see ``FAST_SPARSE`` / ``FAST_DENSE``). ``recon bench``-style figures at
full size are in docs/alignment.md.
"""

from __future__ import annotations

import pytest

from .helpers import FAST_DENSE, FAST_SPARSE, KNOWN, SIZE, all_ordered_pairs

# One intra-op thread (the optimisation is many small tensor ops): tests/conftest.py pins it for the whole session,
# before these session fixtures run.


@pytest.fixture(scope="session")
def orbit_gt():
    from tools.synth import render_scene

    return render_scene("orbit", n_views=8, size=SIZE, seed=0)


@pytest.fixture(scope="session")
def orbit_oracle(orbit_gt):
    from tools.oracle import oracle_predictions

    # A 2 % per-pair focal error on top of the 1 % depth noise and 10 % wrong matches: without it the
    # oracle's rays are exact, focal estimation is trivial and known intrinsics could not help measurably.
    return oracle_predictions(orbit_gt, all_ordered_pairs(len(orbit_gt)), n_matches=256, focal_noise=0.02, seed=0)


@pytest.fixture(scope="session")
def sparse_scenes(orbit_gt, orbit_oracle):
    """Sparse alignment of the oracle scene without priors, with known K, and with three known poses."""
    from recon.align import sparse_align
    from recon.types import Priors

    views, preds, matches = orbit_oracle
    return {
        "none": sparse_align(views, preds, matches, None, FAST_SPARSE),
        "K": sparse_align(views, preds, matches, Priors(K=[v.K for v in orbit_gt]), FAST_SPARSE),
        "poses": sparse_align(
            views, preds, matches, Priors(T_world_cam={k: orbit_gt[k].T_world_cam for k in KNOWN}), FAST_SPARSE
        ),
    }


@pytest.fixture(scope="session")
def dense_scenes(orbit_gt, orbit_oracle):
    from recon.align import dense_align
    from recon.types import Priors

    views, preds, _ = orbit_oracle
    return {
        "none": dense_align(views, preds, None, FAST_DENSE),
        "K": dense_align(views, preds, Priors(K=[v.K for v in orbit_gt]), FAST_DENSE),
        "poses": dense_align(views, preds, Priors(T_world_cam={k: orbit_gt[k].T_world_cam for k in KNOWN}), FAST_DENSE),
    }
