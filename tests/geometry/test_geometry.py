"""``recon.geometry`` in the kornia style: one class per operation with round trips, batch shapes, hand-computed
values, float32 / float64 and agreement with kornia / roma where they provide the operation."""

import kornia
import numpy as np
import pytest
import roma
import torch

from recon.geometry import (
    K_from_focal,
    average_rotations,
    check_shape,
    co3d_to_opencv,
    focal_bounds,
    invert,
    opencv_to_co3d,
    pixel_grid,
    project,
    resection_dlt,
    transform,
    umeyama,
    unproject,
    unproject_points,
    weiszfeld_focal,
)

# Relative tolerance per dtype for recomputed values.
TOL = {np.float32: 1e-5, np.float64: 1e-10}
DTYPES = [np.float32, np.float64]

# A skewed camera for the full-K paths, and a skew-free one for the kornia comparisons.
K_SKEW = np.array([[110.0, 3.0, 33.0], [0.0, 95.0, 21.0], [0.0, 0.0, 1.0]])
K_PLAIN = np.array([[110.0, 0.0, 33.0], [0.0, 95.0, 21.0], [0.0, 0.0, 1.0]])


def _rotation(rng) -> np.ndarray:
    return roma.random_rotmat(dtype=torch.float64, generator=torch.Generator().manual_seed(int(rng.integers(1 << 30))))


def _pose(rng, scale: float = 1.0) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = scale * _rotation(rng).numpy()
    T[:3, 3] = rng.standard_normal(3)
    return T


class TestCheckShape:
    def test_accepts(self):
        check_shape(np.zeros((2, 5, 3, 3)), "... 3 3", "K")
        check_shape(np.zeros((3, 3)), "... 3 3", "K")
        check_shape(np.zeros((4, 4, 7)), "H H C", "x")

    @pytest.mark.parametrize(
        ("shape", "spec"), [((3, 4), "... 3 3"), ((3,), "3 3"), ((2, 3, 3), "3 3"), ((4, 5), "H H")]
    )
    def test_rejects_with_both_shapes_in_the_message(self, shape, spec):
        with pytest.raises(ValueError, match=r"K must have shape \[.*\], got \[" + ", ".join(map(str, shape))):
            check_shape(np.zeros(shape), spec, "K")


class TestPixelGrid:
    def test_hand_value(self):
        g = pixel_grid(2, 3)
        assert g.shape == (2, 3, 2) and g.dtype == np.float64
        np.testing.assert_array_equal(g[1, 2], [2.0, 1.0])  # (x, y) of row 1, column 2
        np.testing.assert_array_equal(pixel_grid(2, 3, homogeneous=True)[1, 2], [2.0, 1.0, 1.0])

    @pytest.mark.parametrize("dtype", DTYPES)
    def test_dtype_and_kornia(self, dtype):
        g = pixel_grid(4, 5, dtype=dtype)
        assert g.dtype == dtype
        k = kornia.geometry.create_meshgrid(4, 5, normalized_coordinates=False, dtype=torch.float64)[0]
        np.testing.assert_array_equal(g, k.numpy())


class TestUnproject:
    def test_hand_value_with_skew(self):
        depth = np.full((2, 2), 2.0)
        # pixel (x=1, y=1): y_n = (1 - 21) / 95, x_n = (1 - 33 - 3 y_n) / 110, times z = 2
        yn = (1 - 21) / 95
        xn = (1 - 33 - 3 * yn) / 110
        np.testing.assert_allclose(unproject(depth, K_SKEW)[1, 1], [2 * xn, 2 * yn, 2.0], rtol=1e-12)

    @pytest.mark.parametrize("dtype", DTYPES)
    def test_round_trip_project(self, dtype):
        rng = np.random.default_rng(0)
        depth = rng.uniform(1, 5, (6, 7)).astype(dtype)
        X = unproject(depth, K_SKEW.astype(dtype))
        assert X.shape == (6, 7, 3) and X.dtype == dtype
        np.testing.assert_allclose(project(X, K_SKEW.astype(dtype)), pixel_grid(6, 7), rtol=TOL[dtype], atol=TOL[dtype])
        np.testing.assert_allclose(X[..., 2], depth, rtol=TOL[dtype])

    def test_batch_equals_loop(self):
        rng = np.random.default_rng(1)
        depth = rng.uniform(1, 5, (2, 3, 4, 5))
        K = np.stack([K_SKEW, K_PLAIN, K_SKEW * [[2], [2], [1]]])  # [3, 3, 3] broadcasts against [2, 3]
        X = unproject(depth, K)
        assert X.shape == (2, 3, 4, 5, 3)
        for a in range(2):
            for b in range(3):
                np.testing.assert_allclose(X[a, b], unproject(depth[a, b], K[b]), rtol=1e-12)

    def test_agrees_with_kornia_without_skew(self):
        rng = np.random.default_rng(2)
        depth = rng.uniform(1, 5, (6, 7))
        ref = kornia.geometry.depth.depth_to_3d_v2(torch.from_numpy(depth), torch.from_numpy(K_PLAIN)[None])[0]
        np.testing.assert_allclose(unproject(depth, K_PLAIN), ref.numpy(), rtol=1e-12)

    def test_bad_shapes(self):
        with pytest.raises(ValueError, match="K must have shape"):
            unproject(np.ones((4, 4)), np.eye(4))
        with pytest.raises(ValueError, match="depth must have shape"):
            unproject(np.ones(4), np.eye(3))


class TestUnprojectPoints:
    @pytest.mark.parametrize("dtype", DTYPES)
    def test_round_trip_and_map_agreement(self, dtype):
        rng = np.random.default_rng(3)
        xy = rng.uniform(0, 40, (10, 2)).astype(dtype)
        z = rng.uniform(1, 3, 10).astype(dtype)
        X = unproject_points(xy, z, K_SKEW.astype(dtype))
        assert X.shape == (10, 3) and X.dtype == dtype
        np.testing.assert_allclose(project(X, K_SKEW), xy, rtol=TOL[dtype], atol=10 * TOL[dtype])
        depth = rng.uniform(1, 3, (4, 5))
        grid = pixel_grid(4, 5)
        np.testing.assert_allclose(unproject_points(grid, depth, K_SKEW), unproject(depth, K_SKEW), rtol=1e-12)

    def test_batch_and_kornia(self):
        rng = np.random.default_rng(4)
        xy, z = rng.uniform(0, 40, (2, 5, 2)), rng.uniform(1, 3, (2, 5))
        K = np.stack([K_PLAIN, 2 * K_PLAIN - np.diag([0, 0, 1.0])])
        X = unproject_points(xy, z, K)
        for b in range(2):
            np.testing.assert_allclose(X[b], unproject_points(xy[b], z[b], K[b]), rtol=1e-12)
        ref = kornia.geometry.camera.unproject_points(
            torch.from_numpy(xy), torch.from_numpy(z)[..., None], torch.from_numpy(K)[:, None]
        )
        np.testing.assert_allclose(X, ref.numpy(), rtol=1e-12)

    def test_bad_z(self):
        with pytest.raises(ValueError, match="z must have shape"):
            unproject_points(np.zeros((4, 2)), np.zeros(5), np.eye(3))


class TestProject:
    def test_hand_value_with_skew(self):
        # (x, y, z) = (1, 2, 4): (110 * 1 / 4 + 3 * 2 / 4 + 33, 95 * 2 / 4 + 21) = (62, 68.5)
        np.testing.assert_allclose(project(np.array([1.0, 2.0, 4.0]), K_SKEW), [62.0, 68.5])

    @pytest.mark.parametrize("dtype", DTYPES)
    def test_dtype_and_kornia(self, dtype):
        rng = np.random.default_rng(5)
        X = np.c_[rng.standard_normal((8, 2)), rng.uniform(1, 4, 8)].astype(dtype)
        uv = project(X, K_PLAIN)
        assert uv.shape == (8, 2) and uv.dtype == np.float64  # K is float64: the result follows it
        assert project(X, K_PLAIN.astype(dtype)).dtype == dtype
        ref = kornia.geometry.camera.project_points(torch.from_numpy(X.astype(np.float64)), torch.from_numpy(K_PLAIN))
        np.testing.assert_allclose(uv, ref.numpy(), rtol=1e-12)

    def test_batch_equals_loop(self):
        rng = np.random.default_rng(6)
        X = np.c_[rng.standard_normal((6, 2)), rng.uniform(1, 4, 6)].reshape(2, 3, 3)
        K = np.stack([K_SKEW, K_PLAIN])
        uv = project(X, K)
        assert uv.shape == (2, 3, 2)
        for b in range(2):
            np.testing.assert_allclose(uv[b], project(X[b], K[b]), rtol=1e-12)
        with pytest.raises(ValueError, match="pairs with points"):
            project(X, np.stack([K_SKEW] * 3))


class TestTransform:
    def test_hand_value(self):
        T = np.eye(4)
        T[:3, :3] = [[0, -1, 0], [1, 0, 0], [0, 0, 1]]  # 90° about z
        T[:3, 3] = [1, 2, 3]
        np.testing.assert_allclose(transform(T, np.array([1.0, 0, 0])), [1, 3, 3])

    @pytest.mark.parametrize("dtype", DTYPES)
    def test_batch_dtype_and_kornia(self, dtype):
        rng = np.random.default_rng(7)
        T = np.stack([_pose(rng), _pose(rng, 2.0)]).astype(dtype)
        X = rng.standard_normal((2, 4, 5, 3)).astype(dtype)
        Y = transform(T, X)
        assert Y.shape == X.shape and Y.dtype == dtype
        ref = kornia.geometry.linalg.transform_points(torch.from_numpy(T), torch.from_numpy(X.reshape(2, -1, 3)))
        np.testing.assert_allclose(Y.reshape(2, -1, 3), ref.numpy(), rtol=TOL[dtype], atol=TOL[dtype])


class TestInvert:
    @pytest.mark.parametrize("dtype", DTYPES)
    @pytest.mark.parametrize("scale", [1.0, 2.5])
    def test_round_trip(self, dtype, scale):
        rng = np.random.default_rng(8)
        T = np.stack([_pose(rng, scale) for _ in range(3)]).astype(dtype)
        Ti = invert(T)
        assert Ti.shape == (3, 4, 4) and Ti.dtype == dtype
        np.testing.assert_allclose(Ti @ T, np.broadcast_to(np.eye(4), T.shape), atol=10 * TOL[dtype])
        X = rng.standard_normal((3, 6, 3))
        np.testing.assert_allclose(transform(Ti, transform(T, X)), X, atol=100 * TOL[dtype])

    def test_hand_value(self):
        T = np.eye(4)
        T[:3, 3] = [1, 2, 3]
        np.testing.assert_allclose(invert(T)[:3, 3], [-1, -2, -3])


class TestKFromFocal:
    def test_hand_value(self):
        np.testing.assert_array_equal(K_from_focal(100.0, (48, 64)), [[100, 0, 32], [0, 100, 24], [0, 0, 1]])

    def test_batch_and_round_trip(self):
        K = K_from_focal(np.array([[50.0, 60.0]]), (10, 20))
        assert K.shape == (1, 2, 3, 3) and K.dtype == np.float64
        np.testing.assert_array_equal(K[0, 1], K_from_focal(60.0, (10, 20)))
        pts = unproject(np.full((10, 20), 3.0), K[0, 1])
        assert weiszfeld_focal(pts) == pytest.approx(60.0, rel=1e-12)

    def test_bad_shape(self):
        with pytest.raises(ValueError, match=r"\(H, W\)"):
            K_from_focal(1.0, (1, 2, 3))


class TestWeiszfeldFocal:
    def _pointmap(self, f=40.0, dtype=np.float64):
        H, W = 24, 32
        y, x = np.mgrid[0:H, 0:W].astype(float)
        z = 2 + np.sin(x / 5)
        return unproject(z, np.array([[f, 0, 15.5], [0, f, 11.5], [0, 0, 1]])).astype(dtype)

    @pytest.mark.parametrize("dtype", DTYPES)
    def test_exact(self, dtype):
        assert weiszfeld_focal(self._pointmap(dtype=dtype), (15.5, 11.5)) == pytest.approx(40.0, rel=10 * TOL[dtype])

    def test_robust_to_outliers_and_weights(self):
        pts = self._pointmap()
        pts[:20, :5, 0] *= 3  # gross outliers: the L1 estimator barely moves
        assert weiszfeld_focal(pts, (15.5, 11.5)) == pytest.approx(40.0, rel=1e-2)
        w = np.ones(pts.shape[:2])
        w[:20, :5] = 0  # masked out: exact again
        assert weiszfeld_focal(pts, (15.5, 11.5), w) == pytest.approx(40.0, rel=1e-9)

    def test_default_pp_is_centre_and_nan_behind(self):
        pts = unproject(np.full((10, 16), 2.0), K_from_focal(30.0, (10, 16)))
        assert weiszfeld_focal(pts) == pytest.approx(30.0, rel=1e-12)
        assert np.isnan(weiszfeld_focal(-pts))
        with pytest.raises(ValueError, match="weights must have shape"):
            weiszfeld_focal(pts, weights=np.ones((3, 3)))

    def test_bounds_hand_value(self):
        lo, hi, base = focal_bounds((30, 40))
        assert base == pytest.approx(40 / (2 * np.tan(np.radians(30))))
        assert (lo, hi) == pytest.approx((0.5 * base, 3.5 * base))


class TestUmeyama:
    def test_recovers_similarity_and_agrees_with_closed_form(self):
        rng = np.random.default_rng(0)
        X = rng.standard_normal((50, 3))
        R, s, t = _rotation(rng).numpy(), 2.5, np.array([1.0, -2.0, 0.5])
        s2, R2, t2 = umeyama(X, s * X @ R.T + t, rng.uniform(0.5, 1, 50))
        assert s2 == pytest.approx(s, rel=1e-10)
        np.testing.assert_allclose(R2, R, atol=1e-10)
        np.testing.assert_allclose(t2, t, atol=1e-10)
        assert R2.dtype == np.float64

    def test_weights_ignore_outliers(self):
        rng = np.random.default_rng(1)
        X = rng.standard_normal((40, 3))
        Y = X.copy()
        Y[:5] += 10.0
        s, R, t = umeyama(X, Y, np.r_[np.zeros(5), np.ones(35)])
        np.testing.assert_allclose([s, *t], [1, 0, 0, 0], atol=1e-10)

    def test_reflection_gives_a_rotation(self):
        rng = np.random.default_rng(2)
        X = rng.standard_normal((20, 3))
        _, R, _ = umeyama(X, X * [1, 1, -1])
        assert np.linalg.det(R) == pytest.approx(1.0)

    def test_float32_input_and_errors(self):
        X = np.random.default_rng(3).standard_normal((10, 3)).astype(np.float32)
        s, R, t = umeyama(X, 2 * X, with_scale=True)
        assert s == pytest.approx(2.0, rel=1e-6)
        assert umeyama(X, 3 * X, with_scale=False)[0] == 1.0
        with pytest.raises(ValueError, match="at least 3"):
            umeyama(np.eye(3), np.eye(3), np.array([1.0, 0, 0]))
        with pytest.raises(ValueError, match=r"\[P,3\]"):
            umeyama(np.zeros((4, 2)), np.zeros((4, 2)))


class TestAverageRotations:
    def test_symmetric_perturbations_average_out(self):
        R = _rotation(np.random.default_rng(3)).numpy()
        small = roma.rotvec_to_rotmat(torch.tensor([[0.01, 0, 0], [-0.01, 0, 0]], dtype=torch.float64)).numpy()
        np.testing.assert_allclose(average_rotations(small @ R), R, atol=1e-12)

    def test_bad_shape(self):
        with pytest.raises(ValueError, match="Rs must have shape"):
            average_rotations(np.eye(3))


class TestResectionDLT:
    def test_recovers_camera(self):
        rng = np.random.default_rng(2)
        R = _rotation(rng).numpy()
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = R, [0.3, -0.2, -4.0]
        K = K_from_focal(300.0, (96, 128))
        Xc = np.c_[rng.uniform(-1, 1, (100, 2)), rng.uniform(3, 6, 100)]
        K2, T2 = resection_dlt(transform(T, Xc), project(Xc, K))
        np.testing.assert_allclose(K2, K, rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(T2, T, atol=1e-7)

    def test_too_few(self):
        with pytest.raises(ValueError, match="at least 6"):
            resection_dlt(np.zeros((5, 3)), np.zeros((5, 2)))


class TestCo3d:
    def test_hand_value(self):
        # Identity PyTorch3D camera: the OpenCV camera is flipped in x and y; isotropic NDC on a 40x60 image, s = 20.
        T_wc, K = co3d_to_opencv(np.eye(3), np.zeros(3), [2.0, 2.0], [0.5, -0.25], (40, 60))
        np.testing.assert_allclose(T_wc[:3, :3], np.diag([-1.0, -1.0, 1.0]))
        np.testing.assert_allclose(K, [[40, 0, 30 - 10], [0, 40, 20 + 5], [0, 0, 1]])
        _, K_legacy = co3d_to_opencv(
            np.eye(3), np.zeros(3), [2.0, 2.0], [0.5, -0.25], (40, 60), "ndc_norm_image_bounds"
        )
        np.testing.assert_allclose(K_legacy, [[60, 0, 30 - 15], [0, 40, 20 + 5], [0, 0, 1]])

    @pytest.mark.parametrize("fmt", ["ndc_isotropic", "ndc_norm_image_bounds"])
    @pytest.mark.parametrize("shape_hw", [(48, 64), (64, 48)])
    def test_round_trips(self, fmt, shape_hw):
        rng = np.random.default_rng(4)
        R, T = _rotation(rng).numpy(), rng.standard_normal(3)
        f, p = rng.uniform(1, 3, 2), rng.uniform(-0.2, 0.2, 2)
        T_wc, K = co3d_to_opencv(R, T, f, p, shape_hw, fmt)
        for a, b in zip(opencv_to_co3d(T_wc, K, shape_hw, fmt), (R, T, f, p), strict=True):
            np.testing.assert_allclose(a, b, atol=1e-12)
        T_wc2, K2 = co3d_to_opencv(*opencv_to_co3d(T_wc, K, shape_hw, fmt), shape_hw, fmt)
        np.testing.assert_allclose(T_wc2, T_wc, atol=1e-12)
        np.testing.assert_allclose(K2, K, atol=1e-12)

    def test_projection_agrees_with_the_pytorch3d_convention(self):
        # A world point projects to the same pixel through both cameras: PyTorch3D's row-vector camera in NDC
        # (+X left, +Y up, pixel = centre - ndc * s) and the converted OpenCV camera.
        rng = np.random.default_rng(5)
        R, T = _rotation(rng).numpy(), np.array([0.1, -0.2, 5.0])
        f, p, (H, W) = np.array([1.8, 1.7]), np.array([0.05, -0.1]), (40, 60)
        Xw = rng.standard_normal((10, 3))
        Xc = Xw @ R + T
        s = min(H, W) / 2
        ndc = f * Xc[:, :2] / Xc[:, 2:] + p
        uv_p3d = np.array([W / 2, H / 2]) - ndc * s
        T_wc, K = co3d_to_opencv(R, T, f, p, (H, W))
        np.testing.assert_allclose(project(transform(invert(T_wc), Xw), K), uv_p3d, atol=1e-9)

    def test_errors(self):
        with pytest.raises(ValueError, match="intrinsics_format"):
            co3d_to_opencv(np.eye(3), np.zeros(3), [1, 1], [0, 0], (4, 4), "screen")
        with pytest.raises(ValueError, match="wrong shapes"):
            co3d_to_opencv(np.eye(3), np.zeros(2), [1, 1], [0, 0], (4, 4))
        with pytest.raises(ValueError, match="positive"):
            co3d_to_opencv(np.eye(3), np.zeros(3), [1, 1], [0, 0], (0, 4))
        with pytest.raises(ValueError, match="skew"):
            opencv_to_co3d(np.eye(4), K_SKEW, (4, 4))
