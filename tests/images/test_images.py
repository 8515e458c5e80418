"""Image loading: official geometry, formats and modes, EXIF orientation and focal, net_to_orig, bad inputs."""

import io
import logging
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from fixture_files import require_extra
from PIL import Image, ImageOps
from PIL.JpegImagePlugin import JpegImageFile

from recon.images import (
    ImageLoadError,
    Skipped,
    exif_focal_px,
    load_images,
    natural_key,
    require_views,
    target_geometry,
)

PHOTOS = Path(__file__).resolve().parents[3] / "shared" / "photos"


def gradient(W, H, seed=0):
    """``[H, W, 3]`` uint8 image with smooth structure and a little texture (no two rows or columns equal)."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    rng = np.random.default_rng(seed)
    img = np.stack([x / W * 200 + 20, y / H * 200 + 20, (x + y) / (W + H) * 100 + 80], -1)
    return np.clip(img + rng.normal(0, 4, img.shape), 0, 255).astype(np.uint8)


def save(path, array_or_image, **kw):
    img = Image.fromarray(array_or_image) if isinstance(array_or_image, np.ndarray) else array_or_image
    img.save(path, **kw)
    return path


def official_reference(path, size, patch_size=16, square_ok=False):
    """The official preprocessing as documented in reference/mast3r.md §4, written out step by step."""
    img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    W1, H1 = img.size
    long_edge = round(size * max(W1 / H1, H1 / W1)) if size == 224 else size
    S = max(img.size)
    interp = Image.Resampling.LANCZOS if S > long_edge else Image.Resampling.BICUBIC
    img = img.resize(tuple(int(round(x * long_edge / S)) for x in img.size), interp)
    W, H = img.size
    cx, cy = W // 2, H // 2
    if size == 224:
        half = min(cx, cy)
        img = img.crop((cx - half, cy - half, cx + half, cy + half))
    else:
        halfw, halfh = ((2 * cx) // patch_size) * patch_size / 2, ((2 * cy) // patch_size) * patch_size / 2
        if not square_ok and W == H:
            halfh = 3 * halfw / 4
        img = img.crop((cx - halfw, cy - halfh, cx + halfw, cy + halfh))
    return np.asarray(img)


def as_uint8(view):
    return (view.image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def load_one(path, **kw):
    views, skipped = load_images([path], **kw)
    assert not skipped, skipped
    assert len(views) == 1
    return views[0]


class TestGeometry:
    @pytest.mark.parametrize(
        ("W0", "H0", "square_ok", "out"),
        [  # "verified outputs" of the official loader, reference/mast3r.md §4
            (1000, 750, False, (512, 384)),
            (640, 640, False, (512, 384)),
            (640, 640, True, (512, 512)),
            (300, 200, False, (512, 336)),
            (750, 1000, False, (384, 512)),
            (1920, 1080, False, (512, 288)),
        ],
    )
    def test_official_sizes(self, tmp_path, W0, H0, square_ok, out):
        (W, H), box = target_geometry(W0, H0, 512, 16, square_ok)
        assert (box[2] - box[0], box[3] - box[1]) == out
        view = load_one(save(tmp_path / "a.png", Image.new("RGB", (W0, H0), COLOUR)), square_ok=square_ok)
        assert view.true_shape == (out[1], out[0])
        assert view.orig_size == (H0, W0)

    @pytest.mark.parametrize(
        ("W0", "H0", "size", "patch", "square_ok"),
        [
            (200, 150, 64, 16, False),  # landscape, shrink (LANCZOS)
            (150, 200, 64, 16, False),  # portrait
            (90, 90, 64, 16, False),  # square -> 4:3
            (90, 90, 64, 16, True),
            (48, 36, 64, 16, False),  # enlarged (BICUBIC)
            (123, 77, 70, 14, False),  # patch 14 backbone
            (300, 200, 224, 16, False),  # the 224 square mode
        ],
    )
    def test_pixels_equal_official_preprocessing(self, tmp_path, W0, H0, size, patch, square_ok):
        path = save(tmp_path / "a.png", gradient(W0, H0))
        view = load_one(path, size=size, patch_size=patch, square_ok=square_ok, draft=False)
        ref = official_reference(path, size, patch, square_ok)
        assert view.image.dtype == torch.float32 and view.image.shape[0] == 3
        assert view.true_shape[0] % patch == 0 and view.true_shape[1] % patch == 0
        np.testing.assert_array_equal(as_uint8(view), ref)
        assert 0.0 <= view.image.min() and view.image.max() <= 1.0

    def test_square_patch14_height_is_a_multiple(self):
        # official 3/4 of 518 = 388.5 px high, not a multiple of 14: we floor to 378
        (W, H), box = target_geometry(700, 700, 518, 14, False)
        assert (box[2] - box[0], box[3] - box[1]) == (518, 378)

    @pytest.mark.parametrize(
        ("W0", "H0", "kw"),
        [
            (300, 200, {}),  # enlarged
            (1000, 750, {}),
            (750, 1000, {}),
            (640, 640, {}),  # square cropped to 4:3
            (641, 479, {"size": 224}),
            (333, 251, {"size": 518, "patch_size": 14}),
        ],
    )
    def test_net_to_orig_hits_the_marked_pixel(self, tmp_path, W0, H0, kw):
        # a smooth blob at a known original position; its centroid in the network image maps back onto it
        cx, cy = 0.55 * W0 + 0.3, 0.4 * H0 - 0.2
        y, x = np.mgrid[0:H0, 0:W0]
        sigma = max(W0, H0) / 40
        blob = np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2))
        img = np.repeat((blob * 255).round().astype(np.uint8)[..., None], 3, -1)
        view = load_one(save(tmp_path / "a.png", img), **kw)
        w = view.image[0].double().numpy()
        w = np.where(w > 0.05, w, 0)
        yy, xx = np.mgrid[0 : w.shape[0], 0 : w.shape[1]]
        centroid = np.array([(w * xx).sum() / w.sum(), (w * yy).sum() / w.sum(), 1.0])
        mapped = view.net_to_orig @ centroid
        scale = max(W0, H0) / max(view.true_shape)
        assert abs(mapped[0] - cx) < 0.25 * scale + 0.2 and abs(mapped[1] - cy) < 0.25 * scale + 0.2
        assert view.net_to_orig.dtype == np.float64 and view.net_to_orig.shape == (3, 3)


def dihedral(a):
    """The 8 flips/rotations of an image array."""
    outs = []
    for k in range(4):
        r = np.rot90(a, k)
        outs += [r, r[:, ::-1]]
    return outs


# EXIF 2.3 orientation: how to display the stored pixels (numpy, independent of PIL's table)
DISPLAY = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],  # mirror horizontal
    3: lambda a: np.rot90(a, 2),  # rotate 180
    4: lambda a: a[::-1],  # mirror vertical
    5: lambda a: np.rot90(a[:, ::-1], 1),  # mirror horizontal, rotate 270 CW
    6: lambda a: np.rot90(a, -1),  # rotate 90 CW
    7: lambda a: np.rot90(a[:, ::-1], -1),  # mirror horizontal, rotate 90 CW
    8: lambda a: np.rot90(a, 1),  # rotate 270 CW
}
QUADRANTS = {(0, 0): (230, 30, 30), (0, 1): (30, 230, 30), (1, 0): (30, 30, 230), (1, 1): (240, 240, 240)}


def quadrant_pattern(W=96, H=64):
    a = np.zeros((H, W, 3), np.uint8)
    for (r, c), colour in QUADRANTS.items():
        a[r * H // 2 : (r + 1) * H // 2, c * W // 2 : (c + 1) * W // 2] = colour
    return a


class TestExif:
    @pytest.mark.parametrize("orientation", range(1, 9))
    @pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
    def test_orientation(self, tmp_path, orientation, fmt):
        upright = quadrant_pattern()
        raw = next(r for r in dihedral(upright) if np.array_equal(DISPLAY[orientation](r), upright))
        exif = Image.Exif()
        exif[0x0112] = orientation
        kw = {"quality": 95} if fmt == "JPEG" else {}
        path = save(tmp_path / f"o{orientation}.{fmt.lower()}", np.ascontiguousarray(raw), exif=exif, **kw)
        view = load_one(path, size=96)
        assert view.orig_size == (64, 96) and view.true_shape == (64, 96)
        img = as_uint8(view).astype(int)
        for (r, c), colour in QUADRANTS.items():
            patch = img[r * 32 + 8 : r * 32 + 24, c * 48 + 12 : c * 48 + 36]
            assert np.abs(patch.mean((0, 1)) - colour).max() < 12, (orientation, (r, c))

    def test_focal_35mm(self, tmp_path):
        exif = Image.Exif()
        exif[0x0112] = 6
        exif.get_ifd(0x8769)[0xA405] = 28
        view = load_one(save(tmp_path / "f.jpg", gradient(400, 300), exif=exif))
        assert view.orig_size == (400, 300)  # portrait after orientation
        assert view.focal_exif == pytest.approx(28 * 500 / math.hypot(36, 24), rel=1e-9)

    def test_focal_plane_resolution(self, tmp_path):
        exif = Image.Exif()
        ifd = exif.get_ifd(0x8769)
        ifd[0x920A] = 4.25  # mm
        ifd[0xA20E] = 1000.0  # pixels per cm on the sensor
        ifd[0xA210] = 3  # cm
        ifd[0xA002] = 800  # recorded width; the file was then resized to 400
        view = load_one(save(tmp_path / "f.jpg", gradient(400, 300), exif=exif))
        assert view.focal_exif == pytest.approx(4.25 * 100 * 400 / 800, rel=1e-9)

    def test_no_or_implausible_focal(self, tmp_path):
        assert load_one(save(tmp_path / "a.jpg", gradient(400, 300))).focal_exif is None
        exif = Image.Exif()
        exif.get_ifd(0x8769)[0xA405] = 5000  # 5 m lens in 35 mm terms: 115x the long side
        assert load_one(save(tmp_path / "b.jpg", gradient(400, 300), exif=exif)).focal_exif is None
        f, why = exif_focal_px(exif, (400, 300))
        assert f is None and "implausible" in why


def _cv2_png16(path, rgb16):
    cv2 = require_extra("cv2")
    assert cv2.imwrite(str(path), np.ascontiguousarray(rgb16[..., ::-1]))
    return path


COLOUR = (200, 120, 40)
FORMATS = {
    # name: (writer(tmp_path) -> path, expected mean RGB in 0..255)
    "jpeg_rgb": (lambda d: save(d / "a.jpg", Image.new("RGB", (80, 60), COLOUR), quality=95), COLOUR),
    "jpeg_gray": (lambda d: save(d / "a.jpg", Image.new("L", (80, 60), 90)), (90, 90, 90)),
    "jpeg_cmyk": (lambda d: save(d / "a.jpg", Image.new("CMYK", (80, 60), (0, 0, 0, 0))), (255, 255, 255)),
    "png_rgb": (lambda d: save(d / "a.png", Image.new("RGB", (80, 60), COLOUR)), COLOUR),
    "png_rgba": (lambda d: save(d / "a.png", Image.new("RGBA", (80, 60), (*COLOUR, 128))), COLOUR),
    "png_gray": (lambda d: save(d / "a.png", Image.new("L", (80, 60), 90)), (90, 90, 90)),
    "png_gray_alpha": (lambda d: save(d / "a.png", Image.new("LA", (80, 60), (90, 10))), (90, 90, 90)),
    "png_bilevel": (lambda d: save(d / "a.png", Image.new("1", (80, 60), 1)), (255, 255, 255)),
    "png_palette": (lambda d: save(d / "a.png", Image.new("RGB", (80, 60), COLOUR).quantize(4)), COLOUR),
    "png_palette_transparency": (
        lambda d: save(d / "a.png", Image.new("RGB", (80, 60), COLOUR).quantize(4), transparency=0),
        COLOUR,
    ),
    "png16_gray": (
        lambda d: save(d / "a.png", Image.fromarray(np.full((60, 80), 40000, np.uint16))),
        (40000 / 257,) * 3,
    ),
    "png16_rgb": (
        lambda d: _cv2_png16(d / "a.png", np.full((60, 80, 3), [c * 257 for c in COLOUR], np.uint16)),
        COLOUR,
    ),
    "webp": (lambda d: save(d / "a.webp", Image.new("RGB", (80, 60), COLOUR), lossless=True), COLOUR),
    "tiff": (lambda d: save(d / "a.tif", Image.new("RGB", (80, 60), COLOUR)), COLOUR),
    "tiff16_gray": (
        lambda d: save(d / "a.tiff", Image.fromarray(np.full((60, 80), 20000, np.uint16))),
        (20000 / 257,) * 3,
    ),
    "tiff_float": (lambda d: save(d / "a.tif", Image.fromarray(np.full((60, 80), 0.5, np.float32))), (127.5,) * 3),
    "bmp": (lambda d: save(d / "a.bmp", Image.new("RGB", (80, 60), COLOUR)), COLOUR),
    "gif": (lambda d: save(d / "a.gif", Image.new("RGB", (80, 60), COLOUR)), COLOUR),
}


class TestFormats:
    @pytest.mark.parametrize("name", sorted(FORMATS))
    def test_format(self, tmp_path, name):
        writer, expected = FORMATS[name]
        view = load_one(writer(tmp_path), size=64)
        assert view.image.shape == (3, 48, 64) and view.image.dtype == torch.float32
        mean = view.image.mean((1, 2)).numpy() * 255
        np.testing.assert_allclose(mean, expected, rtol=0, atol=3)

    def test_heic(self, tmp_path):
        pillow_heif = require_extra("pillow_heif")
        path = tmp_path / "a.heic"
        pillow_heif.from_pillow(Image.new("RGB", (80, 60), COLOUR)).save(path, quality=95)
        view = load_one(path, size=64)
        np.testing.assert_allclose(view.image.mean((1, 2)).numpy() * 255, COLOUR, rtol=0, atol=4)

    def test_heic_without_pillow_heif_is_reported(self, tmp_path, monkeypatch):
        path = tmp_path / "a.heic"
        path.write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64))
        monkeypatch.setattr("recon.images._register_heif", lambda: False)
        views, skipped = load_images([path])
        assert not views and "pip install pillow-heif" in skipped[0].reason


@pytest.fixture(scope="module")
def huge_jpeg(tmp_path_factory):
    path = tmp_path_factory.mktemp("huge") / "huge.jpg"
    img = Image.new("RGB", (12000, 9000), (40, 60, 80))
    img.paste((250, 250, 250), (7000, 2000, 7600, 2600))  # a bright square, centre (7300, 2300)
    img.save(path, quality=60)
    return path


class TestLargeImages:
    def test_12000x9000_loads_with_draft(self, huge_jpeg):
        view = load_one(huge_jpeg)
        assert view.orig_size == (9000, 12000) and view.true_shape == (384, 512)
        w = (view.image.mean(0) > 0.6).double().numpy()
        yy, xx = np.nonzero(w)
        centre = view.net_to_orig @ np.array([xx.mean(), yy.mean(), 1.0])
        assert abs(centre[0] - 7299.5) < 12 and abs(centre[1] - 2299.5) < 12  # one network pixel is 23.4 px

    def test_pixel_limit_is_configurable_and_reported(self, huge_jpeg):
        views, skipped = load_images([huge_jpeg], max_pixels=50_000_000)
        assert not views and "max_pixels" in skipped[0].reason and "108 Mpx" in skipped[0].reason
        # far above the limit (where PIL's own guard would raise): the same clear report
        views, skipped = load_images([huge_jpeg], max_pixels=10_000_000)
        assert not views and "max_pixels = 10 Mpx" in skipped[0].reason
        assert Image.MAX_IMAGE_PIXELS == int(1024 * 1024 * 1024 // 4 // 3), "PIL's global limit is restored"

    @staticmethod
    def waves(W, H):
        """Sinusoids with a 37-41 px period: misplacing the resampling box by one drafted pixel (4-8 px) shows."""
        y, x = np.mgrid[0:H, 0:W]
        v = 127 + 100 * np.sin(2 * np.pi * x / 37) * np.sin(2 * np.pi * y / 41)
        return np.repeat(v.round().astype(np.uint8)[..., None], 3, -1)

    @pytest.mark.parametrize(("fmt", "orientation"), [("jpg", 1), ("jpg", 3), ("jpg", 6), ("jpg", 7), ("png", 1)])
    def test_draft_matches_full_decode(self, tmp_path, monkeypatch, fmt, orientation):
        # 1301x1029 is over 4x the 128 px target either way round, so the JPEG is drafted and the PNG reduced;
        # orientations 3, 6, 7 move the drafted partial edge pixel to the top or left
        exif = Image.Exif()
        exif[0x0112] = orientation
        kw = {"quality": 95} if fmt == "jpg" else {}
        path = save(tmp_path / f"a.{fmt}", self.waves(1301, 1029), exif=exif, **kw)
        calls = []
        monkeypatch.setattr(JpegImageFile, "draft", _spy(JpegImageFile.draft, calls))
        monkeypatch.setattr(Image.Image, "reduce", _spy(Image.Image.reduce, calls))
        fast = load_one(path, size=128)
        assert calls, "the fast path was taken"
        full = load_one(path, size=128, draft=False)
        assert fast.true_shape == full.true_shape
        # computed along two code paths: equal up to rounding, not bit for bit
        np.testing.assert_allclose(fast.net_to_orig, full.net_to_orig, rtol=1e-9, atol=1e-9)
        diff = (fast.image - full.image).abs()
        assert diff.mean() < 2 / 255 and diff.max() < 16 / 255


def _spy(fn, calls):
    def wrapper(*args, **kw):
        calls.append(fn.__name__)
        return fn(*args, **kw)

    return wrapper


class TestBadInputs:
    def test_each_bad_input_is_reported(self, tmp_path):
        d = tmp_path / "in"
        d.mkdir()
        good = gradient(120, 90)
        save(d / "img1.png", good)
        save(d / "img2.jpg", gradient(90, 120, seed=3))  # portrait: mixed orientations
        (d / "img3.png").write_bytes((d / "img1.png").read_bytes())  # duplicate
        (d / "empty.jpg").write_bytes(b"")
        (d / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg" * 10)
        jpeg = io.BytesIO()
        Image.fromarray(gradient(300, 200)).save(jpeg, "JPEG")
        (d / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
        (d / "notes.doc").write_text("hello")
        (d / "cameras.json").write_text("{}")  # a sidecar: passed over quietly inside a folder
        (d / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(32))
        save(d / "tiny.png", gradient(8, 8))
        save(d / "sliver.png", gradient(2000, 40))
        (d / "sub").mkdir()
        views, skipped = load_images([d, tmp_path / "missing.png"], size=64)
        assert [v.name for v in views] == ["img1.png", "img2.jpg"]
        assert [v.idx for v in views] == [0, 1]
        assert views[0].true_shape == (48, 64) and views[1].true_shape == (64, 48)
        reasons = {Path(s.path).name: s.reason for s in skipped}
        assert set(reasons) == {
            "img3.png",
            "empty.jpg",
            "corrupt.jpg",
            "truncated.jpg",
            "notes.doc",
            "clip.mp4",
            "tiny.png",
            "sliver.png",
            "sub",
            "missing.png",
        }
        assert "duplicate of img1.png" in reasons["img3.png"]
        assert "empty file" in reasons["empty.jpg"]
        assert "corrupt" in reasons["corrupt.jpg"]
        assert "corrupt image data" in reasons["truncated.jpg"]
        assert "not an image" in reasons["notes.doc"]
        assert "pass the video on its own" in reasons["clip.mp4"]
        assert "too small for the network" in reasons["tiny.png"] and "8x8" in reasons["tiny.png"]
        assert "aspect ratio" in reasons["sliver.png"]
        assert "not searched recursively" in reasons["sub"]
        assert "not found" in reasons["missing.png"]
        assert all(isinstance(s, Skipped) for s in skipped)

    def test_max_images(self, tmp_path):
        paths = [save(tmp_path / f"im{k}.png", gradient(64, 48, seed=k)) for k in range(4)]
        views, skipped = load_images(tmp_path, size=64, max_images=2)
        assert [v.name for v in views] == ["im0.png", "im1.png"]
        assert [s.path for s in skipped] == [str(p) for p in paths[2:]]
        assert all("max_images=2" in s.reason for s in skipped)

    def test_require_views(self, tmp_path):
        save(tmp_path / "a.png", gradient(64, 48))
        (tmp_path / "b.png").write_bytes(b"")
        views, skipped = load_images(tmp_path, size=64)
        with pytest.raises(ImageLoadError, match=r"need at least 2 usable images, got 1; skipped 1:\n  b.png: empty"):
            require_views(views, skipped)
        with pytest.raises(ImageLoadError, match="no inputs were given"):
            require_views([], [])
        require_views(views, skipped, minimum=1)

    def test_duplicates_can_be_kept(self, tmp_path):
        save(tmp_path / "a.png", gradient(64, 48))
        (tmp_path / "b.png").write_bytes((tmp_path / "a.png").read_bytes())
        assert len(load_images(tmp_path, size=64, skip_duplicates=False)[0]) == 2

    def test_natural_sort(self, tmp_path):
        for k, name in enumerate(["img10.png", "img2.png", "IMG1.png", "img1b.png"]):
            save(tmp_path / name, gradient(64, 48, seed=k))
        views, _ = load_images(tmp_path, size=64)
        assert [v.name for v in views] == ["IMG1.png", "img1b.png", "img2.png", "img10.png"]
        assert sorted(["a10", "a9", "a09x"], key=natural_key) == ["a9", "a09x", "a10"]

    def test_list_keeps_given_order(self, tmp_path):
        a = save(tmp_path / "a.png", gradient(64, 48, seed=1))
        b = save(tmp_path / "b.png", gradient(64, 48, seed=2))
        assert [v.name for v in load_images([b, a], size=64)[0]] == ["b.png", "a.png"]


def write_video(path, n_frames=30, fps=10, W=96, H=72):
    av = require_extra("av")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for k in range(n_frames):
            a = np.zeros((H, W, 3), np.uint8)
            a[:, : (k * 3) % W + 3] = (200, 80, 30)  # a bar that grows: every frame differs
            for packet in stream.encode(av.VideoFrame.from_ndarray(a, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


class TestVideo:
    def test_sampled_at_fps(self, tmp_path, caplog):
        path = write_video(tmp_path / "clip.mp4")
        with caplog.at_level(logging.INFO, logger="recon.images"):
            views, skipped = load_images(path, size=64, video_fps=2)
        assert [v.name for v in views] == [f"frame_{k:06d}" for k in (0, 5, 10, 15, 20, 25)]
        assert not skipped and views[0].true_shape == (48, 64) and views[0].orig_size == (72, 96)
        assert all(v.path is None for v in views)  # a frame has no file of its own
        assert "sampled 6 frames" in caplog.text
        assert len(load_images(path, size=64, video_fps=2, max_images=3)[0]) == 3

    def test_static_video_frames_are_deduplicated(self, tmp_path):
        av = require_extra("av")
        path = tmp_path / "static.mp4"
        with av.open(str(path), "w") as container:
            stream = container.add_stream("mpeg4", rate=5)
            stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 128, np.uint8), format="rgb24")
            for _ in range(10):
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
        views, skipped = load_images(path, size=64, video_fps=5)
        assert len(views) >= 1 and any("duplicate of frame_000000" in s.reason for s in skipped)

    def test_missing_pyav_names_the_install_command(self, tmp_path, monkeypatch):
        path = tmp_path / "clip.mp4"
        path.write_bytes(b"\x00" * 64)
        monkeypatch.setitem(sys.modules, "av", None)  # import av -> ImportError
        with pytest.raises(ImageLoadError, match="pip install av"):
            load_images(path)

    def test_unreadable_video_is_reported(self, tmp_path):
        require_extra("av")
        path = tmp_path / "broken.mp4"
        path.write_bytes(b"\x00" * 64)
        views, skipped = load_images(path)
        assert not views and "cannot open the video" in skipped[0].reason


@pytest.mark.skipif(not PHOTOS.is_dir(), reason="shared/photos is not beside the repository")
def test_real_photos():
    views, skipped = load_images(PHOTOS / "nle_tower")
    assert len(views) == 7 and not skipped
    shapes = {v.true_shape for v in views}
    assert shapes == {(512, 384), (384, 512)}  # portrait and landscape phone photos
    for v in views:
        H0, W0 = v.orig_size
        corner = v.net_to_orig @ np.array([v.true_shape[1] - 0.5, v.true_shape[0] - 0.5, 1.0])
        assert 0 < corner[0] <= W0 and 0 < corner[1] <= H0


def test_sidecar_files_named_explicitly_are_reported(tmp_path):
    Image.new("RGB", (64, 48), (200, 10, 10)).save(tmp_path / "a.png")
    (tmp_path / "cameras.json").write_text("{}")
    views, skipped = load_images([tmp_path / "a.png", tmp_path / "cameras.json"], size=64, patch_size=16)
    assert len(views) == 1
    assert [Path(s.path).name for s in skipped] == ["cameras.json"]
    assert "not an image" in skipped[0].reason
