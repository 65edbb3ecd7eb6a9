"""The web app stays up for everyone when one client misbehaves (issue 15, "The web app").

Sessions are not evicted while active, queues and memory are bounded (429 with a message), GIFs
never hold a request, foreign Host and Origin headers are refused also beyond loopback, cancelled
work lets go of its photo, /api/info names no absolute path, bad arrows files are 4xx, and a
bounded load test on a real loopback server shows the page answering while the queue is full.
"""

from __future__ import annotations

import contextlib
import gc
import io
import json
import os
import socket
import threading
import time
import tracemalloc

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
httpx = pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from stillmotion.ui.jobs import Job, JobQueue  # noqa: E402
from stillmotion.ui.limits import Limits  # noqa: E402
from stillmotion.ui.server import create_app  # noqa: E402

HEADERS = {"X-Stillmotion": "1"}
BASE = "http://127.0.0.1:7860"
ARROW = [{"points": [[10, 10], [40, 12]]}]


def _photo(w: int = 96, h: int = 64, fmt: str = "PNG", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    img = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, fmt)
    return buf.getvalue()


def _smooth_jpeg(w: int, h: int, seed: int = 0) -> bytes:
    """A photo-like (smooth) JPEG: small file, w x h pixels to decode."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([(xx * 255 // w + seed * 17) % 256, yy * 255 // h, (xx + yy) % 256], -1).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=85)
    return buf.getvalue()


def _client(app, **kw) -> TestClient:
    return TestClient(app, headers=HEADERS, base_url=BASE, **kw)


def _session(c) -> str:
    r = c.post("/api/session")
    assert r.status_code == 200, r.text
    return r.json()["session"]


def _upload(c, sid, data: bytes, what: str = "image", name: str = "photo.png"):
    return c.post(f"/api/s/{sid}/{what}", files={"file": (name, data, "application/octet-stream")})


def _full(c, sid, **extra):
    body = {"kind": "full", "engine": "warp", "frames": 4, "size": 64, "arrows": ARROW} | extra
    return c.post(f"/api/s/{sid}/jobs", json=body)


@contextlib.contextmanager
def busy_worker(app):
    """Occupy the queue's one worker (a long job of someone else) until the block ends."""
    gate, started = threading.Event(), threading.Event()

    def block(job):
        started.set()
        gate.wait(60)
        return {}

    app.state.queue.submit(Job("someone-else-entirely", "full", block))
    assert started.wait(10)
    try:
        yield gate
    finally:
        gate.set()


# ---------------------------------------------------------------- sessions


def test_active_sessions_are_never_evicted_new_ones_get_429(tmp_path):
    app = create_app(work_root=tmp_path, limits=Limits(max_sessions=3))
    with _client(app) as c, busy_worker(app):
        a = _session(c)
        assert _upload(c, a, _photo()).status_code == 200
        jobs = [_full(c, a).json()["id"] for _ in range(3)]
        _session(c), _session(c)
        for _ in range(50):  # what evicted the active session before
            r = c.post("/api/session")
            assert r.status_code == 429
            assert "3 sessions in use" in r.json()["error"] and "try again" in r.json()["error"]
            assert r.headers["retry-after"]
        assert len(app.state.store) == 3 and (app.state.store.root / a).is_dir()
        for jid in jobs:  # still there, still the owner's to cancel
            assert c.get(f"/api/s/{a}/jobs/{jid}").json()["state"] == "queued"
        r = c.post(f"/api/s/{a}/jobs/{jobs[0]}/cancel")
        assert r.status_code == 200 and r.json()["state"] == "cancelled"


def test_an_idle_session_makes_room_its_jobs_cancelled_and_its_folder_removed(tmp_path):
    app = create_app(work_root=tmp_path, limits=Limits(max_sessions=2, session_idle=60))
    with _client(app) as c, busy_worker(app):
        a, b = _session(c), _session(c)
        assert _upload(c, a, _photo()).status_code == 200
        ids = [_full(c, a).json()["id"] for _ in range(2)]
        jobs = [app.state.queue.get(i) for i in ids]
        assert app.state.queue.waiting() == 2
        # Nobody has asked about session a for two minutes (its tab was closed): it is idle.
        app.state.store.peek(a).last_seen -= 120
        new = _session(c)
        assert set(app.state.store.ids()) == {b, new}
        assert all(j.state == "cancelled" and j.work is None and j.holds == () for j in jobs)
        assert app.state.queue.waiting() == 0  # its queued work will never run
        assert not (app.state.store.root / a).exists()
        assert c.get(f"/api/s/{a}/jobs/{ids[0]}").status_code == 404


def test_a_removed_sessions_running_job_leaves_no_folder(tmp_path):
    app = create_app(work_root=tmp_path, limits=Limits(session_ttl=60))
    with _client(app) as c:
        a = _session(c)
        s = app.state.store.peek(a)
        gate, started = threading.Event(), threading.Event()

        def work(job):  # writes into the session folder after the session went (as a render does)
            started.set()
            gate.wait(30)
            out = s.file("late.mp4")
            out.parent.mkdir(parents=True, exist_ok=True)  # what io.atomic does before writing
            out.write_bytes(b"video")
            return {"files": {"mp4": str(out)}}

        app.state.queue.submit(Job(a, "full", work))
        assert started.wait(10)
        s.last_seen -= 120  # expired
        assert app.state.store.sweep() == 1 and not s.dir.exists()
        gate.set()
        assert app.state.queue.wait_idle(30)
        assert not s.dir.exists() and list(app.state.store.root.iterdir()) == []


# ---------------------------------------------------------------- queue limits


def test_queued_jobs_are_limited_per_session_and_in_all(tmp_path):
    app = create_app(work_root=tmp_path, limits=Limits(max_jobs_per_session=3, max_queued_jobs=5))
    with _client(app) as c, busy_worker(app):
        a, b = _session(c), _session(c)
        for sid in (a, b):
            assert _upload(c, sid, _photo()).status_code == 200
        ids = [_full(c, a) for _ in range(3)]
        assert all(r.status_code == 200 for r in ids)
        r = _full(c, a)
        assert r.status_code == 429 and "limit is 3" in r.json()["error"] and "cancel" in r.json()["error"]
        assert r.headers["retry-after"]
        # A preview replaces the session's previous one, so it still gets in.
        for _ in range(3):
            assert c.post(f"/api/s/{a}/jobs", json={"kind": "preview", "arrows": ARROW}).status_code == 200
        assert _full(c, b).status_code == 200
        assert app.state.queue.waiting() == 5
        r = _full(c, b)
        assert r.status_code == 429 and "queue is full" in r.json()["error"]
        assert c.post(f"/api/s/{a}/jobs/{ids[0].json()['id']}/cancel").status_code == 200
        assert _full(c, b).status_code == 200  # room again


# ---------------------------------------------------------------- memory held


def test_memory_held_per_session_is_limited_and_freed_by_cancelling(tmp_path):
    # A 1000 x 1000 photo is 3 MB decoded; decoding holds up to twice that again while it works.
    photo = _smooth_jpeg(1000, 1000)
    app = create_app(work_root=tmp_path, limits=Limits(max_session_memory_mb=8))
    with _client(app) as c, busy_worker(app):
        a = _session(c)
        assert _upload(c, a, photo).status_code == 200
        assert _upload(c, a, photo).status_code == 200  # replacing the photo frees the old one
        jid = _full(c, a).json()["id"]  # the queued run keeps this photo
        r = _upload(c, a, photo)
        assert r.status_code == 429
        message = r.json()["error"]
        assert "this session holds 3 MB" in message and "limit for one session is 8 MB" in message
        assert "--max-session-memory-mb" in message
        assert c.post(f"/api/s/{a}/jobs/{jid}/cancel").status_code == 200
        assert _upload(c, a, photo).status_code == 200  # cancelling let go of it


def test_memory_held_by_everyone_is_limited(tmp_path):
    photo = _smooth_jpeg(1000, 1000)
    app = create_app(work_root=tmp_path, limits=Limits(max_memory_mb=8, max_session_memory_mb=8))
    with _client(app) as c:
        a, b = _session(c), _session(c)
        assert _upload(c, a, photo).status_code == 200
        r = _upload(c, b, photo)
        assert r.status_code == 429
        assert "server holds 3 MB" in r.json()["error"] and "--max-memory-mb" in r.json()["error"]
        assert c.get("/api/info").json()["memory_mb"] == pytest.approx(3.0, abs=0.1)


def test_cancelled_queued_previews_let_go_of_their_photo(tmp_path):
    # What took the server from 207 MB to 1586 MB: photo + preview, again and again, behind a long job.
    app = create_app(work_root=tmp_path, limits=Limits(max_session_memory_mb=1000))
    photos = [_smooth_jpeg(2000, 1500, seed=i) for i in range(8)]  # 9 MB decoded each
    with _client(app) as c, busy_worker(app):
        sid = _session(c)
        gc.collect()
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            jobs = []
            for data in photos:
                assert _upload(c, sid, data, name="p.jpg").status_code == 200
                preview = {"kind": "preview", "arrows": [{"points": [[100, 100], [300, 120]]}]}
                r = c.post(f"/api/s/{sid}/jobs", json=preview)
                assert r.status_code == 200
                jobs.append(app.state.queue.get(r.json()["id"]))
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        assert all(j.state == "cancelled" and j.work is None and j.holds == () for j in jobs[:-1])
        assert jobs[-1].state == "queued"
        # The session's photo (also held by the one queued preview) and some slack; not 8 photos.
        assert grown < 2.5 * 9e6, f"{grown / 1e6:.0f} MB still held after 8 uploads and previews"


def test_queue_lets_go_of_a_cancelled_jobs_inputs():
    q = JobQueue()
    gate = threading.Event()
    try:
        q.submit(Job("s1", "full", lambda j: gate.wait(10) and {}))
        photo = np.zeros((10, 10, 3), np.uint8)
        waiting = q.submit(Job("s2", "full", lambda j: {"n": photo.size}, holds=(photo,)))
        q.cancel(waiting)
        assert waiting.state == "cancelled" and waiting.work is None and waiting.holds == ()
    finally:
        gate.set()
        q.stop()


# ---------------------------------------------------------------- GIFs never hold a request


def test_gif_requests_answer_at_once_while_the_conversion_waits(tmp_path):
    from stillmotion.ui.runs import engine_status

    if not engine_status(None)["warp"]["available"]:
        pytest.skip("the warp engine is not installed")
    app = create_app(work_root=tmp_path)
    with _client(app) as c:
        sid = _session(c)
        assert _upload(c, sid, _photo(150, 100)).status_code == 200
        jid = _full(c, sid, arrows=[{"points": [[30, 50], [90, 50]]}]).json()["id"]
        assert app.state.queue.wait_idle(120)
        assert c.get(f"/api/s/{sid}/jobs/{jid}").json()["state"] == "done"
        url = f"/api/s/{sid}/jobs/{jid}/video.gif"
        with busy_worker(app) as gate:
            times = []
            for _ in range(45):
                t = time.perf_counter()
                r = c.get(url)
                times.append(time.perf_counter() - t)
                assert r.status_code == 202 and r.json()["state"] == "queued" and r.json()["position"] == 1
                assert r.headers["retry-after"]
            assert max(times) < 1.0
            assert app.state.queue.waiting() == 1  # one conversion, whoever asks how often
            started = c.post(f"/api/s/{sid}/jobs/{jid}/gif").json()
            assert started["state"] == "queued" and app.state.queue.waiting() == 1
            gate.set()
            end = time.monotonic() + 120
            while c.get(f"/api/s/{sid}/jobs/{jid}/gif").json()["state"] != "done":
                assert time.monotonic() < end
                time.sleep(0.05)
        r = c.get(url)
        assert r.status_code == 200 and r.content[:6] == b"GIF89a"
        assert c.get(f"/api/s/{sid}/jobs/{jid}/gif").json()["file"] == url


# ---------------------------------------------------------------- Host and Origin


def test_foreign_host_headers_are_refused_by_default(tmp_path):
    for base in ("http://127.0.0.1:7860", "http://localhost:7860", "http://[::1]:7860", "http://localhost"):
        with TestClient(create_app(work_root=tmp_path), headers=HEADERS, base_url=base) as c:
            assert c.get("/").status_code == 200 and c.post("/api/session").status_code == 200
    app = create_app(work_root=tmp_path)
    with TestClient(app, headers=HEADERS, base_url="http://rebound.example:7860") as c:
        for r in (c.get("/"), c.get("/api/info"), c.post("/api/session")):
            assert r.status_code == 400 and "--allowed-host" in r.json()["error"]


def test_other_sites_origins_are_refused(tmp_path):
    app = create_app(work_root=tmp_path)
    with _client(app) as c:
        for origin in ("http://evil.example", "null", "http://127.0.0.1:9999", "file://"):
            r = c.post("/api/session", headers={"Origin": origin})
            assert r.status_code == 403 and "another site" in r.json()["error"], origin
        assert c.post("/api/session", headers={"Origin": BASE}).status_code == 200  # the page itself


def test_host_check_stays_on_beyond_loopback(tmp_path):
    from stillmotion.cli.ui_cmd import allowed_hosts

    hosts = allowed_hosts("0.0.0.0", True, ("photos.lan", "192.168.1.4"))
    assert set(hosts) == {"127.0.0.1", "localhost", "::1", "photos.lan", "192.168.1.4"}
    assert "10.0.0.7" in allowed_hosts("10.0.0.7", True, ())
    for base, status in (("http://photos.lan:7860", 200), ("http://192.168.1.4:7860", 200),
                         ("http://evil.example:7860", 400), ("http://0.0.0.0:7860", 400)):  # fmt: skip
        app = create_app(work_root=tmp_path, allowed_hosts=hosts)
        with TestClient(app, headers=HEADERS, base_url=base) as c:
            assert c.get("/api/info").status_code == status, base


def _ui(args: list[str], capsys) -> tuple[int, str]:
    from stillmotion.cli import main

    with pytest.raises(SystemExit) as info:
        main(["ui", *args])
    return info.value.code, capsys.readouterr().err


def test_binding_beyond_loopback_needs_an_explicit_flag(capsys):
    code, err = _ui(["--host", "0.0.0.0", "--port", "0"], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("Error: --host 0.0.0.0")
    assert "--allow-remote" in err
    code, err = _ui(["--host", "192.168.1.4", "--port", "0"], capsys)
    assert code == 2 and "--allow-remote" in err
    code, err = _ui(["--host", "0.0.0.0", "--port", "0", "--allow-remote"], capsys)
    assert code == 2 and err.count("\n") == 1 and "--allowed-host NAME" in err
    for bad in ("http://photos.lan", "photos.lan:80", "*", "a b", ""):
        code, err = _ui(["--host", "0.0.0.0", "--allow-remote", "--allowed-host", bad], capsys)
        assert code == 2 and err.startswith("Error: --allowed-host"), bad


# ---------------------------------------------------------------- no absolute paths


def _strings(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


def test_info_names_no_absolute_path(tmp_path):
    from stillmotion.ui import runs

    model = tmp_path / "my-model"
    model.mkdir()
    for app in (create_app(model_dir=model, work_root=tmp_path), create_app(work_root=tmp_path)):
        with _client(app) as c:
            r = c.get("/api/info")
            assert str(tmp_path) not in r.text
            bundled = runs._default_model()
            assert bundled is None or str(bundled) not in r.text
            assert not [s for s in _strings(r.json()) if s.startswith("/") or "/tmp" in s]
            d = r.json()["engines"]["diffusion"]
            if app.state.model_dir is not None:
                assert d["model"] == "my-model"


def test_job_errors_name_no_server_path(tmp_path):
    app = create_app(work_root=tmp_path)
    with _client(app) as c:
        sid = _session(c)
        folder = app.state.store.peek(sid).dir

        def fail(job):
            raise OSError(f"No space left on device: '{folder / 'x.mp4'}'")

        job = app.state.queue.submit(Job(sid, "full", fail))
        assert app.state.queue.wait_idle(10)
        status = c.get(f"/api/s/{sid}/jobs/{job.id}").json()
        assert status["state"] == "error" and "No space left" in status["error"]
        assert str(tmp_path) not in status["error"]


# ---------------------------------------------------------------- 16-bit grey photos


def test_a_16_bit_grey_photo_is_scaled_not_clipped(tmp_path):
    # Mean 67 of 255 in 16 bits (17219 of 65535): clipped to 8 bits it read as almost white (251).
    grey = np.full((64, 96), 67 * 257, np.uint16)
    grey[:, :48] = 10 * 257
    buf = io.BytesIO()
    Image.fromarray(grey).save(buf, "PNG")
    assert Image.open(io.BytesIO(buf.getvalue())).mode.startswith("I")
    app = create_app(work_root=tmp_path)
    with _client(app) as c:
        sid = _session(c)
        assert _upload(c, sid, buf.getvalue(), name="deep.png").status_code == 200
        image = app.state.store.peek(sid).image
        assert image.dtype == np.uint8 and image.shape == (64, 96, 3)
        assert image[:, 48:].mean() == pytest.approx(67, abs=1) and image[:, :48].mean() == pytest.approx(
            10, abs=1
        )
        r = _upload(c, sid, buf.getvalue(), what="mask", name="deep-mask.png")  # grey below half: still
        assert r.status_code == 200 and r.json()["coverage"] == 0.0


# ---------------------------------------------------------------- bad arrows JSON and bodies

BAD_ARROWS_FILES = {
    "zero-size.json": b'{"version": 1, "image_size": [0.5, 0.5], "arrows": [{"points": [[1, 1], [5, 5]]}]}',
    "zero-size2.json": b'{"version": 1, "image_size": [0, 100], "arrows": [{"points": [[1, 1], [5, 5]]}]}',
    "infinity.json": b'{"version": 1, "image_size": [Infinity, 100],'
    b' "arrows": [{"points": [[1, 1], [5, 5]]}]}',
    "nan.json": b'{"version": 1, "arrows": [{"points": [[NaN, 1], [5, 5]]}]}',
    "deep.json": b'{"version": 1, "arrows": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    "digits.json": b'{"version": 1, "arrows": [{"points": [[1' + b"0" * 5000 + b", 1], [5, 5]]}]}",
    "overflow.json": b'{"version": 1, "arrows": [{"points": [[1e400, 1], [5, 5]]}]}',
    "binary.json": bytes(range(256)) * 8,
    "strings.json": b'{"version": 1, "image_size": ["a", "b"], "arrows": [{"points": [[1, 1], [5, 5]]}]}',
    "many.json": json.dumps({"version": 1, "arrows": [{"points": [[1, 1], [5, 5]]}] * 5000}).encode(),
    "labelme.json": b'{"shapes": [{"label": "flow", "shape_type": "line", "points": [[1, 1], [5, 5]]}],'
    b' "imageWidth": 1e400, "imageHeight": 0.5}',
}


@pytest.mark.parametrize("name", sorted(BAD_ARROWS_FILES))
def test_bad_arrows_files_are_a_4xx_with_a_message(tmp_path, name):
    app = create_app(work_root=tmp_path)
    with _client(app, raise_server_exceptions=False) as c:
        sid = _session(c)
        assert _upload(c, sid, _photo(96, 64)).status_code == 200
        r = _upload(c, sid, BAD_ARROWS_FILES[name], what="arrows/import", name=name)
        assert r.status_code in (400, 413, 422), (r.status_code, r.text[:200])
        assert name in r.json()["error"] and str(tmp_path) not in r.json()["error"]
        # ... and the server goes on as before.
        good = {"version": 1, "arrows": [{"points": [[10, 10], [30, 12]]}]}
        r = _upload(c, sid, json.dumps(good).encode(), what="arrows/import", name="good.json")
        assert r.status_code == 200 and r.json()["arrows"][0]["points"] == [[10.0, 10.0], [30.0, 12.0]]


@pytest.mark.parametrize(
    "body",
    [
        '{"arrows": [{"points": [[NaN, 1], [20, 2]]}]}',
        '{"arrows": [{"points": [[Infinity, 1], [20, 2]]}]}',
        '{"arrows": [{"points": [[1e999, 1], [20, 2]]}]}',
        '{"arrows": [{"points": [[1' + "0" * 5000 + ", 1], [20, 2]]}]}",
        "[" * 100_000 + "]" * 100_000,
        '{"arrows": [{"points": [[1, 1], [20, 2]]}], "strength": NaN}',
    ],
    ids=["nan", "infinity", "overflow", "digits", "deep", "nan-strength"],
)
def test_bad_json_bodies_are_a_4xx_with_a_message(tmp_path, body):
    app = create_app(work_root=tmp_path)
    with _client(app, raise_server_exceptions=False) as c:
        sid = _session(c)
        assert _upload(c, sid, _photo(96, 64)).status_code == 200
        for route in ("field", "jobs", "arrows/export"):
            r = c.post(f"/api/s/{sid}/{route}", content=body, headers={"Content-Type": "application/json"})
            assert r.status_code in (400, 422), (route, r.status_code, r.text[:200])
            assert r.json()["error"]


def test_json_bodies_are_size_limited(tmp_path):
    app = create_app(work_root=tmp_path)
    with _client(app) as c:
        sid = _session(c)
        json_type = {"Content-Type": "application/json"}
        r = c.post(f"/api/s/{sid}/field", content=b" " * 2_000_000, headers=json_type)
        assert r.status_code == 413 and "arrows and settings" in r.json()["error"]


# ---------------------------------------------------------------- bounded load test on loopback


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def live_server(tmp_path):
    """The app on a real loopback port (uvicorn in a thread): requests really run concurrently."""
    import uvicorn

    app = create_app(work_root=tmp_path, limits=Limits(max_queued_jobs=8, max_jobs_per_session=4))
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    end = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < end, "server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", app
    server.should_exit = True
    thread.join(timeout=30)


# The flood's clients run in a process of their own, as other people's browsers would: in the
# server's process their threads would compete with it for the interpreter lock.
FLOOD = r"""
import json, sys, time
from concurrent.futures import ThreadPoolExecutor
import httpx

spec = json.load(sys.stdin)
files = {}
with httpx.Client(base_url=spec["base"], headers=spec["headers"], timeout=60,
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


def test_page_and_info_answer_within_a_second_while_the_queue_is_full(live_server, tmp_path):
    """While the queue is full, a fixed flood from another process (45 GIF requests, 45 field
    pictures, 2 uploads of a 12 MP photo, 10 job submissions, 20 new sessions), all on loopback,
    stops by itself; the page and /api/info answer within 1 s throughout."""
    import subprocess
    import sys

    from stillmotion.ui.runs import engine_status

    if not engine_status(None)["warp"]["available"]:
        pytest.skip("the warp engine is not installed")
    base, app = live_server
    big = tmp_path / "big.jpg"
    big.write_bytes(_smooth_jpeg(4000, 3000))  # a phone photo: 12 MP to decode
    with httpx.Client(base_url=base, headers=HEADERS, timeout=10) as c:
        g = _session(c)
        assert _upload(c, g, _photo(150, 100)).status_code == 200
        run = _full(c, g, arrows=[{"points": [[30, 50], [90, 50]]}]).json()["id"]
        assert app.state.queue.wait_idle(120)
        gif = f"/api/s/{g}/jobs/{run}/video.gif"
        field = {"arrows": [{"points": [[30, 50], [90, 50]]}]}
        assert c.post(f"/api/s/{g}/field", json=field).status_code == 200  # compiled before the clock runs
        with busy_worker(app):
            assert c.get(gif).status_code == 202  # its conversion waits in the queue
            fillers = [_session(c) for _ in range(2)]
            for sid in fillers:
                assert _upload(c, sid, _photo()).status_code == 200
                while app.state.queue.waiting() < 8 and _full(c, sid).status_code == 200:
                    pass
            assert app.state.queue.waiting() == 8  # the queue is full
            uploads = [_session(c) for _ in range(2)]
            flood = (
                [("GET", gif, None)] * 45
                + [("POST", f"/api/s/{g}/field", field)] * 45
                + [("POST", f"/api/s/{fillers[0]}/jobs", {"kind": "full", "arrows": ARROW})] * 10
                + [("POST", "/api/session", None)] * 20
                + [("POST", f"/api/s/{s}/image", {"upload": str(big)}) for s in uploads]
            )
            # Niced: the clients stand for other people's machines; the CPU here is the server's.
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
            with httpx.Client(base_url=base, headers=HEADERS, timeout=10) as probe:
                end = time.monotonic() + 120
                while child.poll() is None or len(probes["/"]) < 10:
                    assert time.monotonic() < end, "the flood did not end"
                    for url, times in probes.items():
                        t = time.perf_counter()
                        assert probe.get(url).status_code == (202 if url == gif else 200)
                        times.append(time.perf_counter() - t)
                    time.sleep(0.05)
            results = json.loads(child.stdout.read())
            assert child.wait() == 0
            assert app.state.queue.waiting() == 8  # still full: nothing was dropped to make room
    by_kind: dict[str, list] = {}
    for (status, seconds), (_, url, _) in zip(results, flood, strict=True):
        by_kind.setdefault(url.rsplit("/", 1)[-1], []).append((status, seconds))
    page, info, gifs = probes["/"], probes["/api/info"], probes[gif]
    print(
        f"\nqueue full, {len(flood)} other requests: GET / max {max(page) * 1000:.0f} ms, "
        f"/api/info max {max(info) * 1000:.0f} ms, a GIF request max {max(gifs) * 1000:.0f} ms "
        f"({len(page)} each); the flood's answers: "
        + "; ".join(
            f"{kind}: {sorted({s for s, _ in r})} max {max(t for _, t in r) * 1000:.0f} ms"
            for kind, r in by_kind.items()
        )
    )
    assert max(gifs) < 1.0  # a GIF request is answered at once, never held
    assert max(page) < 1.0 and max(info) < 1.0
    assert {s for s, _ in by_kind["video.gif"]} == {202}
    assert {s for s, _ in by_kind["jobs"]} == {429}  # the queue is full
    assert {s for s, _ in by_kind["field"]} <= {200, 429} and {s for s, _ in by_kind["image"]} <= {200, 429}
    assert {s for s, _ in by_kind["session"]} <= {200, 429}
