"""Renderer tests: multi-view geometric consistency, exact depth on analytic shapes, determinism, orientations."""

from __future__ import annotations

import numpy as np
import pytest

from recon.geometry import K_from_focal
from tools.synth import SynthScene, make_scene, render_scene, render_view
from tools.synth.cameras import look_at
from tools.synth.geometry import Box, Cylinder, Quad, Sphere
from tools.synth.texture import NoiseField, random_material


def backproject(view, pix: np.ndarray) -> np.ndarray:
    """World points ``[M, 3]`` of integer pixels ``pix [M, 2]`` (x, y) using the view's depth."""
    z = view.depth[pix[:, 1], pix[:, 0]].astype(np.float64)
    rays = np.concatenate([pix, np.ones((len(pix), 1))], axis=1) @ np.linalg.inv(view.K).T
    pc = rays * z[:, None]
    T = view.T_world_cam
    return pc @ T[:3, :3].T + T[:3, 3]


def project(view, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels ``[M, 2]`` and z-depths ``[M]`` of world points in ``view``."""
    T = view.T_world_cam
    pc = (X - T[:3, 3]) @ T[:3, :3]
    uv = pc @ view.K.T
    return uv[:, :2] / uv[:, 2:], pc[:, 2]


def world_map(view) -> np.ndarray:
    """``[H, W, 3]`` world point seen by every pixel (meaningful where ``mask``)."""
    H, W = view.depth.shape
    ys, xs = np.mgrid[0:H, 0:W]
    return backproject(view, np.stack([xs.ravel(), ys.ravel()], 1)).reshape(H, W, 3)


def cross_view_errors(va, vb):
    """Go from pixels of ``va`` to ``vb`` with ``va``'s depth, read ``vb``'s own surface point there, come back.

    The surface point of ``vb`` at the (sub-pixel) projection is the bilinear interpolation of ``vb``'s per-pixel
    world points, used only where all four neighbours see the same surface (their depth agrees with the
    projected point's z). If depths and cameras agree, the round trip returns to the starting pixel.

    Returns:
        ``(errors [M] in pixels, fraction of va's valid pixels used, (pixels in va [M, 2], rounded pixels in vb))``.
    """
    ys, xs = np.nonzero(va.mask)
    pix = np.stack([xs, ys], axis=1)
    X = backproject(va, pix)
    uv_b, z_b = project(vb, X)
    Hb, Wb = vb.depth.shape
    x0 = np.floor(uv_b).astype(int)
    inside = (z_b > 0) & (x0[:, 0] >= 0) & (x0[:, 0] < Wb - 1) & (x0[:, 1] >= 0) & (x0[:, 1] < Hb - 1)
    x0, uv_b, z_b, pix = x0[inside], uv_b[inside], z_b[inside], pix[inside]
    pts_b = world_map(vb)
    ok = np.ones(len(x0), dtype=bool)
    Y = np.zeros((len(x0), 3))
    w = uv_b - x0
    for dx in (0, 1):
        for dy in (0, 1):
            xx, yy = x0[:, 0] + dx, x0[:, 1] + dy
            d = vb.depth[yy, xx]
            ok &= vb.mask[yy, xx] & (np.abs(d - z_b) < 0.05 * z_b)
            wt = (w[:, 0] if dx else 1 - w[:, 0]) * (w[:, 1] if dy else 1 - w[:, 1])
            Y += wt[:, None] * pts_b[yy, xx]
    uv_a, _ = project(va, Y[ok])
    err = np.linalg.norm(uv_a - pix[ok], axis=1)
    return err, ok.sum() / len(xs), (pix[ok], np.round(uv_b[ok]).astype(int))


@pytest.mark.parametrize("size", [(96, 72), (72, 96)], ids=["landscape", "portrait"])
def test_orbit_views_are_geometrically_consistent(size):
    views = render_scene("orbit", n_views=4, size=size, seed=3, arc_deg=120.0)
    for a, b in [(0, 1), (1, 2), (3, 2)]:
        err, frac_visible, _ = cross_view_errors(views[a], views[b])
        assert frac_visible > 0.3, f"views {a},{b} overlap too little for a consistency check ({frac_visible:.2f})"
        # Bilinear interpolation of a smooth surface's points is exact to second order: far below a pixel
        # (the tail is pixels whose neighbours straddle two surfaces, e.g. where an object meets the floor).
        assert np.mean(err) < 0.1, np.mean(err)
        assert np.percentile(err, 99) < 1.0
    # The check can fail: a camera rolled by 2 degrees about its optical axis breaks the round trip.
    a = np.deg2rad(2.0)
    views[1].T_world_cam[:3, :3] = views[1].T_world_cam[:3, :3] @ np.array(
        [[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]]
    )
    err, _, _ = cross_view_errors(views[0], views[1])
    assert np.mean(err) > 0.3


def test_room_views_are_consistent_and_colours_agree():
    views = render_scene("room_walk", n_views=3, size=(96, 72), seed=1)
    err, frac, (pa, pb) = cross_view_errors(views[0], views[1])
    assert frac > 0.3
    assert np.mean(err) < 0.1
    # Lambertian shading: a surface point has the same colour in both views (up to texture sampling).
    ca = views[0].rgb[pa[:, 1], pa[:, 0]].astype(float)
    cb = views[1].rgb[pb[:, 1], pb[:, 0]].astype(float)
    assert np.median(np.abs(ca - cb)) < 12


def _noise_scene(prims) -> SynthScene:
    rng = np.random.default_rng(0)
    return SynthScene(prims, [random_material(rng, 4.0)], NoiseField(rng))


def test_depth_is_exact_z_on_a_plane_and_ray_distance_on_a_sphere():
    # A camera 2 units above the plane z = 0, looking straight down: z-depth is 2 at every pixel.
    T = look_at([0.3, -0.2, 2.0], [0.3, -0.2, 0.0], up=np.array([0.0, 1.0, 0.0]))
    K = K_from_focal(40.0, (32, 48))
    v = render_view(_noise_scene([Quad(half=(np.inf, np.inf))]), K, T, (48, 32))
    assert v.mask.all()
    np.testing.assert_allclose(v.depth, 2.0, rtol=1e-6)

    # Sphere of radius 0.5 at c: back-projected points lie on it, and the Euclidean distance from the camera
    # centre equals depth * |K^-1 [x, y, 1]| (z-depth vs ray distance).
    c = np.array([0.2, 0.1, 0.4])
    T = look_at([2.0, -1.0, 1.0], c)
    v = render_view(_noise_scene([Sphere(t=c, radius=0.5)]), K, T, (48, 32))
    assert 0.1 < v.mask.mean() < 0.9
    ys, xs = np.nonzero(v.mask)
    pix = np.stack([xs, ys], 1)
    X = backproject(v, pix)
    np.testing.assert_allclose(np.linalg.norm(X - c, axis=1), 0.5, atol=2e-5)
    ray = np.concatenate([pix, np.ones((len(pix), 1))], 1) @ np.linalg.inv(K).T
    dist = np.linalg.norm(X - T[:3, 3], axis=1)
    np.testing.assert_allclose(dist, v.depth[ys, xs] * np.linalg.norm(ray, axis=1), rtol=1e-6)
    assert (v.depth[~v.mask] == 0).all()


@pytest.mark.parametrize(
    "prim, inside",
    [
        (Box(half=np.array([0.3, 0.4, 0.2]), R=look_at([0, 0, 0], [1, 2, 0.5])[:3, :3]), "box"),
        (Cylinder(radius=0.3, half_height=0.4), "cylinder"),
    ],
)
def test_points_lie_on_the_primitive_surface(prim, inside):
    T = look_at([1.5, 1.0, 0.9], [0.0, 0.0, 0.0])
    K = K_from_focal(60.0, (40, 40))
    v = render_view(_noise_scene([prim]), K, T, (40, 40))
    ys, xs = np.nonzero(v.mask)
    X = backproject(v, np.stack([xs, ys], 1))
    p = (X - prim.t) @ prim.R
    if inside == "box":
        dist = np.max(np.abs(p) / prim.half, axis=1)
        np.testing.assert_allclose(dist, 1.0, atol=1e-4)
    else:
        on_side = np.abs(np.hypot(p[:, 0], p[:, 1]) - 0.3) < 1e-4
        on_cap = np.abs(np.abs(p[:, 2]) - 0.4) < 1e-4
        assert (on_side | on_cap).all()


def test_same_seed_same_views_other_seed_other_views():
    a = render_scene("orbit", n_views=2, size=(40, 30), seed=5)
    b = render_scene("orbit", n_views=2, size=(40, 30), seed=5)
    c = render_scene("orbit", n_views=2, size=(40, 30), seed=6)
    for va, vb in zip(a, b, strict=True):
        assert np.array_equal(va.rgb, vb.rgb) and np.array_equal(va.depth, vb.depth)
        assert np.array_equal(va.T_world_cam, vb.T_world_cam) and np.array_equal(va.K, vb.K)
    assert not np.array_equal(a[0].rgb, c[0].rgb)
    assert not np.allclose(a[0].T_world_cam, c[0].T_world_cam)


@pytest.mark.parametrize("layout", ["orbit", "room_walk", "room_set"])
def test_layouts_give_valid_textured_views(layout):
    views = render_scene(layout, n_views=3, size=(64, 48), seed=0)
    assert [v.name for v in views] == ["view_000", "view_001", "view_002"]
    for v in views:
        assert v.rgb.shape == (48, 64, 3) and v.rgb.dtype == np.uint8
        assert v.depth.shape == (48, 64) and v.depth.dtype == np.float32
        assert v.mask.dtype == bool and v.K.dtype == np.float64 and v.T_world_cam.shape == (4, 4)
        np.testing.assert_allclose(v.T_world_cam[:3, :3] @ v.T_world_cam[:3, :3].T, np.eye(3), atol=1e-12)
        np.testing.assert_array_equal(v.T_world_cam[3], [0, 0, 0, 1])
        assert v.mask.mean() > 0.95  # inside a room (or with a room as backdrop): everything is a surface
        assert v.depth[v.mask].min() > 0.2  # no camera inside or touching an object
        # Texture, not flat colour: most 3x3 neighbourhoods vary.
        g = v.rgb.astype(float).mean(-1)
        grad = np.abs(np.diff(g, axis=0))[:, :-1] + np.abs(np.diff(g, axis=1))[:-1]
        assert (grad > 2).mean() > 0.3
    if layout == "orbit":
        # Object-centric: every view sees the objects, and the cameras look at the scene centre.
        assert all(v.fg_mask.mean() > 0.02 for v in views)
    else:
        assert all(np.abs(v.T_world_cam[:2, 3]).max() < 2.9 for v in views)


def test_orbit_camera_options_and_orientations():
    opts = dict(radius_range=(3.0, 3.0), elevation_range_deg=(30.0, 30.0), focal_range=(1.0, 1.0))
    scene, cams = make_scene("orbit", n_views=6, size=(64, 48), seed=2, mixed_orientation=True, **opts)
    sizes = [c.size for c in cams]
    assert sizes.count((64, 48)) == 3 and sizes.count((48, 64)) == 3
    for c in cams:
        assert c.K[0, 0] == pytest.approx(64.0)  # focal = 1.0 x longer side, for both orientations
        np.testing.assert_allclose(c.K[:2, 2], np.array(c.size) / 2)
        eye = c.T_world_cam[:3, 3] - np.array([0.0, 0.0, 0.3])
        assert np.linalg.norm(eye) == pytest.approx(3.0)
        assert np.degrees(np.arcsin(eye[2] / 3.0)) == pytest.approx(30.0)
        # The camera's y axis points down in the world (OpenCV camera, z-up world), up to the small roll.
        assert c.T_world_cam[2, 1] < -0.5
    views = render_scene("orbit", n_views=2, size=(48, 64), seed=2)
    assert views[0].rgb.shape == (64, 48, 3)
    assert views[0].K[0, 2] == 24 and views[0].K[1, 2] == 32


def test_room_walk_moves_forward_and_sideways():
    _, fwd = make_scene("room_walk", n_views=5, size=(64, 48), seed=0, motion="forward")
    _, side = make_scene("room_walk", n_views=5, size=(64, 48), seed=0, motion="sideways")
    for cams, max_angle in ((fwd, 30.0), (side, 180.0)):
        centres = np.array([c.T_world_cam[:3, 3] for c in cams])
        assert np.all(np.diff(centres[:, 1]) > 0)  # moving along +y
        motion = centres[-1] - centres[0]
        z_axis = cams[2].T_world_cam[:3, 2]
        angle = np.degrees(np.arccos(motion @ z_axis / np.linalg.norm(motion)))
        assert angle < max_angle
    z_side = side[2].T_world_cam[:3, 2]
    assert abs(z_side[0]) > 0.7  # looking across the walking direction


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown layout"):
        render_scene("spiral", n_views=2)
    with pytest.raises(TypeError, match="unknown option"):
        render_scene("orbit", n_views=2, size=(32, 24), wobble=3)
    with pytest.raises(ValueError, match="n_views"):
        render_scene("orbit", n_views=0)
    with pytest.raises(ValueError, match="focal_range"):
        render_scene("orbit", n_views=1, size=(32, 24), focal_range=(1.0, 0.5))
    scene, cams = make_scene("orbit", n_views=1, size=(32, 24))
    with pytest.raises(ValueError, match="rotation"):
        render_view(scene, cams[0].K, np.diag([1.0, 1.0, -1.0, 1.0]), (32, 24))
