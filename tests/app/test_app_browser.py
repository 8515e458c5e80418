"""End to end in a real browser: upload demo photos, reconstruct, move the confidence slider, download the GLB.

Runs the app on 127.0.0.1 (a free port) with a micro random-weight model, driven by Debian's headless Chromium
through Python Playwright (never Playwright's own browser download). A screenshot of the finished page is
written to ``tests/app/artifacts/app_finished.png`` (git-ignored) and its path printed.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"  # its .gitignore keeps screenshots out of git
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _playwright():
    if not CHROMIUM.exists():
        pytest.skip("Debian's Chromium is not installed (apt-get install chromium): /usr/bin/chromium is absent")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright Python package is not installed (pip install playwright)")
    return sync_playwright


@pytest.fixture
def server(model, tmp_path):
    from app.config import AppConfig
    from app.handlers import RunSettings
    from app.ui import build_app, launch_app

    config = AppConfig(device="cpu", concurrency_limit=1)
    # Small network images and a coarse matcher keep the run short on two shared CPU cores.
    demo = build_app(model, config=config, defaults=RunSettings(image_size=160, subsample=16))
    port = _free_port()
    launch_app(demo, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield demo, f"http://127.0.0.1:{port}/"
    finally:
        demo.close()
        demo.recon_workspaces.close_all()


@pytest.mark.browser
@pytest.mark.timeout(300)
def test_upload_run_slider_download(server, demo_images, tmp_path):
    import trimesh

    sync_playwright = _playwright()
    demo, url = server
    profile = tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path)
    started = time.time() - 1
    with sync_playwright() as pw:
        # A fresh profile folder (Playwright passes it to Chromium as --user-data-dir).
        browser = pw.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1300},
            accept_downloads=True,
        )
        try:
            page = browser.new_page()
            console: list[str] = []
            page.on("console", lambda msg: console.append(f"{msg.type}: {msg.text}"))
            page.set_default_timeout(60_000)
            page.goto(url)
            page.locator("#upload input[type=file]").set_input_files([str(p) for p in demo_images[:2]])
            page.get_by_text("2 images ready").wait_for()
            (workspace,) = demo.recon_workspaces.active()
            assert [p.name.split("_", 1)[1] for p in workspace.inputs] == [p.name for p in demo_images[:2]]
            # Gradio's own copies of the uploads are deleted once ingested: the workspace holds the only one.
            from gradio.utils import get_upload_folder

            root = demo.recon_workspaces.root
            stray = [
                p
                for p in Path(get_upload_folder()).rglob("view_00[01].jpg")
                if root not in p.parents and p.stat().st_ctime >= started  # not other runs' leftovers
            ]
            assert stray == []

            page.locator("#run").click()
            page.locator("#status").get_by_text("Done.").wait_for(timeout=240_000)
            page.locator("#view3d canvas").wait_for(state="visible")
            glb_first = workspace.result.exports.glb
            points_first = workspace.result.exports.n_points

            # Drag the range thumb a little to the right; its release re-exports the cached scene.
            rng = page.locator("#conf input[type=range]")
            box = rng.bounding_box()
            lo, hi = float(rng.get_attribute("min")), float(rng.get_attribute("max"))
            thumb = 16  # px: Chromium maps x to a value over the track minus the thumb width
            x0 = box["x"] + thumb / 2 + (1.5 - lo) / (hi - lo) * (box["width"] - thumb)
            y = box["y"] + box["height"] / 2
            page.mouse.move(x0, y)
            page.mouse.down()
            page.mouse.move(x0 + 0.2 / (hi - lo) * (box["width"] - thumb), y, steps=4)
            page.mouse.up()
            page.locator("#view-status").get_by_text("points above confidence").wait_for()
            exports = workspace.result.exports
            assert exports.glb != glb_first
            assert exports.settings.conf_thr > 1.5
            assert float(page.locator("#conf input[type=number]").input_value()) == exports.settings.conf_thr
            assert exports.n_points <= points_first
            shown = page.locator("#view-status").inner_text()
            assert f"{exports.n_points:,} points" in shown

            link = page.locator('#downloads a[download="scene.glb"]')
            # Served from the session's workspace itself: no copy in a shared cache.
            assert str(exports.glb) in link.get_attribute("href")
            with page.expect_download() as info:
                link.click()
            target = tmp_path / "downloaded.glb"
            info.value.save_as(target)
            served = exports.glb.read_bytes()
            page.wait_for_timeout(1500)  # let the 3D view finish drawing before the screenshot
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / "app_finished.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot: {shot}")
        except Exception:
            ARTIFACTS.mkdir(exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / "app_failure.png"), full_page=True)
            print(f"failure screenshot: {ARTIFACTS / 'app_failure.png'}")
            print("browser console:\n" + "\n".join(console[-30:]))
            print("downloads HTML:", page.locator("#downloads").inner_html()[:3000])
            raise
        finally:
            browser.close()

    loaded = trimesh.load(target)
    assert isinstance(loaded, trimesh.Scene)
    clouds = [g for g in loaded.geometry.values() if isinstance(g, trimesh.PointCloud)]
    assert clouds and sum(len(c.vertices) for c in clouds) == exports.n_points
    assert target.read_bytes() == served
    shutil.rmtree(profile, ignore_errors=True)
    # Closing the browser ends the session: its workspace (uploads, scene, exports) is deleted.
    deadline = time.monotonic() + 30
    while workspace.root.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not workspace.root.exists()
    assert demo.recon_workspaces.active() == []


@pytest.mark.browser
@pytest.mark.timeout(180)
def test_two_tabs_are_two_isolated_sessions(server, demo_dir, tmp_path):
    sync_playwright = _playwright()
    demo, url = server
    orbit = sorted((demo_dir / "orbit").glob("*.jpg"))[:2]
    room = sorted((demo_dir / "room").glob("*.jpg"))[:3]
    with sync_playwright() as pw:
        browser = pw.chromium.launch_persistent_context(
            tempfile.mkdtemp(prefix="chromium-profile-", dir=tmp_path),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
        )
        try:
            tabs = [browser.new_page(), browser.new_page()]
            for tab, files in zip(tabs, (orbit, room), strict=True):
                tab.set_default_timeout(60_000)
                tab.goto(url)
                tab.locator("#upload input[type=file]").set_input_files([str(p) for p in files])
                tab.get_by_text(f"{len(files)} images ready").wait_for()
            a, b = sorted(demo.recon_workspaces.active(), key=lambda ws: len(ws.inputs))
            assert a.session != b.session and a.root != b.root
            assert [p.read_bytes() for p in a.inputs] == [p.read_bytes() for p in orbit]
            assert [p.read_bytes() for p in b.inputs] == [p.read_bytes() for p in room]
            # each tab's gallery shows files of its own workspace only
            srcs = [tab.locator("#inputs img").evaluate_all("els => els.map(e => e.src)") for tab in tabs]
            assert srcs[0] and all(str(a.root) in s for s in srcs[0])
            assert srcs[1] and all(str(b.root) in s for s in srcs[1])

            tabs[0].close(run_before_unload=True)  # closing a tab ends only that session
            deadline = time.monotonic() + 30
            while a.root.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not a.root.exists() and b.root.is_dir()
        finally:
            browser.close()
