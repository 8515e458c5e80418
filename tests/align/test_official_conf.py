"""``Scene.conf`` is in the official demos' scale, so their thresholds keep the same pixels (issue "Same settings").

Reference: the official MASt3R-SfM sparse GA and DUSt3R dense GA run on exactly these inputs
(tests/fixtures/ga_parity, byte copies of shared/conformance/ga_parity; layout in its README).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.numpy import load_file

from recon.align import DenseAlignConfig, SparseAlignConfig, align
from recon.align.confidence import default_conf_thr, dense_view_conf, sparse_view_conf, view_confidences
from recon.export import PlyOptions, export
from recon.matching import match_pair
from recon.scene import valid_masks
from recon.types import PairPrediction, View

CASES = Path(__file__).parents[1] / "fixtures" / "ga_parity"
N = 5
# The official conf maps are stored as float16: about 3 significant digits.
RTOL = 2e-3
# At most this fraction of the pixels may fall on different sides of the threshold (the 0.5 %).
MASK_TOL = 0.005


def _case(name: str):
    inputs = load_file(CASES / name / "inputs.safetensors")
    views = []
    for k in range(N):
        rgb = np.asarray(Image.open(CASES / name / "images" / f"view_{k:03d}.png").convert("RGB"))
        views.append(View(image=torch.from_numpy(rgb.transpose(2, 0, 1).copy()).float() / 255, idx=k, name=str(k)))

    def t(key):
        return torch.from_numpy(inputs[key].astype(np.float32))

    preds = []
    for i in range(N):
        for j in range(N):
            if i != j:
                p = f"pair_{i}_{j}."
                fields = ("pts3d_i", "pts3d_j", "conf_i", "conf_j", "desc_i", "desc_j", "desc_conf_i", "desc_conf_j")
                preds.append(PairPrediction(i=i, j=j, **{f: t(p + f) for f in fields}))
    return views, preds


def _disagree(a: np.ndarray, b: np.ndarray, thr: float) -> float:
    return float(((a > thr) != (b > thr)).mean())


@pytest.mark.parametrize("case", ["orbit5", "room_walk5"])
@pytest.mark.parametrize("config", ["function_defaults", "demo_defaults"])
def test_sparse_conf_is_the_official_canonical_conf(case, config):
    _, preds = _case(case)
    official = load_file(CASES / case / "official_sparse.safetensors")[f"{config}.conf"].astype(np.float64)
    ours = np.stack(view_confidences(N, preds, "sparse"))
    kept = official > 0  # the official clean_pointcloud set the others to 0
    assert kept.mean() > 0.5
    np.testing.assert_allclose(ours[kept], official[kept], rtol=RTOL)
    # The MASt3R demo's default threshold selects the same pixels (measured: 0 of ~50k differ).
    assert _disagree(ours[kept], official[kept], 1.5) <= MASK_TOL
    # recon's old scale (1 + Σw²/Σw) was one unit looser: it kept 3.4-4.4 % more pixels at 1.5.
    assert _disagree(ours[kept] + 1, official[kept], 1.5) > 0.02


@pytest.mark.parametrize("case", ["orbit5", "room_walk5"])
def test_dense_conf_is_the_official_raw_max(case):
    _, preds = _case(case)
    official = load_file(CASES / case / "official_dense.safetensors")["conf"].astype(np.float64)
    ours = view_confidences(N, preds, "dense")
    for k in range(N):
        np.testing.assert_allclose(ours[k], official[k], rtol=RTOL)
        assert _disagree(ours[k], official[k], 3.0) <= MASK_TOL


def test_view_conf_formulas_by_hand():
    a, b = np.array([[2.0, 1.5]]), np.array([[4.0, np.inf]])
    # w = conf - 0.999: pixel 0 -> (1.001² + 3.001²) / (1.001 + 3.001); an infinite conf gets no weight
    np.testing.assert_allclose(sparse_view_conf([a, b]), [[(1.001**2 + 3.001**2) / 4.002, 0.501]])
    np.testing.assert_array_equal(dense_view_conf([a, b]), [[4.0, 1.5]])
    assert sparse_view_conf([np.array([[np.nan]])])[0, 0] == 0


@pytest.mark.parametrize("method", ["sparse", "dense"])
def test_align_reports_official_conf_and_exports_at_the_demo_default(method, tmp_path):
    views, preds = _case("orbit5")
    if method == "sparse":
        by = {p.key: p for p in preds}
        matches = [match_pair(by[(i, j)], reverse=by[(j, i)]) for i in range(N) for j in range(i + 1, N)]
        cfg = SparseAlignConfig(niter_coarse=5, niter_fine=5)
    else:
        matches, cfg = None, DenseAlignConfig(niter=5)
    scene = align(views, preds, matches, method=method, config=cfg)
    assert scene.registered.all() and scene.info["conf_scale"] == {"sparse": "mast3r-sparse"}.get(method, "dust3r-max")
    want = view_confidences(N, preds, method)
    for k in range(N):
        np.testing.assert_allclose(scene.conf[k], want[k], rtol=1e-6)
    thr = default_conf_thr(scene)
    assert thr == (1.5 if method == "sparse" else 3.0)
    # conf_thr=None is the demo default of the scene's method, in export and in the masks
    n_default = sum(int(m.sum()) for m in valid_masks(scene))
    assert n_default == sum(int(m.sum()) for m in valid_masks(scene, thr))
    assert n_default != sum(int(m.sum()) for m in valid_masks(scene, 1.0))
    export(scene, tmp_path / "a.ply", PlyOptions(clean_depth=False))
    export(scene, tmp_path / "b.ply", PlyOptions(conf_thr=thr, clean_depth=False))
    assert (tmp_path / "a.ply").read_bytes() == (tmp_path / "b.ply").read_bytes()
