"""Uploads: classification, generated names, limits, and zip archives that must be refused."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from app.config import MB, AppLimits
from app.uploads import UploadError, display_name, ingest


def _jpeg_bytes(seed: int, size=(64, 48)) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG")
    return buf.getvalue()


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def ws(manager):
    return manager.create("s1")


def _zip(path: Path, entries: list[tuple[zipfile.ZipInfo | str, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for info, data in entries:
            zf.writestr(info, data)
    return path


class TestFiles:
    def test_images_get_generated_names_and_keep_their_bytes(self, ws, tmp_path):
        a = _write(tmp_path / "up" / "My Photo (1).JPG", _jpeg_bytes(0))
        b = _write(tmp_path / "up" / "b.png", _jpeg_bytes(1))  # a JPEG named .png: PIL reads it by content
        rep = ingest(ws, [a, b], AppLimits())
        assert rep.n_images == 2 and not rep.skipped
        assert [p.parent for p in ws.inputs] == [ws.inputs_dir] * 2
        assert [p.name for p in ws.inputs] == ["0000_My_Photo_1.jpg", "0001_b.png"]
        assert ws.inputs[0].read_bytes() == a.read_bytes()
        assert "2** images ready" in rep.message()

    def test_non_images_are_skipped_with_a_reason(self, ws, tmp_path):
        good = [_write(tmp_path / f"{k}.jpg", _jpeg_bytes(k)) for k in range(2)]
        fake = _write(tmp_path / "notes.jpg", b"this is text, not a JPEG")
        other = _write(tmp_path / "readme.txt", b"hello")
        rep = ingest(ws, [*good, fake, other], AppLimits())
        assert rep.n_images == 2
        reasons = dict(rep.skipped)
        assert "not an image PIL can read" in reasons["notes.jpg"]
        assert "not an image, a zip of images or a video" in reasons["readme.txt"]
        assert len(list(ws.inputs_dir.iterdir())) == 2  # the unreadable copy was removed

    def test_one_image_asks_for_more(self, ws, tmp_path):
        rep = ingest(ws, [_write(tmp_path / "a.jpg", _jpeg_bytes(0))], AppLimits())
        assert rep.n_images == 1
        assert "at least 2 images" in rep.message()

    def test_too_many_images_is_refused_whole(self, ws, tmp_path):
        files = [_write(tmp_path / f"{k}.jpg", _jpeg_bytes(k)) for k in range(4)]
        with pytest.raises(UploadError, match="the limit is 3"):
            ingest(ws, files, AppLimits(max_images=3))
        assert ws.inputs == [] and list(ws.inputs_dir.iterdir()) == []

    def test_file_over_size_limit_is_skipped(self, ws, tmp_path):
        small = [_write(tmp_path / f"{k}.jpg", _jpeg_bytes(k)) for k in range(2)]
        big = _write(tmp_path / "big.jpg", _jpeg_bytes(9, size=(600, 600)))
        limit = (big.stat().st_size - 1) / MB
        assert all(p.stat().st_size < limit * MB for p in small)
        rep = ingest(ws, [*small, big], AppLimits(max_file_mb=limit))
        assert rep.n_images == 2
        assert "larger than" in dict(rep.skipped)["big.jpg"]

    def test_too_many_pixels_is_skipped(self, ws, tmp_path):
        files = [_write(tmp_path / f"{k}.jpg", _jpeg_bytes(k, size=(200, 100))) for k in range(3)]
        rep = ingest(ws, files, AppLimits(max_pixels=10_000))
        assert rep.n_images == 0 and all("too many pixels" in why for _, why in rep.skipped)

    def test_total_upload_limit(self, ws, tmp_path):
        files = [_write(tmp_path / f"{k}.jpg", _jpeg_bytes(k, size=(300, 300))) for k in range(3)]
        total = sum(p.stat().st_size for p in files)
        with pytest.raises(UploadError, match="MB per session"):
            ingest(ws, files, AppLimits(max_upload_mb=total / MB / 2))

    def test_nothing_uploaded(self, ws):
        with pytest.raises(UploadError, match="nothing was uploaded"):
            ingest(ws, [], AppLimits())

    def test_vanished_upload(self, ws, tmp_path):
        with pytest.raises(UploadError, match="upload again"):
            ingest(ws, [tmp_path / "gone.jpg"], AppLimits())

    def test_a_new_upload_replaces_the_previous_one(self, ws, tmp_path):
        ingest(ws, [_write(tmp_path / f"{k}.jpg", _jpeg_bytes(k)) for k in range(3)], AppLimits())
        ingest(ws, [_write(tmp_path / f"n{k}.jpg", _jpeg_bytes(10 + k)) for k in range(2)], AppLimits())
        assert [p.name for p in ws.inputs] == ["0000_n0.jpg", "0001_n1.jpg"]
        assert sorted(p.name for p in ws.inputs_dir.iterdir()) == ["0000_n0.jpg", "0001_n1.jpg"]


class TestVideo:
    def test_video_alone_is_kept_for_frame_sampling(self, ws, tmp_path):
        clip = _write(tmp_path / "walk.MP4", b"\x00" * 1000)
        rep = ingest(ws, [clip], AppLimits())
        assert rep.video == "walk.MP4" and [p.name for p in ws.inputs] == ["video.mp4"]
        assert "frames are sampled" in rep.message()

    def test_video_with_photos_is_refused(self, ws, tmp_path):
        clip = _write(tmp_path / "walk.mp4", b"\x00" * 1000)
        photo = _write(tmp_path / "a.jpg", _jpeg_bytes(0))
        with pytest.raises(UploadError, match="not both"):
            ingest(ws, [photo, clip], AppLimits())

    def test_video_size_limit(self, ws, tmp_path):
        clip = _write(tmp_path / "walk.mp4", b"\x00" * (MB + 1))
        with pytest.raises(UploadError, match="larger than 1 MB"):
            ingest(ws, [clip], AppLimits(max_video_mb=1))


class TestZip:
    def test_images_in_folders_are_extracted_under_generated_names(self, ws, tmp_path):
        z = _zip(
            tmp_path / "photos.zip",
            [
                ("scan/img10.jpg", _jpeg_bytes(10)),
                ("scan/img2.jpg", _jpeg_bytes(2)),
                ("scan/deeper/img3.jpg", _jpeg_bytes(3)),
                ("__MACOSX/scan/._img2.jpg", b"junk"),
                ("scan/notes.txt", b"hello"),
                ("scan/", b""),
            ],
        )
        rep = ingest(ws, [z], AppLimits())
        assert rep.n_images == 3
        # natural order of the entry names; generated names never contain a folder
        assert [p.name for p in ws.inputs] == ["0000_img3.jpg", "0001_img2.jpg", "0002_img10.jpg"]
        assert all(p.parent == ws.inputs_dir for p in ws.inputs)
        assert rep.skipped == [("photos.zip/notes.txt", "not an image file (archives may hold photos only)")]

    @pytest.mark.parametrize(
        "name", ["../evil.jpg", "a/../../evil.jpg", "/etc/evil.jpg", "C:/evil.jpg", "..\\evil.jpg"]
    )
    def test_traversal_and_absolute_paths_are_refused(self, ws, tmp_path, name):
        z = _zip(tmp_path / "bad.zip", [("ok.jpg", _jpeg_bytes(0)), (name, _jpeg_bytes(1))])
        with pytest.raises(UploadError, match="absolute or '..' path"):
            ingest(ws, [z], AppLimits())
        assert ws.inputs == [] and list(ws.inputs_dir.iterdir()) == []
        assert not any(p.name == "evil.jpg" for p in tmp_path.rglob("*"))

    def test_symlink_entries_are_refused(self, ws, tmp_path):
        link = zipfile.ZipInfo("photo.jpg")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        z = _zip(tmp_path / "link.zip", [("a.jpg", _jpeg_bytes(0)), (link, b"/etc/passwd")])
        with pytest.raises(UploadError, match="symbolic link"):
            ingest(ws, [z], AppLimits())

    def test_zip_bomb_ratio_is_refused(self, ws, tmp_path):
        z = _zip(tmp_path / "bomb.zip", [("a.jpg", _jpeg_bytes(0)), ("b.jpg", b"\x00" * (20 * MB))])
        assert z.stat().st_size < MB  # 20 MB of zeros deflate to ~20 kB
        with pytest.raises(UploadError, match="zip bomb"):
            ingest(ws, [z], AppLimits())

    def test_total_uncompressed_size_is_limited(self, ws, tmp_path):
        z = _zip(tmp_path / "big.zip", [(f"{k}.jpg", _jpeg_bytes(k, size=(400, 400))) for k in range(3)])
        declared = sum(i.file_size for i in zipfile.ZipFile(z).infolist())
        with pytest.raises(UploadError, match="uncompressed"):
            ingest(ws, [z], AppLimits(max_zip_uncompressed_mb=declared / MB / 2))

    def test_entry_count_is_limited(self, ws, tmp_path):
        z = _zip(tmp_path / "many.zip", [(f"{k}.txt", b"x") for k in range(11)])
        with pytest.raises(UploadError, match="11 entries; the limit is 10"):
            ingest(ws, [z], AppLimits(max_zip_members=10))

    def test_images_over_the_count_limit_inside_a_zip(self, ws, tmp_path):
        z = _zip(tmp_path / "lots.zip", [(f"{k}.jpg", _jpeg_bytes(k)) for k in range(5)])
        with pytest.raises(UploadError, match="the limit is 4"):
            ingest(ws, [z], AppLimits(max_images=4))

    def test_lying_size_header_cannot_overflow(self, ws, tmp_path):
        real = _jpeg_bytes(0)
        z = _zip(tmp_path / "lie.zip", [("a.jpg", real), ("b.jpg", _jpeg_bytes(1))])
        raw = bytearray(z.read_bytes())
        # Shrink the declared uncompressed size of the first entry in the central directory.
        cd = raw.rfind(b"PK\x01\x02", 0, raw.rfind(b"PK\x01\x02"))
        raw[cd + 24 : cd + 28] = (100).to_bytes(4, "little")
        z.write_bytes(bytes(raw))
        rep = ingest(ws, [z], AppLimits())
        assert all(p.stat().st_size <= max(100, len(real)) for p in ws.inputs)
        assert rep.n_images + len(rep.skipped) == 2
        assert any("a.jpg" in name for name, _ in rep.skipped)

    def test_not_a_zip(self, ws, tmp_path):
        with pytest.raises(UploadError, match="not a readable zip"):
            ingest(ws, [_write(tmp_path / "x.zip", b"PK but not really")], AppLimits())


def test_display_name_is_harmless():
    assert display_name("../../etc/passwd") == "passwd"
    assert display_name("C:\\Users\\me\\IMG 1.jpg") == "IMG_1.jpg"
    assert display_name("<script>.jpg") == "script_.jpg"
    assert display_name("...") == "file"
    assert len(display_name("a" * 500 + ".jpg")) == 60


def test_example_folder(ws, demo_dir):
    from app.uploads import ingest_folder

    rep = ingest_folder(ws, demo_dir / "room", AppLimits(max_images=4))
    assert rep.n_images == 4 and not rep.skipped  # cameras.json is not offered as an image
    assert [p.name for p in ws.inputs] == [f"{k:04d}_view_{k:03d}.jpg" for k in range(4)]
