"""End to end in a real browser: upload 4 demo photos, reconstruct, look, move the confidence slider, download.

Runs the app as ``recon app`` starts it offline (the seeded random micro model, the default settings) on
127.0.0.1 (a free port), driven by Debian's headless Chromium through Python Playwright (never Playwright's own
browser download), and checks what the page says at each step: the random-weights banner, the upload count and
the names in the upload box, the plan with its estimate, the progress bar apart from the stage list, the stage
list's verdicts, the per-image table, the re-export and the download (opened with trimesh). A screenshot of the
finished page is written to ``tests/app/artifacts/app_finished.png`` (git-ignored) and its path printed.
"""

from __future__ import annotations

import os
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


def _missing(reason: str):
    """Skip locally, fail in CI (CI=true): .ci/run installs Chromium, so a missing browser there is a defect."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must run the browser tests: {reason}")
    pytest.skip(reason)


def _playwright():
    if not CHROMIUM.exists():
        _missing("Debian's Chromium is not installed (apt-get install chromium): /usr/bin/chromium is absent")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("the playwright Python package is not installed (pip install playwright)")
    return sync_playwright


@pytest.fixture
def server(tmp_path):
    from app.config import AppConfig
    from app.models import RANDOM_KEY
    from app.ui import build_app, launch_app

    config = AppConfig(device="cpu", concurrency_limit=1)
    demo = build_app(RANDOM_KEY, config=config)  # what `recon app` does offline, default settings
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
            from app.models import RANDOM_NOTE

            assert RANDOM_NOTE in page.locator("#model-banner").inner_text()
            photos = demo_images[:4]
            page.locator("#upload input[type=file]").set_input_files([str(p) for p in photos])
            page.locator("#upload-status").get_by_text("4 images ready").wait_for()
            (workspace,) = demo.recon_workspaces.active()
            assert [p.name.split("_", 1)[1] for p in workspace.inputs] == [p.name for p in photos]
            # the upload box lists exactly the 4 images in use, the gallery shows them
            page.wait_for_function("document.querySelector('#upload').innerText.includes('0003_view_003')")
            upload_text = page.locator("#upload").inner_text()
            assert [f"{k:04d}_view_00{k}" in upload_text for k in range(5)] == [True] * 4 + [False]
            assert page.locator("#inputs img").count() == 4
            plan = page.locator("#plan")
            plan.get_by_text("estimated").wait_for()
            assert plan.inner_text().startswith("Plan: 4 images, scene graph swin-2: 6 pairs (12 decoder passes)")
            # Gradio's own copies of the uploads are deleted once ingested: the workspace holds the only one.
            from gradio.utils import get_upload_folder

            root = demo.recon_workspaces.root
            stray = [
                p
                for p in Path(get_upload_folder()).rglob("view_00[0-3].jpg")
                if root not in p.parents and p.stat().st_ctime >= started  # not other runs' leftovers
            ]
            assert stray == []

            page.locator("#run").click()
            bar = page.locator("#progress progress")
            bar.wait_for()  # the bar has its own place above the stage list, never drawn over it
            bar_box, status_box = page.locator("#progress").bounding_box(), page.locator("#status").bounding_box()
            assert bar_box["y"] + bar_box["height"] <= status_box["y"] + 1
            status = page.locator("#status")
            status.get_by_text("Finished with random weights").wait_for(timeout=240_000)
            shown = status.inner_text()
            assert "Done" not in shown and "cameras registered" not in shown
            assert "alignment: 4/4 views placed from random weights: meaningless" in shown
            assert "pairs: scene graph swin-2: 6 pairs (12 decoder passes)" in shown
            assert "100 %" in page.locator("#progress").inner_text()
            page.locator("#view3d canvas").wait_for(state="visible")
            page.wait_for_function("document.querySelector('#table').innerText.includes('0003_view_003')")
            table = page.locator("#table").inner_text()
            assert table.count("random") == 4 and "yes" not in table
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

            # removing a file from the upload box removes that input: the box and the count keep agreeing
            tabs[1].locator('#upload button[aria-label="Remove this file"]').last.click()
            tabs[1].locator("#upload-status").get_by_text("2 images ready").wait_for()
            assert [p.read_bytes() for p in b.inputs] == [p.read_bytes() for p in room[:2]]
            assert tabs[1].locator("#inputs img").count() == 2

            tabs[0].close(run_before_unload=True)  # closing a tab ends only that session
            deadline = time.monotonic() + 30
            while a.root.exists() and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not a.root.exists() and b.root.is_dir()
        finally:
            browser.close()
