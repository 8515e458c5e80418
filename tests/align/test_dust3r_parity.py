"""``align(..., method="dust3r")``: DUSt3R's PointCloudOptimizer against the official code's outputs, and its parts.

The parity cases (tests/fixtures/ga_parity/<case>, copied from shared/conformance/ga_parity) hold the pair
predictions the official ``PointCloudOptimizer`` got and what it made of them with the demo's settings; the
metrics and tolerances are those of the shared checker (``ga_parity_check.py``, a copy). A missing
fixture fails. The unit tests use hand-made scenes with exact pair predictions.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from recon.align import align
from recon.align.dust3r import (
    Dust3rConfig,
    PointCloudOptimizer,
    _Edges,
    clean_pointcloud,
    clean_scene_conf,
    dust3r_align,
    lr_at,
    mst_init,
    pnp_ransac,
    signed_expm1,
    signed_log1p,
)
from recon.align.problem import AlignmentError
from recon.types import PairPrediction, Priors, View

from . import ga_parity_check as gpc

CASES = Path(__file__).resolve().parents[1] / "fixtures" / "ga_parity"


def _case_dir(name: str) -> Path:
    path = CASES / name
    files = ["case.json", "gt.json", "inputs.safetensors", "official_dense.safetensors", "images/view_000.png"]
    missing = [f for f in files if not (path / f).is_file()]
    if missing:  # a committed golden fixture: its absence is a failure, never a skip
        pytest.fail(f"missing parity fixture files in {path}: {missing}")
    return path


@pytest.fixture(scope="module", params=["orbit5", "room_walk5"])
def parity_run(request):
    """(case, official dense outputs, recon scene) for one case: the checker's own inputs and call."""
    path = _case_dir(request.param)
    case = gpc.load_case(path)
    views, preds = gpc.build_recon_inputs(case)
    scene = align(views, preds, matches=None, method="dust3r")
    return case, gpc.official(path, "dense"), scene


def test_parity_with_official_pointcloud_optimizer(parity_run):
    case, ref, scene = parity_run
    d = gpc.distance(scene.T_world_cam, scene.K[:, 0, 0], list(scene.depth), ref["T"], ref["f"], ref["depth"])
    tol = case["case"]["tolerances"]["dense"]
    ok, bad = gpc.within(d, tol)
    assert ok, f"{case['case']['name']}: {gpc.fmt(d, tol)}; out of tolerance: {bad}"
    assert scene.registered.all() and scene.info["unregistered"] == []
    pp = np.stack([K[:2, 2] for K in scene.K])
    np.testing.assert_allclose(pp, ref["pp"], atol=1e-4)  # frozen at the image centre, as the official


def test_conf_is_the_official_raw_im_conf(parity_run):
    _, ref, scene = parity_run
    assert scene.info["conf_scale"] == "dust3r-max"
    # the demo's threshold on the official raw scale selects the same pixels
    assert gpc.mask_diff(list(scene.conf), ref["conf"], 3.0) <= 0.005
    for ours, theirs in zip(scene.conf, ref["conf"], strict=True):  # im_conf is an input: equal to fp16 rounding
        np.testing.assert_allclose(ours, theirs, rtol=1e-3)


def test_clean_conf_matches_the_official_clean_depth(parity_run):
    case, _, scene = parity_run
    from safetensors.numpy import load_file

    official = load_file(str(case["dir"] / "official_dense.safetensors"))
    n = case["case"]["n_views"]
    theirs = gpc.per_view(official, "conf_clean", n)
    ours = clean_scene_conf(scene)
    assert gpc.mask_diff(ours, theirs, 3.0) <= 0.005
    rejected = sum(int((np.asarray(c) == 0).sum()) for c in theirs)
    assert rejected > 0  # the cases do have points the cleaning rejects
    assert gpc.mask_diff(ours, theirs, 0.0) <= 0.005


# ----------------------------------------------------------------------------------------------------------------
# hand-made scenes: exact pair predictions of known cameras


def _look_at(centre, target) -> np.ndarray:
    z = np.asarray(target, float) - centre
    z /= np.linalg.norm(z)
    x = np.cross([0.0, -1.0, 0.0], z)
    x /= np.linalg.norm(x)
    T = np.eye(4)
    T[:3, :3] = np.stack([x, np.cross(z, x), z], 1)
    T[:3, 3] = centre
    return T


def _scene(shapes, focals, n_edges="all", seed=0):
    """Cameras around the origin, smooth per-view depth maps, and every ordered pair's exact prediction with a
    random per-pair scale (both point maps in camera i's frame, official pixel grid and centred principal point)."""
    rng = np.random.default_rng(seed)
    n = len(shapes)
    T = [
        _look_at(np.array([2.0 * math.sin(a), 0.3 * k, -2.0 * math.cos(a)]), [0, 0, 0.2])
        for k, a in enumerate(np.linspace(-0.5, 0.5, n))
    ]
    cam_pts = []
    for (H, W), f in zip(shapes, focals, strict=True):
        y, x = np.mgrid[0:H, 0:W].astype(float)
        depth = 2.0 + 0.3 * np.sin(x / W * 3 + rng.uniform(0, 3)) * np.cos(y / H * 2) + 0.1 * rng.uniform()
        cam_pts.append(np.stack([(x - W / 2) / f * depth, (y - H / 2) / f * depth, depth], -1))
    world = [p @ Tk[:3, :3].T + Tk[:3, 3] for p, Tk in zip(cam_pts, T, strict=True)]
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j] if n_edges == "all" else n_edges
    preds = []
    for i, j in pairs:
        s = rng.uniform(0.5, 2.0)
        T_inv = np.linalg.inv(T[i])
        pj = world[j] @ T_inv[:3, :3].T + T_inv[:3, 3]
        preds.append(
            PairPrediction(
                i=i,
                j=j,
                pts3d_i=torch.tensor(s * cam_pts[i], dtype=torch.float32),
                pts3d_j=torch.tensor(s * pj, dtype=torch.float32),
                conf_i=torch.tensor(5.0 + rng.uniform(size=shapes[i]), dtype=torch.float32),
                conf_j=torch.tensor(5.0 + rng.uniform(size=shapes[j]), dtype=torch.float32),
            )
        )
    views = [View(image=torch.rand(3, H, W), idx=k, name=f"v{k}") for k, (H, W) in enumerate(shapes)]
    return views, preds, np.stack(T)


def _edges(views, preds) -> _Edges:
    return _Edges(
        shapes=[v.true_shape for v in views],
        edges=[p.key for p in preds],
        pred_i=[p.pts3d_i for p in preds],
        pred_j=[p.pts3d_j for p in preds],
        conf_i=[p.conf_i for p in preds],
        conf_j=[p.conf_j for p in preds],
    )


class TestSmallFunctions:
    def test_signed_log1p_round_trip_and_values(self):
        x = torch.tensor([-50.0, -1.0, -1e-4, 0.0, 1e-4, 0.5, 3.0, 80.0])
        torch.testing.assert_close(signed_expm1(signed_log1p(x)), x, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(signed_log1p(torch.tensor([math.e - 1, 1 - math.e])), torch.tensor([1.0, -1.0]))

    @pytest.mark.parametrize("schedule", ["linear", "cosine"])
    def test_schedule_end_points(self, schedule):
        assert lr_at(0.0, 0.01, 1e-6, schedule) == pytest.approx(0.01)
        assert lr_at(1.0, 0.01, 1e-6, schedule) == pytest.approx(1e-6)
        assert lr_at(0.5, 0.01, 1e-6, schedule) == pytest.approx((0.01 + 1e-6) / 2)  # both pass the midpoint
        with pytest.raises(ValueError):
            lr_at(1.5, 0.01, 1e-6, schedule)

    def test_schedules_differ_in_between(self):
        assert lr_at(0.25, 1.0, 0.0, "linear") == pytest.approx(0.75)
        assert lr_at(0.25, 1.0, 0.0, "cosine") == pytest.approx((1 + math.cos(math.pi / 4)) / 2)

    def test_im_conf_is_the_max_over_pairs(self):
        views, preds, _ = _scene([(6, 8)] * 3, [10.0] * 3)
        im_conf = _edges(views, preds).im_conf()
        for k in range(3):
            stack = [p.conf_i for p in preds if p.i == k] + [p.conf_j for p in preds if p.j == k]
            torch.testing.assert_close(im_conf[k], torch.stack(stack).amax(0), rtol=0, atol=0)

    def test_config_validates(self):
        with pytest.raises(ValueError, match="schedule"):
            Dust3rConfig(schedule="step")
        with pytest.raises(ValueError, match="niter"):
            Dust3rConfig(niter=-1)


class TestCleanPointcloud:
    def _two_views(self, conf0, conf1):
        H, W, f = 4, 6, 5.0
        K = torch.tensor([[f, 0, W / 2], [0, f, H / 2], [0, 0, 1]]).expand(2, 3, 3)
        T = torch.eye(4).expand(2, 4, 4)  # the same camera twice
        depth = [torch.full((H, W), 1.0), torch.full((H, W), 2.0)]
        y, x = torch.meshgrid(torch.arange(H).float(), torch.arange(W).float(), indexing="ij")
        pts = [torch.stack([(x - W / 2) / f * d, (y - H / 2) / f * d, d], -1) for d in depth]
        confs = [torch.full((H, W), conf0), torch.full((H, W), conf1)]
        return clean_pointcloud(confs, K, T, depth, pts, tol=0.001, bad_conf=0.0)

    def test_points_in_front_of_a_more_confident_view_are_rejected(self):
        c0, c1 = self._two_views(5.0, 10.0)
        assert (c0 == 0).all()  # view 0's points hang in front of view 1's surface, which is more confident
        assert (c1 == 10.0).all()  # view 1's points lie behind view 0's surface: kept

    def test_more_confident_points_are_kept(self):
        c0, c1 = self._two_views(10.0, 5.0)
        assert (c0 == 10.0).all() and (c1 == 5.0).all()


class TestHandScene:
    def test_mst_init_recovers_the_cameras(self):
        # one focal for all: the official quirk below may give a view the focal of another view's point map
        shapes, focals = [(24, 32)] * 3, [30.0] * 3
        views, preds, T_gt = _scene(shapes, focals)
        opt = PointCloudOptimizer(_edges(views, preds), Dust3rConfig())
        info = mst_init(opt)
        assert len(info["mst_edges"]) == 2
        d = gpc.pose_distance(opt.T_world_cam().detach().numpy(), T_gt)
        assert d["rot_deg"] < 0.05 and d["tdir_deg"] < 0.05  # float32 registrations, RANSAC PnP
        np.testing.assert_allclose(opt.focals().detach().numpy(), focals, rtol=1e-3)
        assert info["init_loss"] < 1e-3

    def test_mixed_sizes(self):
        # three sizes, two areas: the stacked parameters are zero-padded to the largest area
        shapes = [(24, 32), (32, 24), (16, 24)]
        views, preds, T_gt = _scene(shapes, [30.0, 33.0, 20.0], seed=1)
        scene = align(views, preds, method="dust3r", niter=0)  # the initialisation alone is exact here
        assert gpc.pose_distance(scene.T_world_cam, T_gt)["rot_deg"] < 0.05
        assert [c.shape for c in scene.conf] == [d.shape for d in scene.depth] == shapes
        assert scene.registered.all()

    def test_loss_with_padding_equals_a_per_edge_sum(self):
        shapes = [(24, 32), (16, 24), (20, 20)]
        views, preds, _ = _scene(shapes, [30.0, 20.0, 22.0], seed=5)
        opt = PointCloudOptimizer(_edges(views, preds), Dust3rConfig())  # random parameters (official init=None)
        X = opt.unstack(opt.pts3d_stacked())
        S = opt.pw_similarities()
        num_i = num_j = area_i = area_j = 0.0
        for e, p in enumerate(preds):  # BasePCOptimizer's per-edge terms, unpadded
            for pred, conf, k, side in ((p.pts3d_i, p.conf_i, p.i, "i"), (p.pts3d_j, p.conf_j, p.j, "j")):
                r = X[k] - (pred @ S[e, :3, :3].T + S[e, :3, 3])
                term, area = float((r.norm(dim=-1) * conf.log()).sum().detach()), conf.numel()
                if side == "i":
                    num_i, area_i = num_i + term, area_i + area
                else:
                    num_j, area_j = num_j + term, area_j + area
        assert float(opt.loss().detach()) == pytest.approx(num_i / area_i + num_j / area_j, rel=1e-5)

    def test_optimisation_lowers_the_loss(self):
        # here the official focal quirk (a new view's focal taken from the previous edge's map) leaves the
        # initialisation off; 300 Adam iterations must bring the loss well down
        focals = np.array([30.0, 33.0, 28.0])
        views, preds, _ = _scene([(24, 32)] * 3, focals, seed=1)
        start = align(views, preds, method="dust3r", niter=0)
        scene = align(views, preds, method="dust3r")
        assert scene.info["loss"] < 0.1 * scene.info["init_loss"]
        err_start, err_end = (np.abs(s.K[:, 0, 0] / focals - 1).max() for s in (start, scene))
        assert err_start > 0.1 and err_end < err_start

    def test_view_without_pairs_is_unregistered_and_named(self):
        shapes = [(24, 32)] * 4
        pairs = [(i, j) for i in range(3) for j in range(3) if i != j]  # view 3 takes part in no pair
        views, preds, T_gt = _scene(shapes, [30.0] * 4, n_edges=pairs, seed=2)
        scene = align(views, preds, method="dust3r", niter=0)
        assert scene.registered.tolist() == [True, True, True, False]
        assert scene.info["unregistered"] == ["v3"]
        assert (scene.depth[3] == 0).all() and (scene.conf[3] == 0).all()
        np.testing.assert_array_equal(scene.T_world_cam[3], np.eye(4))
        assert gpc.pose_distance(scene.T_world_cam[:3], T_gt[:3])["rot_deg"] < 0.05

    def test_smaller_group_of_views_is_unregistered_and_named(self):
        # two groups of views that share no pair: the larger one is aligned, the other is left out by name
        pairs = [(i, j) for i in range(3) for j in range(3) if i != j] + [(3, 4), (4, 3)]
        views, preds, T_gt = _scene([(24, 32)] * 5, [30.0] * 5, n_edges=pairs, seed=7)
        scene = align(views, preds, method="dust3r", niter=0)
        assert scene.registered.tolist() == [True, True, True, False, False]
        assert scene.info["unregistered"] == ["v3", "v4"]
        assert gpc.pose_distance(scene.T_world_cam[:3], T_gt[:3])["rot_deg"] < 0.05

    def test_mst_init_refuses_a_disconnected_graph(self):
        views, preds, _ = _scene([(12, 16)] * 4, [15.0] * 4, n_edges=[(0, 1), (1, 0), (2, 3), (3, 2)], seed=8)
        with pytest.raises(AlignmentError, match="does not connect"):
            mst_init(PointCloudOptimizer(_edges(views, preds), Dust3rConfig()))

    def test_views_placed_only_by_pnp(self):
        # a star: view 0 is i of every pair, so the chain sets only its pose; the others come from PnP, with the
        # official focal candidates since no pair gives them a Weiszfeld focal
        shapes = [(24, 32)] * 4
        views, preds, T_gt = _scene(shapes, [30.0] * 4, n_edges=[(0, 1), (0, 2), (0, 3)], seed=3)
        opt = PointCloudOptimizer(_edges(views, preds), Dust3rConfig())
        info = mst_init(opt)
        assert info["init_pose"] == ["chain", "pnp", "pnp", "pnp"]
        candidates = np.geomspace(16, 96, 21)
        for f in opt.focals()[1:].detach().numpy():
            assert np.abs(candidates / f - 1).min() < 1e-5

    def test_pnp_with_a_known_focal_is_exact(self):
        views, preds, T_gt = _scene([(24, 32)] * 2, [30.0] * 2, seed=6)
        p = preds[0]  # (0, 1): view 1's points in camera 0's frame = world frame of camera 0
        focal, T = pnp_ransac(p.pts3d_j, 30.0, torch.ones(24, 32, dtype=torch.bool), niter=10)
        assert focal == 30.0
        T_rel = np.linalg.inv(T_gt[0]) @ T_gt[1]
        T = T.double().numpy()  # camera 1 in camera 0's frame, at the pair's scale
        assert gpc._angle_deg(T[:3, :3].T @ T_rel[:3, :3]) < 0.01
        cos = T[:3, 3] @ T_rel[:3, 3] / np.linalg.norm(T[:3, 3]) / np.linalg.norm(T_rel[:3, 3])
        assert cos > math.cos(math.radians(0.01))
        assert pnp_ransac(p.pts3d_j, 30.0, torch.zeros(24, 32, dtype=torch.bool), niter=10) is None


class TestKnownIntrinsics:
    def test_known_focals_and_principal_point_are_held(self):
        focals = [30.0, 33.0, 28.0]
        views, preds, T_gt = _scene([(24, 32)] * 3, focals, seed=1)
        K2 = np.array([[28.0, 0, 16.0], [0, 28.0, 12.0], [0, 0, 1]])
        priors = Priors(K=[None, None, K2], focal=[30.0, None, None])
        scene = align(views, preds, priors=priors, method="dust3r", niter=50, optimize_pp=True)
        np.testing.assert_allclose(scene.K[[0, 2], 0, 0], [30.0, 28.0], rtol=1e-5)
        np.testing.assert_allclose(scene.K[2, :2, 2], [16.0, 12.0], atol=1e-5)
        np.testing.assert_allclose(scene.K[0, :2, 2], [16.0, 12.0], atol=1e-5)  # a focal alone: centre, held
        assert abs(scene.K[1, 0, 0] / 30.0 - 1) > 1e-4  # the unknown focal is optimised
        assert np.abs(scene.K[1, :2, 2] - [16.0, 12.0]).max() > 1e-4  # and so is its principal point


class TestInputs:
    def test_errors(self):
        views, preds, _ = _scene([(6, 8)] * 2, [8.0] * 2)
        with pytest.raises(AlignmentError, match="at least one pair"):
            dust3r_align(views, [])
        with pytest.raises(AlignmentError, match="known poses"):
            dust3r_align(views, preds, Priors(T_world_cam={0: np.eye(4)}))
        with pytest.raises(AlignmentError, match="shared intrinsics"):
            dust3r_align(views, preds, Priors(shared_intrinsics=True))
        with pytest.raises(AlignmentError, match="positive finite"):
            dust3r_align(views, preds, Priors(focal=[-8.0, None]))
        with pytest.raises(AlignmentError, match="shape"):
            dust3r_align(views[:1] + [View(image=torch.rand(3, 6, 6), idx=1, name="v1")], preds)
        with pytest.raises(TypeError, match="no option"):
            align(views, preds, method="dust3r", lr_max=1.0)
        with pytest.raises(TypeError, match="Dust3rConfig"):
            align(views, preds, method="dust3r", config=object())
        with pytest.raises(TypeError, match="no keyword"):
            align(views, preds, method="dense", niter=3)

    def test_knobs_and_clean_depth_option(self):
        views, preds, _ = _scene([(12, 16)] * 3, [15.0] * 3, seed=4)
        raw = align(views, preds, method="dust3r", niter=5, schedule="cosine")
        scene = align(views, preds, method="dust3r", niter=5, schedule="cosine", clean_depth=True)
        assert scene.info["config"]["schedule"] == "cosine" and scene.info["config"]["niter"] == 5
        for ours, clean in zip(scene.conf, clean_scene_conf(raw), strict=True):
            np.testing.assert_array_equal(ours, clean)
