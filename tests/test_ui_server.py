"""The web app's server: uploads (limits, bad files), path safety, arrows files, field preview, jobs."""

from __future__ import annotations

import importlib.util
import io
import json
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from fastapi.testclient import TestClient  # noqa: E402

from stillmotion.inputs.arrows import load_arrows_file  # noqa: E402
from stillmotion.inputs.scene import load_scene  # noqa: E402
from stillmotion.ui.jobs import Job, JobQueue  # noqa: E402
from stillmotion.ui.server import create_app  # noqa: E402
from stillmotion.ui.sessions import SessionStore  # noqa: E402

HEADERS = {"X-Stillmotion": "1"}  # what the page sends with every request that changes something
BASE = "http://127.0.0.1:7860"  # the server answers loopback host names only, unless told others
STATIC = Path(__file__).resolve().parents[1] / "src" / "stillmotion" / "ui" / "static"


def _photo(w: int = 96, h: int = 64, fmt: str = "PNG") -> bytes:
    rng = np.random.default_rng(0)
    img = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, fmt)
    return buf.getvalue()


def _png_header_only(w: int, h: int) -> bytes:
    """A PNG that declares w x h pixels and holds (almost) none: what a decompression bomb looks like."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def app(tmp_path):
    return create_app(max_upload_mb=1.0, max_pixels=4_000_000, work_root=tmp_path)


@pytest.fixture
def client(app):
    with TestClient(app, headers=HEADERS, base_url=BASE) as c:
        yield c


@pytest.fixture
def sid(client):
    return client.post("/api/session").json()["session"]


def _upload(client, sid, data: bytes, name: str = "photo.png", what: str = "image"):
    return client.post(f"/api/s/{sid}/{what}", files={"file": (name, data, "application/octet-stream")})


# ---------------------------------------------------------------- page: offline, self-contained


def test_page_and_assets_load_nothing_from_elsewhere(client):
    r = client.get("/")
    assert r.status_code == 200 and "<canvas" in r.text
    assert "default-src 'self'" in r.headers["content-security-policy"]
    for name in ("index.html", "app.js", "style.css"):
        text = (STATIC / name).read_text(encoding="utf-8")
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, name
        assert client.get(f"/static/{name}").status_code == 200
    assert (
        "@import" not in (STATIC / "style.css").read_text()
        and "url(" not in (STATIC / "style.css").read_text()
    )


def test_info_reports_engines_and_limits(client):
    info = client.get("/api/info").json()
    assert set(info["engines"]) == {"warp", "diffusion"}
    for status in info["engines"].values():
        assert status["available"] or status["reason"]
    assert info["max_upload_mb"] == 1.0
    assert "phased" in info["long_methods"]


# ---------------------------------------------------------------- uploads: good, bad, too big


def test_photo_upload_decodes_and_reports_size(client, sid):
    r = _upload(client, sid, _photo(96, 64, "JPEG"), "holiday.jpg")
    assert r.status_code == 200, r.text
    assert r.json() == {"width": 96, "height": 64, "name": "holiday.jpg"}
    back = client.get(f"/api/s/{sid}/image.jpg")
    assert back.status_code == 200 and Image.open(io.BytesIO(back.content)).size == (96, 64)


def test_non_image_is_refused_whatever_its_name(client, sid):
    r = _upload(client, sid, b"#!/bin/sh\necho hello\n" * 20, "photo.jpg")
    assert r.status_code == 415
    assert "photo.jpg is not an image" in r.json()["error"]
    r = _upload(client, sid, b"%PDF-1.4\n" + b"0" * 200, "scan.png")
    assert r.status_code == 415


def test_formats_outside_the_list_are_refused(client, sid):
    buf = io.BytesIO()
    Image.new("RGB", (20, 20)).save(buf, "EPS")  # Pillow can open EPS via Ghostscript: never here
    r = _upload(client, sid, buf.getvalue(), "x.eps")
    assert r.status_code == 415


def test_truncated_image_is_refused_with_a_clear_message(client, sid):
    data = _photo(200, 150, "JPEG")
    r = _upload(client, sid, data[: len(data) // 2], "cut.jpg")
    assert r.status_code == 415
    assert "truncated" in r.json()["error"] and "cut.jpg" in r.json()["error"]
    png = _photo(200, 150, "PNG")
    r = _upload(client, sid, png[: len(png) // 2], "cut.png")
    assert r.status_code == 415 and "cut.png" in r.json()["error"]


def test_empty_upload_is_refused(client, sid):
    r = _upload(client, sid, b"", "empty.png")
    assert r.status_code == 400 and "empty" in r.json()["error"]


def test_oversize_upload_is_refused_just_over_and_far_over_the_limit(client, sid):
    # Just over 1 MB: reaches the handler, which names the file and the limit.
    noise = np.random.default_rng(1).integers(0, 255, (586, 586, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "BMP")
    data = buf.getvalue()
    assert 1_000_000 < len(data) < 1_064_000
    r = _upload(client, sid, data, "big.bmp")
    assert r.status_code == 413
    message = r.json()["error"]
    assert "big.bmp is larger than the upload limit of 1.00 MB" in message and "--max-upload-mb" in message
    # Far over: refused by the body limit before the upload is read in full.
    r = _upload(client, sid, b"\0" * 3_000_000, "huge.png")
    assert r.status_code == 413 and "limit" in r.json()["error"]


def test_decompression_bomb_is_refused_before_decoding(client, sid):
    # Declares 3000 x 3000 = 9 MP (over this app's 4 MP) in a file of a few dozen bytes.
    r = _upload(client, sid, _png_header_only(3000, 3000), "bomb.png")
    assert r.status_code == 413 and "decompression bomb" in r.json()["error"]
    # Declares 60000 x 60000 (3.6 gigapixels): over Pillow's own limit as well.
    r = _upload(client, sid, _png_header_only(60000, 60000), "bomb2.png")
    assert r.status_code == 413 and "bomb2.png" in r.json()["error"]
    # A real, highly compressible large image: 2500 x 2500 black compresses to a few kB.
    buf = io.BytesIO()
    Image.new("L", (2500, 2500)).save(buf, "PNG")
    assert len(buf.getvalue()) < 100_000
    r = _upload(client, sid, buf.getvalue(), "black.png")
    assert r.status_code == 413 and "megapixels" in r.json()["error"]


def test_mask_upload_checks_content_and_resizes(client, sid):
    assert _upload(client, sid, _photo(96, 64)).status_code == 200
    r = _upload(client, sid, b"not a mask", "mask.png", what="mask")
    assert r.status_code == 415
    mask = np.zeros((32, 48), np.uint8)
    mask[:, 24:] = 255
    buf = io.BytesIO()
    Image.fromarray(mask).save(buf, "PNG")
    r = _upload(client, sid, buf.getvalue(), "mask.png", what="mask")
    assert r.status_code == 200 and r.json()["coverage"] == pytest.approx(0.5, abs=0.03)
    back = Image.open(io.BytesIO(client.get(f"/api/s/{sid}/mask.png").content))
    assert back.size == (96, 64)
    assert client.delete(f"/api/s/{sid}/mask").status_code == 200
    assert client.get(f"/api/s/{sid}/mask.png").status_code == 404


def test_mask_before_photo_is_a_clear_error(client, sid):
    r = _upload(client, sid, _photo(), "mask.png", what="mask")
    assert r.status_code == 400 and "upload a photo first" in r.json()["error"]


# ---------------------------------------------------------------- path safety


def test_client_file_names_never_become_paths(client, sid, app):
    root = app.state.store.root
    for evil in ("../../escape.png", "/tmp/abs.png", "..\\..\\win.png", "a/../../b.png"):
        r = _upload(client, sid, _photo(), evil)
        assert r.status_code == 200
        assert "/" not in r.json()["name"] and "\\" not in r.json()["name"]
    # Only server-made names inside the session folder; nothing next to or above the root.
    made = sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))
    assert made == [sid]  # the photo is held in memory; nothing of an upload is written
    assert not (root.parent / "escape.png").exists() and not Path("/tmp/abs.png").exists()


def test_ids_are_looked_up_not_joined(client, sid):
    for bad in ("..", "..%2F..%2Fetc", "%2e%2e", "x" * 10, "aaaaaaaaaaaaaaaaaaaa"):
        r = client.get(f"/api/s/{bad}/image.jpg")
        assert r.status_code == 404, bad
    assert _upload(client, sid, _photo()).status_code == 200
    for bad in ("..", "aaaaaaaaaaaaaaaaaaaaaaaa", "..%2F..%2Fphoto"):
        assert client.get(f"/api/s/{sid}/jobs/{bad}/video.mp4").status_code == 404
        assert client.get(f"/api/s/{sid}/jobs/{bad}").status_code == 404


def test_arrows_file_cannot_make_the_server_read_a_path(client, sid, tmp_path):
    assert _upload(client, sid, _photo(96, 64)).status_code == 200
    secret = tmp_path / "secret.png"
    Image.new("L", (96, 64), 255).save(secret)
    doc = {"version": 1, "mask": str(secret), "arrows": [{"points": [[10, 10], [30, 12]]}]}
    r = _upload(client, sid, json.dumps(doc).encode(), "drawing.json", what="arrows/import")
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["arrows"][0]["points"] == [[10.0, 10.0], [30.0, 12.0]]
    assert any("Upload mask" in n for n in out["notes"])
    assert client.get(f"/api/s/{sid}/mask.png").status_code == 404  # the named file was not read


def test_sessions_do_not_see_each_others_jobs(client, sid):
    assert _upload(client, sid, _photo(96, 64)).status_code == 200
    other = client.post("/api/session").json()["session"]
    body = {
        "kind": "full",
        "engine": "warp",
        "frames": 4,
        "size": 64,
        "arrows": [{"points": [[10, 10], [40, 12]]}],
    }
    r = client.post(f"/api/s/{sid}/jobs", json=body)
    assert r.status_code == 200, r.text
    jid = r.json()["id"]
    assert client.get(f"/api/s/{other}/jobs/{jid}").status_code == 404
    assert client.post(f"/api/s/{other}/jobs/{jid}/cancel").status_code == 404
    client.app.state.queue.wait_idle(120)


# ---------------------------------------------------------------- arrows: validation, export/import, field


def test_single_click_arrow_gets_a_message_not_a_crash(client, sid):
    assert _upload(client, sid, _photo(96, 64)).status_code == 200
    for route in ("field", "arrows/export", "jobs"):
        r = client.post(f"/api/s/{sid}/{route}", json={"arrows": [{"points": [[10, 10]]}]})
        assert r.status_code == 400, route
        assert "needs a start and an end" in r.json()["error"]
    r = client.post(f"/api/s/{sid}/field", json={"arrows": [{"points": [[10, 10], [500, 10]]}]})
    assert r.status_code == 400 and "outside the image" in r.json()["error"]
    r = client.post(f"/api/s/{sid}/jobs", json={"arrows": []})
    assert r.status_code == 400 and "at least one arrow" in r.json()["error"]


def test_settings_out_of_range_are_named(client, sid):
    assert _upload(client, sid, _photo(96, 64)).status_code == 200
    arrows = [{"points": [[10, 10], [40, 12]]}]
    r = client.post(f"/api/s/{sid}/jobs", json={"arrows": arrows, "frames": 0})
    assert r.status_code == 422 and "frames" in r.json()["error"]
    r = client.post(f"/api/s/{sid}/jobs", json={"arrows": arrows, "engine": "magic"})
    assert r.status_code == 422 and "engine" in r.json()["error"]


def test_export_is_the_cli_format_and_replays(client, sid, tmp_path):
    photo = _photo(96, 64)
    assert _upload(client, sid, photo).status_code == 200
    arrows = [{"points": [[10, 20], [40, 22]], "strength": 1.5}, {"points": [[50, 30], [60, 40], [70, 30]]}]
    r = client.post(f"/api/s/{sid}/arrows/export", json={"arrows": arrows})
    assert r.status_code == 200 and "drawing.json" in r.headers["content-disposition"]
    path = tmp_path / "drawing.json"
    path.write_bytes(r.content)
    doc = load_arrows_file(path)
    assert doc.image_size == (96, 64)
    assert [a.points for a in doc.arrows] == [((10, 20), (40, 22)), ((50, 30), (60, 40), (70, 30))]
    assert doc.arrows[0].strength == 1.5
    (tmp_path / "photo.png").write_bytes(photo)
    scene = load_scene(tmp_path / "photo.png", arrows_file=path)
    assert len(scene.arrows) == 2
    # ... and imports back into the page unchanged.
    r = _upload(client, sid, r.content, "drawing.json", what="arrows/import")
    assert [a["points"] for a in r.json()["arrows"]] == [a["points"] for a in arrows]


def test_import_scales_to_the_photo_and_reads_labelme(client, sid, tmp_path):
    assert _upload(client, sid, _photo(96, 64)).status_code == 200
    doc = {"version": 1, "image_size": [192, 128], "arrows": [{"points": [[20, 40], [80, 40]]}]}
    r = _upload(client, sid, json.dumps(doc).encode(), "big.json", what="arrows/import")
    assert r.json()["arrows"][0]["points"] == [[10.0, 20.0], [40.0, 20.0]]
    labelme = {
        "imageWidth": 96,
        "imageHeight": 64,
        "shapes": [{"label": "flow", "shape_type": "linestrip", "points": [[5, 5], [20, 5], [30, 15]]}],
    }
    r = _upload(client, sid, json.dumps(labelme).encode(), "lm.json", what="arrows/import")
    assert r.status_code == 200 and len(r.json()["arrows"][0]["points"]) == 3
    r = _upload(client, sid, b"{not json", "bad.json", what="arrows/import")
    assert r.status_code == 400 and "bad.json" in r.json()["error"] and "not valid JSON" in r.json()["error"]


def test_field_preview_is_small_and_follows_the_arrow(client, sid):
    img = np.full((300, 600, 3), 128, np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "PNG")
    assert _upload(client, sid, buf.getvalue()).status_code == 200
    r = client.post(f"/api/s/{sid}/field", json={"arrows": [{"points": [[100, 150], [200, 150]]}]})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    preview = Image.open(io.BytesIO(r.content))
    assert max(preview.size) == 320  # computed at reduced resolution
    stats = json.loads(r.headers["x-field-stats"])
    assert stats["max_speed"] == pytest.approx(100 / 24, rel=0.05)  # 100 px in one 25-frame clip
    a = np.asarray(preview.convert("RGB")).astype(int)
    near, far = a[95, 60], a[95, 310]  # beside the drawn arrow, and far from it
    assert np.ptp(near) > 40 and np.ptp(far) < 5  # coloured where it moves, grey far away
    r = client.post(
        f"/api/s/{sid}/field", json={"arrows": [{"points": [[100, 150], [200, 150]]}], "strength": 2}
    )
    assert json.loads(r.headers["x-field-stats"])["max_speed"] == pytest.approx(200 / 24, rel=0.05)


def test_command_shows_the_replay(client, sid):
    assert _upload(client, sid, _photo(96, 64), "my photo.jpg").status_code == 200
    r = client.post(f"/api/s/{sid}/command", json={"frames": 80, "fps": 30, "engine": "warp"})
    cmd = r.json()["command"]
    assert cmd.startswith("stillmotion animate 'my photo.jpg' --arrows drawing.json")
    assert "--frames 80" in cmd and "--fps 30" in cmd and "--engine warp" in cmd and "--mask" not in cmd


def test_diffusion_without_model_is_refused_with_the_reason(client, sid, monkeypatch):
    import stillmotion.ui.runs as runs

    monkeypatch.setattr(runs, "_default_model", lambda: None)  # as on a machine without the bundled model
    info = client.get("/api/info").json()["engines"]["diffusion"]
    assert not info["available"] and info["reason"]
    assert _upload(client, sid, _photo(96, 64)).status_code == 200
    body = {"engine": "diffusion", "arrows": [{"points": [[10, 10], [40, 12]]}]}
    r = client.post(f"/api/s/{sid}/jobs", json=body)
    assert r.status_code == 400 and info["reason"] in r.json()["error"]


# ---------------------------------------------------------------- queue and clean-up


def test_queue_runs_one_at_a_time_previews_first_and_shows_positions():
    gate = threading.Event()
    order: list[str] = []
    running = []

    def work(name):
        def run(job):
            running.append(name)
            assert len(running) == 1  # never two at once
            if name == "A":
                gate.wait(10)
            order.append(name)
            running.pop()
            return {}

        return run

    q = JobQueue()
    try:
        a = q.submit(Job("s1", "full", work("A")))
        while a.state != "running":
            threading.Event().wait(0.01)
        b = q.submit(Job("s2", "full", work("B")))
        c = q.submit(Job("s3", "full", work("C")))
        p = q.submit(Job("s4", "preview", work("P")))
        assert [q.position(j) for j in (a, b, c, p)] == [0, 2, 3, 1]
        q.cancel(c)
        assert c.state == "cancelled" and q.position(b) == 2
        gate.set()
        assert q.wait_idle(10)
        assert order == ["A", "P", "B"]
        assert {j.state for j in (a, b, p)} == {"done"}
    finally:
        gate.set()
        q.stop()


def test_errors_in_jobs_are_reported_not_raised():
    def boom(job):
        raise RuntimeError("engine exploded")

    q = JobQueue()
    try:
        j = q.submit(Job("s", "full", boom))
        assert q.wait_idle(10)
        assert j.state == "error" and "engine exploded" in j.error
    finally:
        q.stop()


def test_sessions_expire_and_files_are_removed(tmp_path):
    store = SessionStore(tmp_path, ttl=0.0)
    s = store.create()
    s.file("photo.png").write_bytes(b"x")
    threading.Event().wait(0.01)
    assert store.sweep(busy={s.id}) == 0  # a session with a queued job stays
    assert store.sweep() == 1 and not s.dir.exists()
    root = store.root
    store.close()
    assert not root.exists()


def test_server_removes_its_folder_on_shutdown(tmp_path):
    app = create_app(work_root=tmp_path)
    with TestClient(app, headers=HEADERS, base_url=BASE) as c:
        sid = c.post("/api/session").json()["session"]
        _upload(c, sid, _photo())
        assert (app.state.store.root / sid).is_dir()
    assert not app.state.store.root.exists()


def test_loopback_detection():
    from stillmotion.cli.ui_cmd import _is_loopback

    assert _is_loopback("127.0.0.1") and _is_loopback("localhost") and _is_loopback("::1")
    assert not _is_loopback("0.0.0.0") and not _is_loopback("192.168.1.4") and not _is_loopback("example.org")


def _wait(client, sid, jid, timeout=180.0):
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        status = client.get(f"/api/s/{sid}/jobs/{jid}").json()
        if status["state"] not in ("queued", "running"):
            return status
        time.sleep(0.1)
    raise AssertionError("job did not finish")


def _gif(client, url: str, timeout: float = 120.0):
    """GET a run's GIF the way a script does: 202 (with its state) until it is made, then the file."""
    import time

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r = client.get(url)
        if r.status_code != 202:
            return r
        time.sleep(0.1)
    raise AssertionError("the GIF was not made in time")


def test_warp_run_writes_a_browser_playable_mp4_and_a_gif(client, sid, app):
    from stillmotion.ui.runs import engine_status

    if not engine_status(None)["warp"]["available"]:
        pytest.skip("the warp engine is not installed")
    av = pytest.importorskip("av")
    assert _upload(client, sid, _photo(150, 100)).status_code == 200
    body = {
        "kind": "full",
        "engine": "warp",
        "frames": 12,
        "fps": 12,
        "size": 128,
        "arrows": [{"points": [[30, 50], [90, 50]]}],
    }
    r = client.post(f"/api/s/{sid}/jobs", json=body)
    assert r.status_code == 200, r.text
    status = _wait(client, sid, r.json()["id"])
    assert status["state"] == "done", status
    assert (
        status["report"]["width"] == 128
        and status["report"]["height"] == 84
        and status["report"]["frames"] == 12
    )
    mp4 = client.get(status["files"]["mp4"])
    assert mp4.status_code == 200 and mp4.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(mp4.content)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(frames) == 12 and frames[0].shape == (84, 128, 3)
    assert np.abs(frames[6].astype(int) - frames[0].astype(int)).mean() > 1  # it moves
    assert "gif" not in status["files"]  # made on first request, through the queue
    gif_url = status["files"]["mp4"].replace(".mp4", ".gif")
    first = client.get(gif_url)
    assert first.status_code == 202 and first.json()["state"] in ("queued", "running", "done")
    gif = _gif(client, gif_url)
    assert gif.status_code == 200 and gif.content[:6] in (b"GIF89a", b"GIF87a")
    assert Image.open(io.BytesIO(gif.content)).n_frames == 12
    # Files live in the session's folder under the job's id; nothing half-written is left.
    names = sorted(p.name for p in (app.state.store.root / sid).iterdir())
    assert names == sorted([f"{status['id']}.mp4", f"{status['id']}.gif"])


def test_preview_is_small_and_short_and_replaces_the_previous_one(client, sid, app):
    from stillmotion.ui.runs import PREVIEW_FRAMES, PREVIEW_SIDE, engine_status

    if not engine_status(None)["warp"]["available"]:
        pytest.skip("the warp engine is not installed")
    assert _upload(client, sid, _photo(600, 400)).status_code == 200
    body = {"kind": "preview", "frames": 200, "size": 1024, "arrows": [{"points": [[100, 200], [300, 200]]}]}
    ids = [client.post(f"/api/s/{sid}/jobs", json=body).json()["id"] for _ in range(3)]
    last = _wait(client, sid, ids[-1])
    assert last["state"] == "done" and last["report"]["frames"] == PREVIEW_FRAMES
    assert max(last["report"]["width"], last["report"]["height"]) == PREVIEW_SIDE
    assert "gif" not in last["files"]
    assert client.get(last["files"]["mp4"].replace(".mp4", ".gif")).status_code == 404  # previews: MP4 only
    app.state.queue.wait_idle(60)
    for i in ids[:-1]:  # superseded while waiting or running (or already forgotten)
        r = client.get(f"/api/s/{sid}/jobs/{i}")
        assert r.status_code == 404 or r.json()["state"] in ("cancelled", "done")
    # Finished previews: a session keeps the newest two files (the page may still load the previous).
    done = [ids[-1]]
    for _ in range(2):
        done.append(client.post(f"/api/s/{sid}/jobs", json=body).json()["id"])
        assert _wait(client, sid, done[-1])["state"] == "done"
    app.state.queue.wait_idle(60)
    mp4s = sorted(p.name for p in (app.state.store.root / sid).glob("*.mp4"))
    assert mp4s == sorted(f"{i}.mp4" for i in done[-2:])
    assert client.get(f"/api/s/{sid}/jobs/{done[0]}/video.mp4").status_code == 404


def test_cancel_leaves_no_file(client, sid, app):
    from stillmotion.ui.runs import engine_status

    if not engine_status(None)["warp"]["available"]:
        pytest.skip("the warp engine is not installed")
    assert _upload(client, sid, _photo(300, 200)).status_code == 200
    body = {"kind": "full", "frames": 400, "size": 256, "arrows": [{"points": [[30, 50], [90, 50]]}]}
    jid = client.post(f"/api/s/{sid}/jobs", json=body).json()["id"]
    import time

    while client.get(f"/api/s/{sid}/jobs/{jid}").json()["progress"] < 0.05:
        time.sleep(0.05)
    assert client.post(f"/api/s/{sid}/jobs/{jid}/cancel").status_code == 200
    assert _wait(client, sid, jid)["state"] == "cancelled"
    assert list((app.state.store.root / sid).iterdir()) == []
    assert client.get(f"/api/s/{sid}/jobs/{jid}/video.mp4").status_code == 404


def test_the_command_shown_on_the_page_replays_the_same_video(client, sid, tmp_path, monkeypatch):
    import shlex

    from stillmotion.cli import main
    from stillmotion.ui.runs import engine_status

    if not engine_status(None)["warp"]["available"]:
        pytest.skip("the warp engine is not installed")
    av = pytest.importorskip("av")
    examples = Path(__file__).resolve().parents[1] / "src" / "stillmotion" / "assets" / "examples"
    photo = (examples / "waterfall.jpg").read_bytes()
    assert _upload(client, sid, photo, "waterfall.jpg").status_code == 200
    mask = (examples / "waterfall_mask.png").read_bytes()
    assert _upload(client, sid, mask, "m.png", what="mask").status_code == 200
    arrows = [{"points": [[330.5, 200.25], [336, 262]]}, {"points": [[450, 290], [490, 300], [520, 290]]}]
    body = {"kind": "full", "frames": 8, "fps": 10, "size": 256, "strength": 1.5, "arrows": arrows}
    r = client.post(f"/api/s/{sid}/jobs", json=body)
    status = _wait(client, sid, r.json()["id"])
    assert status["state"] == "done", status
    command = r.json()["command"]
    assert "--mask mask.png" in command and "--size 256x144" in command

    # What a user does: save the photo, the exported drawing and the mask, and run the command.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "waterfall.jpg").write_bytes(photo)
    (tmp_path / "drawing.json").write_bytes(client.post(f"/api/s/{sid}/arrows/export", json=body).content)
    (tmp_path / "mask.png").write_bytes(client.get(f"/api/s/{sid}/mask.png").content)
    argv = shlex.split(command)
    assert argv[:2] == ["stillmotion", "animate"]
    with pytest.raises(SystemExit) as done:
        main(argv[1:])
    assert done.value.code == 0

    def decode(data: bytes) -> np.ndarray:
        with av.open(io.BytesIO(data)) as container:
            return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])

    page = decode(client.get(status["files"]["mp4"]).content)
    cli = decode((tmp_path / "animation.mp4").read_bytes())
    assert page.shape == cli.shape == (8, 144, 256, 3)
    assert np.array_equal(page, cli)


def test_diffusion_run_with_a_model_folder_and_its_replay(tmp_path, monkeypatch):
    """A tiny in-process model saved as a folder stands in for real weights (none can be downloaded)."""
    import shlex

    pytest.importorskip("diffusers")
    av = pytest.importorskip("av")
    from stillmotion.ui.runs import engine_status

    if not importlib.util.find_spec("stillmotion.engines.diffusion"):
        pytest.skip("the diffusion engine is not installed")
    from stillmotion.cli import main
    from stillmotion.diffusion.pipeline import StillMotionPipeline
    from stillmotion.diffusion.tiny import tiny_components

    model = tmp_path / "tiny-model"
    StillMotionPipeline(**tiny_components(0)).save_pretrained(model)
    assert engine_status(model)["diffusion"]["available"]
    app = create_app(model_dir=model, work_root=tmp_path)
    with TestClient(app, headers=HEADERS, base_url=BASE) as client:
        info = client.get("/api/info").json()["engines"]["diffusion"]
        assert info["available"] and info["model"] == "tiny-model"  # its name, not where it lies
        sid = client.post("/api/session").json()["session"]
        photo = _photo(96, 64)
        assert _upload(client, sid, photo, "p.png").status_code == 200
        body = {"kind": "full", "engine": "diffusion", "frames": 2, "fps": 8, "steps": 1, "seed": 3,
                "size": 64, "arrows": [{"points": [[20, 30], [60, 30]]}]}  # fmt: skip
        r = client.post(f"/api/s/{sid}/jobs", json=body)
        assert r.status_code == 200, r.text
        status = _wait(client, sid, r.json()["id"], timeout=300)
        assert status["state"] == "done", status
        assert status["report"]["engine"] == "diffusion" and status["report"]["steps"] == 1
        mp4 = client.get(status["files"]["mp4"]).content
        command = r.json()["command"]
        assert f"--model {model}" in command and "--steps 1" in command and "--seed 3" in command
        drawing = client.post(f"/api/s/{sid}/arrows/export", json=body).content

    with av.open(io.BytesIO(mp4)) as container:
        page = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert page.shape[0] == 2
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.png").write_bytes(photo)
    (tmp_path / "drawing.json").write_bytes(drawing)
    with pytest.raises(SystemExit) as done:
        main(shlex.split(command)[1:])
    assert done.value.code == 0
    with av.open(str(tmp_path / "animation.mp4")) as container:
        cli = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    assert np.array_equal(page, cli)  # same seed, same inputs: the same video


def test_port_in_use_is_a_clear_error():
    import socket

    from stillmotion.cli.ui_cmd import _check_port_free
    from stillmotion.errors import UserInputError

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(UserInputError, match=f"cannot listen on 127.0.0.1:{port}.*--port"):
            _check_port_free("127.0.0.1", port)


def test_changes_need_the_page_header_and_hosts_can_be_pinned(app, tmp_path):
    with TestClient(app, base_url=BASE) as bare:  # what another web site's form or fetch could send
        r = bare.post("/api/session")
        assert r.status_code == 403 and "X-Stillmotion" in r.json()["error"]
        assert bare.get("/api/info").status_code == 200  # reading is harmless
    pinned = create_app(work_root=tmp_path, allowed_hosts=["127.0.0.1", "localhost"])
    with TestClient(pinned, headers=HEADERS, base_url="http://localhost:7860") as ok:
        assert ok.post("/api/session").status_code == 200
    with TestClient(pinned, headers=HEADERS, base_url="http://evil.example:7860") as rebound:
        assert rebound.get("/").status_code == 400  # DNS rebinding: the Host header gives it away
