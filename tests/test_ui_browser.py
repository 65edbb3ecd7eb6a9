"""End to end in a real browser: headless Chromium (Debian's package) driven by Playwright.

Starts the server on a free loopback port, uploads the bundled photo, draws an arrow with the
mouse, checks the single-click message, runs the warp engine and waits for a playable video.
Saves its screenshot under the test's temporary folder, or under $STILLMOTION_UI_SHOTS when set
(docs/ui.png, the web app page's picture, comes from `STILLMOTION_UI_SHOTS=out/ui pytest ...`).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from stillmotion.inputs.arrows import load_arrows_file

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "src" / "stillmotion" / "assets" / "examples" / "waterfall.jpg"
EXAMPLE_MASK = EXAMPLE.with_name("waterfall_mask.png")
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

pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is absent: install it with apt-get install chromium (.ci/run does)")
    pytest.importorskip("playwright.sync_api", reason="playwright (python package) is not installed")
    import uvicorn

    from stillmotion.ui.runs import engine_status
    from stillmotion.ui.server import create_app

    if not engine_status(None)["warp"]["available"]:
        pytest.skip("the warp engine is not installed")
    app = create_app(work_root=tmp_path_factory.mktemp("ui"))
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    for _ in range(200):
        if srv.started:
            break
        time.sleep(0.05)
    assert srv.started, "server did not start"
    yield f"http://127.0.0.1:{port}", app
    srv.should_exit = True
    thread.join(timeout=30)


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 900}, device_scale_factor=1)
        pg = context.new_page()
        outside: list[str] = []
        base = server[0]
        # Anything not served by our own server would be an internet request: record and block it.
        pg.route(
            "**/*",
            lambda route: (
                route.continue_()
                if route.request.url.startswith(base)
                else (outside.append(route.request.url), route.abort())
            ),
        )
        errors: list[str] = []
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        # Console errors include Content-Security-Policy violations and failed loads.
        pg.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        pg.outside, pg.errors = outside, errors
        yield pg
        browser.close()


def wait_until(page, expression: str, timeout: int = 15_000) -> None:
    """Poll a JS expression from Python (the page's CSP forbids the eval that wait_for_function uses)."""
    end = time.monotonic() + timeout / 1000
    while not page.evaluate(expression):
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} ms waiting for: {expression}")
        time.sleep(0.1)


def _canvas_point(page, fx: float, fy: float) -> tuple[float, float]:
    box = page.locator("#canvas").bounding_box()
    return box["x"] + fx * box["width"], box["y"] + fy * box["height"]


def test_draw_an_arrow_and_animate_in_the_browser(server, page, tmp_path):
    base, app = server
    shots = Path(os.environ.get("STILLMOTION_UI_SHOTS") or tmp_path)  # tests write nowhere else by default
    shots.mkdir(parents=True, exist_ok=True)
    page.goto(base + "/")
    wait_until(page, "document.querySelectorAll('#engines .badge').length === 2")
    assert "warp: ready" in page.locator("#engines").inner_text()

    page.set_input_files("#photo-input", str(EXAMPLE))
    wait_until(page, "document.body.classList.contains('has-photo')")
    assert "640×360" in page.locator("#message").inner_text()

    # A single click and a double-click on the same spot: a message, no arrow, no crash.
    x, y = _canvas_point(page, 0.2, 0.2)
    page.mouse.click(x, y)
    page.mouse.dblclick(x, y)
    wait_until(page, "document.querySelector('#message').textContent.includes('needs a start and an end')")

    # Drag an arrow down the waterfall (photo pixels ~ (330, 200) -> (335, 260)).
    x0, y0 = _canvas_point(page, 330 / 640, 200 / 360)
    x1, y1 = _canvas_point(page, 336 / 640, 262 / 360)
    page.mouse.move(x0, y0)
    page.mouse.down()
    for k in range(1, 11):
        page.mouse.move(x0 + (x1 - x0) * k / 10, y0 + (y1 - y0) * k / 10)
    page.mouse.up()
    wait_until(page, "document.querySelector('#message').textContent.startsWith('1 arrow')")

    # A three-point trajectory by clicks, finished with Enter.
    for fx, fy in ((0.70, 0.80), (0.76, 0.84), (0.82, 0.80)):
        page.mouse.click(*_canvas_point(page, fx, fy))
        page.wait_for_timeout(1200)  # slower than the automatic preview's timer: it must not end the arrow
    page.keyboard.press("Enter")
    wait_until(page, "document.querySelector('#message').textContent.startsWith('2 arrows')")

    # Each arrow is listed with its own strength.
    assert page.locator("#arrow-list li").count() == 2
    page.locator("#arrow-list li input").first.fill("1.5")
    page.locator("#arrow-list li input").first.press("Tab")

    # Export: the download is the CLI's arrows JSON, in the photo's pixels.
    with page.expect_download() as download:
        page.click("#export-arrows")
    doc = load_arrows_file(download.value.path())
    assert doc.image_size == (640, 360) and [len(a.points) for a in doc.arrows] == [2, 3]
    assert [a.strength for a in doc.arrows] == [1.5, 1.0]
    (tail_x, tail_y), (head_x, head_y) = doc.arrows[0].points
    assert abs(tail_x - 330) < 3 and abs(tail_y - 200) < 3 and abs(head_x - 336) < 3 and abs(head_y - 262) < 3

    # The motion field preview appears and the replay command names the exported drawing.
    wait_until(page, "document.querySelector('#field-stats').textContent.includes('px/frame')")
    wait_until(page, "document.querySelector('#command').textContent.includes('--arrows drawing.json')")

    # Paint a brush stroke: the mask reaches the server.
    page.click("#tool-brush")
    bx, by = _canvas_point(page, 0.45, 0.5)
    page.mouse.move(bx, by)
    page.mouse.down()
    page.mouse.move(bx + 200, by + 60, steps=8)
    page.mouse.up()
    page.click("#tool-arrow")
    wait_until(page, "document.querySelector('#command').textContent.includes('--mask mask.png')")
    page.click("#clear-mask")
    wait_until(page, "!document.querySelector('#command').textContent.includes('--mask')")
    # Upload the bundled mask instead: only the water moves.
    page.set_input_files("#mask-input", str(EXAMPLE_MASK))
    wait_until(page, "document.querySelector('#message').textContent.includes('waterfall_mask.png loaded')")
    wait_until(page, "document.querySelector('#command').textContent.includes('--mask mask.png')")

    # Run the warp engine; a short clip keeps the test quick.
    page.fill("#frames", "30")
    page.select_option("#size", "384")
    page.click("#run")
    page.wait_for_selector("#result-card:not(.hidden)", timeout=180_000)
    wait_until(
        page,
        "(() => { const v = document.querySelector('#result-video');"
        " return v.readyState >= 2 && v.duration > 0 && v.videoWidth > 0; })()",
        timeout=60_000,
    )
    video = page.evaluate(
        "(() => { const v = document.querySelector('#result-video');"
        " return {w: v.videoWidth, h: v.videoHeight, d: v.duration, err: v.error && v.error.code}; })()"
    )
    assert video["err"] is None and video["w"] == 384 and video["h"] == 216 and video["d"] > 0
    assert "done" in page.locator("#run-state").inner_text()

    # Downloads: the MP4 link answers with a video.
    href = page.get_attribute("#dl-mp4", "href")
    resp = page.request.get(base + href)
    assert resp.ok and resp.headers["content-type"] == "video/mp4" and len(resp.body()) > 1000
    # The GIF: made through the queue on the click, followed by the page, then downloaded.
    with page.expect_download(timeout=120_000) as gif:
        page.click("#dl-gif")
    assert Path(gif.value.path()).read_bytes()[:6] == b"GIF89a"
    wait_until(page, "document.querySelector('#message').textContent.includes('GIF ready')")
    # The quick warp preview (small, short) plays too.
    wait_until(
        page,
        "(() => { const v = document.querySelector('#preview-video');"
        " return v.readyState >= 2 && v.duration > 0 && v.videoWidth > 0; })()",
        timeout=120_000,
    )
    page.wait_for_timeout(800)  # let the videos show a moving frame before the picture
    page.screenshot(path=str(shots / "ui.png"), full_page=True)

    assert page.outside == [], f"the page tried to reach the internet: {page.outside}"
    assert page.errors == [], f"JavaScript errors: {page.errors}"
