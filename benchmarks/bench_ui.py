"""Web app responsiveness: how long the page waits after an edit, for a preview, and for a run.

    .venv/bin/python benchmarks/bench_ui.py [--repeats 7]

Goes through the real HTTP routes (FastAPI's test client, in-process, no network) on the bundled
640x360 waterfall photo and on a 4000x3000 photo (the size of a phone picture):

- field: POST /field with 5 arrows -> PNG of the motion field (what each edit triggers), median;
- upload: POST /image of the photo (decode, checks, display copy), median;
- preview: the quick warp preview job (24 frames, longer side 256) from submit to finished file;
- run: a full warp job (50 frames, longer side 512, MP4), submit to finished file;
- gif: the GIF of that run, made on its first download (from the MP4, through the queue).

With ``--browser`` (needs /usr/bin/chromium and the playwright package), also in headless Chromium:
the time from releasing the mouse after dragging an arrow to the new motion-field picture being
loaded in the page (debounce + request + decode), median over ``--repeats`` arrows.

With ``--load``: the server on a loopback port (uvicorn), one long warp run going (1000 frames),
the queue full behind it (8 jobs, ``Limits(max_queued_jobs=8)``), a GIF conversion waiting, and a
fixed flood from another process (45 GIF requests, 45 field pictures, 10 job submissions, 20 new
sessions, 2 uploads of a 4000x3000 photo); meanwhile GET /, /api/info and a GIF request are timed
every 50 ms until the flood ends: how long the page waits when the server is busy.

Timings include the engine's first-call compilation only in the "first" figures.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from stillmotion.ui.server import create_app

EXAMPLES = Path(__file__).resolve().parents[1] / "src" / "stillmotion" / "assets" / "examples"
HEADERS = {"X-Stillmotion": "1"}
ARROWS = [
    {"points": [[318, 223], [326, 249]]},
    {"points": [[363, 268], [401, 274]]},
    {"points": [[344, 297], [339, 327]]},
    {"points": [[336, 99], [317, 99]]},
    {"points": [[489, 303], [520, 314], [560, 305]]},
]


def _wait(client, sid: str, jid: str) -> dict:
    while True:
        status = client.get(f"/api/s/{sid}/jobs/{jid}").json()
        if status["state"] not in ("queued", "running"):
            assert status["state"] == "done", status
            return status
        time.sleep(0.01)


def _job(client, sid: str, body: dict) -> tuple[float, dict]:
    t = time.perf_counter()
    jid = client.post(f"/api/s/{sid}/jobs", json=body).json()["id"]
    status = _wait(client, sid, jid)
    return time.perf_counter() - t, status


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument(
        "--browser", action="store_true", help="also measure edit -> field picture in Chromium"
    )
    parser.add_argument(
        "--load", action="store_true", help="only measure the page's answers while the queue is full"
    )
    args = parser.parse_args()
    if args.load:
        load_latency()
        return
    photo = (EXAMPLES / "waterfall.jpg").read_bytes()
    big = Image.open(io.BytesIO(photo)).convert("RGB").resize((4000, 3000), Image.BICUBIC)
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=92)
    big_jpeg = buf.getvalue()
    with (
        tempfile.TemporaryDirectory() as tmp,
        TestClient(create_app(work_root=Path(tmp)), headers=HEADERS, base_url="http://127.0.0.1") as client,
    ):
        sid = client.post("/api/session").json()["session"]
        for name, data, scale in (("640x360", photo, 1.0), ("4000x3000", big_jpeg, 4000 / 640)):
            ups = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                r = client.post(f"/api/s/{sid}/image", files={"file": ("p.jpg", data, "image/jpeg")})
                ups.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text
            arrows = [{"points": (np.asarray(a["points"]) * scale).tolist()} for a in ARROWS]
            fields = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                r = client.post(f"/api/s/{sid}/field", json={"arrows": arrows})
                fields.append(time.perf_counter() - t)
                assert r.status_code == 200, r.text
            print(
                f"{name:>10}  upload {statistics.median(ups) * 1000:7.1f} ms   "
                f"field preview {statistics.median(fields) * 1000:6.1f} ms (median of {args.repeats})"
            )
        assert (
            client.post(f"/api/s/{sid}/image", files={"file": ("p.jpg", photo, "image/jpeg")}).status_code
            == 200
        )
        preview = {"kind": "preview", "arrows": ARROWS}
        first = _job(client, sid, preview)[0]
        previews = [_job(client, sid, preview)[0] for _ in range(3)]
        print(
            f"quick preview (24 frames, 256 px): first {first:.2f} s, "
            f"then median {statistics.median(previews):.2f} s"
        )
        full = {"kind": "full", "frames": 50, "size": 512, "arrows": ARROWS}
        runs, gifs = [], []
        for _ in range(2):
            seconds, status = _job(client, sid, full)
            runs.append(seconds)
            t = time.perf_counter()
            gif = status["files"]["mp4"].replace(".mp4", ".gif")
            while (r := client.get(gif)).status_code == 202:  # made through the queue; asked again
                time.sleep(0.02)
            assert r.status_code == 200, r.text
            gifs.append(time.perf_counter() - t)
        print(
            f"full warp run (50 frames, 512x288, mp4): median {statistics.median(runs):.2f} s; "
            f"its GIF on first download: median {statistics.median(gifs):.2f} s"
        )

    if args.browser:
        browser_field_latency(args.repeats)


def browser_field_latency(repeats: int) -> None:
    import socket
    import threading

    import uvicorn
    from playwright.sync_api import sync_playwright

    chromium_args = [
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ]  # fmt: skip
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(work_root=Path(tmp))
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=chromium_args)
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(f"http://127.0.0.1:{port}/")
                page.uncheck("#auto-preview")  # measure the field picture alone
                page.set_input_files("#photo-input", str(EXAMPLES / "waterfall.jpg"))
                while not page.evaluate("document.body.classList.contains('has-photo')"):
                    time.sleep(0.05)
                box = page.locator("#canvas").bounding_box()
                # The photo's own (empty) field picture first, so no earlier request is still on its way.
                while not page.evaluate("(() => { const i = document.querySelector('#field-img');"
                                        " return i.complete && i.naturalWidth > 0; })()"):  # fmt: skip
                    time.sleep(0.01)
                times = []
                for k in range(-1, repeats):  # k = -1: an untimed first arrow (first-call compilation)
                    before = page.evaluate("document.querySelector('#field-img').src")
                    x, y = box["x"] + box["width"] * (0.25 + 0.07 * k), box["y"] + box["height"] * 0.5
                    page.mouse.move(x, y)
                    page.mouse.down()
                    page.mouse.move(x + 40, y + 30, steps=4)
                    t = time.perf_counter()
                    page.mouse.up()
                    while not page.evaluate(
                        f"(() => {{ const i = document.querySelector('#field-img');"
                        f" return i.src !== {before!r} && i.complete && i.naturalWidth > 0; }})()"
                    ):
                        time.sleep(0.005)
                    if k >= 0:
                        times.append(time.perf_counter() - t)
                browser.close()
        finally:
            server.should_exit = True
            thread.join(timeout=10)
    print(
        f"in Chromium: mouse released -> new motion-field picture shown: median "
        f"{statistics.median(times) * 1000:.0f} ms, max {max(times) * 1000:.0f} ms ({repeats} arrows; "
        f"includes the page's 150 ms debounce)"
    )


# The flood's clients run in a process of their own (niced), as other people's machines would.
FLOOD = r"""
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
import httpx

spec = json.load(sys.stdin)
with httpx.Client(base_url=spec["base"], headers=spec["headers"], timeout=120,
                  limits=httpx.Limits(max_connections=200)) as client:
    def one(request):
        method, url, body = request
        kw = {}
        if body is not None and "upload" in body:
            kw["files"] = {"file": ("big.jpg", open(body["upload"], "rb").read())}
        elif body is not None:
            kw["json"] = body
        t = time.perf_counter()
        try:
            status = client.request(method, url, **kw).status_code
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        return status, time.perf_counter() - t

    print("go", flush=True)
    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(one, spec["requests"]))
print(json.dumps(results), flush=True)
"""


def load_latency() -> None:
    import json
    import os
    import socket
    import subprocess
    import sys
    import threading

    import httpx
    import uvicorn

    from stillmotion.ui.limits import Limits

    photo = (EXAMPLES / "waterfall.jpg").read_bytes()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "big.jpg"
        Image.open(io.BytesIO(photo)).convert("RGB").resize((4000, 3000), Image.BICUBIC).save(big, quality=92)
        app = create_app(work_root=Path(tmp), limits=Limits(max_queued_jobs=8, max_jobs_per_session=4))
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        try:
            with httpx.Client(base_url=base, headers=HEADERS, timeout=60) as c:

                def session() -> str:
                    sid = c.post("/api/session").json()["session"]
                    assert c.post(f"/api/s/{sid}/image", files={"file": ("p.jpg", photo)}).status_code == 200
                    return sid

                g = session()
                run = {"kind": "full", "frames": 12, "size": 256, "arrows": ARROWS}
                jid = c.post(f"/api/s/{g}/jobs", json=run).json()["id"]
                _wait(c, g, jid)
                gif = f"/api/s/{g}/jobs/{jid}/video.gif"
                assert c.post(f"/api/s/{g}/field", json={"arrows": ARROWS}).status_code == 200
                long = session()
                lid = c.post(f"/api/s/{long}/jobs", json=run | {"frames": 1000, "size": 512}).json()["id"]
                while c.get(f"/api/s/{long}/jobs/{lid}").json()["state"] != "running":
                    time.sleep(0.05)
                assert c.get(gif).status_code == 202  # the GIF's conversion waits behind the long run
                fillers = [session(), session()]
                for sid in fillers:
                    while app.state.queue.waiting() < 8:
                        if c.post(f"/api/s/{sid}/jobs", json=run).status_code != 200:
                            break
                waiting = app.state.queue.waiting()
                uploads = [c.post("/api/session").json()["session"] for _ in range(2)]
                flood = (
                    [("GET", gif, None)] * 45
                    + [("POST", f"/api/s/{g}/field", {"arrows": ARROWS})] * 45
                    + [("POST", f"/api/s/{fillers[0]}/jobs", run)] * 10
                    + [("POST", "/api/session", None)] * 20
                    + [("POST", f"/api/s/{s}/image", {"upload": str(big)}) for s in uploads]
                )
                child = subprocess.Popen(
                    [sys.executable, "-c", FLOOD],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                    preexec_fn=lambda: os.nice(10),
                )
                child.stdin.write(json.dumps({"base": base, "headers": HEADERS, "requests": flood}))
                child.stdin.close()
                assert child.stdout.readline().strip() == "go"
                probes: dict[str, list[float]] = {"/": [], "/api/info": [], gif: []}
                while child.poll() is None or len(probes["/"]) < 10:
                    for url, times in probes.items():
                        t = time.perf_counter()
                        c.get(url)
                        times.append(time.perf_counter() - t)
                    time.sleep(0.05)
                results = json.loads(child.stdout.read())
                still = app.state.queue.waiting()
                c.post(f"/api/s/{long}/jobs/{lid}/cancel")
        finally:
            server.should_exit = True
            thread.join(timeout=60)
    print(f"queue: {waiting} jobs waiting behind a 1000-frame warp run (still {still} after the flood)")
    for name, url in (("GET /", "/"), ("GET /api/info", "/api/info"), ("GET video.gif", gif)):
        times = probes[url]
        print(
            f"{name:>14}: median {statistics.median(times) * 1000:5.0f} ms, max {max(times) * 1000:5.0f} ms "
            f"({len(times)} requests, one every 50 ms, during the flood)"
        )
    kinds: dict[str, list] = {}
    for (status, seconds), (_, url, _) in zip(results, flood, strict=True):
        kinds.setdefault(url.rsplit("/", 1)[-1], []).append((status, seconds))
    for kind, answers in kinds.items():
        statuses = sorted({str(s) for s, _ in answers})
        print(
            f"flood {kind:>9}: {len(answers):2d} requests, answered {'/'.join(statuses)}, "
            f"max {max(t for _, t in answers) * 1000:.0f} ms"
        )


if __name__ == "__main__":
    main()
