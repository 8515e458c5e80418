"""An EXIF focal is a start value that the alignment optimises like any focal (``Priors.focal_init``); a fixed
focal (``Priors.focal``, the API side of ``--fix-focal``) stays put."""

import logging

import numpy as np
import pytest

from recon.align import dense_align, sparse_align
from recon.types import Priors
from tools.oracle import oracle_predictions

from .helpers import FAST_DENSE, FAST_SPARSE, all_ordered_pairs

WRONG = 1.3  # EXIF focal 30 % too long


@pytest.fixture(scope="module")
def scene5(orbit_gt):
    gt = orbit_gt[:5]
    return gt, oracle_predictions(gt, all_ordered_pairs(5), n_matches=256, seed=3)


@pytest.mark.parametrize("method", ["sparse", "dense"])
def test_wrong_exif_focal_moves_toward_the_truth(scene5, method, caplog):
    gt, (views, preds, matches) = scene5
    f_true = np.array([v.K[0, 0] for v in gt])
    start = Priors(focal_init=list(WRONG * f_true))
    fixed = Priors(focal=list(WRONG * f_true))
    if method == "sparse":
        run = lambda pri: sparse_align(views, preds, matches, pri, FAST_SPARSE)  # noqa: E731
    else:
        run = lambda pri: dense_align(views, preds, pri, FAST_DENSE)  # noqa: E731
    with caplog.at_level(logging.WARNING, logger="recon.align.problem"):
        f_opt = run(start).K[:, 0, 0]
    assert caplog.text.count("30% off the point maps'") == 5  # one warning line per view
    err = np.abs(f_opt / f_true - 1)
    print(method, "focal error after starting 30 % off:", np.round(err, 4))
    # every view moves toward the truth (measured on this scene: sparse 12-24 %, dense 0-1.7 %), from 30 %
    assert err.max() < WRONG - 1 - 0.04 and err.mean() < 0.22, err
    # --fix-focal: the same wrong value is kept (up to the float32 optimisation)
    np.testing.assert_allclose(run(fixed).K[:, 0, 0], WRONG * f_true, rtol=1e-6)


def test_bad_focal_init_is_an_error(scene5):
    _, (views, preds, matches) = scene5
    with pytest.raises(ValueError, match="focal_init"):
        sparse_align(views, preds, matches, Priors(focal_init=[-1.0] + [None] * 4), FAST_SPARSE)
