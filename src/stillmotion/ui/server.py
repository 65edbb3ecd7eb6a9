"""The web app: a FastAPI server and one self-contained page (``static/``) to draw arrows and animate.

Routes (all JSON unless noted; ``{sid}`` is a random session id the server handed out):

    GET  /                                 the page (HTML, JS, CSS from static/; nothing from the internet)
    GET  /api/info                         engines and whether they are available, limits, defaults
    POST /api/session                      a new session id
    POST /api/s/{sid}/image                upload the photo (multipart ``file``)
    GET  /api/s/{sid}/image.jpg            the photo as the server decoded it (EXIF rotation applied)
    POST /api/s/{sid}/mask                 upload a mask or the brush layer (multipart ``file``)
    DELETE /api/s/{sid}/mask               no mask: everything may move
    GET  /api/s/{sid}/mask.png             the current mask (white moves)
    POST /api/s/{sid}/field                arrows -> PNG of the motion field (reduced resolution)
    POST /api/s/{sid}/arrows/export        arrows -> the CLI's arrows JSON
    POST /api/s/{sid}/arrows/import        arrows JSON file (stillmotion or LabelMe) -> arrows
    POST /api/s/{sid}/jobs                 queue a preview or a full run
    GET  /api/s/{sid}/jobs/{jid}           state, queue position, progress, result links
    POST /api/s/{sid}/jobs/{jid}/cancel
    POST /api/s/{sid}/command              settings -> the ``stillmotion animate`` command that replays them
    GET  /api/s/{sid}/jobs/{jid}/video.mp4 | video.gif   (the GIF is made from the MP4 on first request)

Safety: uploads are size-limited while they arrive (``BodyLimit``), decoded by Pillow before they
are believed, and kept in memory; outputs go under server-generated names in a private temporary
folder that is deleted when the server stops; session and job ids are looked up, never joined into
paths.
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import threading
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.middleware.trustedhost import TrustedHostMiddleware

from stillmotion.errors import UserInputError
from stillmotion.inputs.arrows import Arrow, load_arrows_file, save_arrows_json
from stillmotion.ui import runs
from stillmotion.ui.field_preview import render_field_preview
from stillmotion.ui.jobs import Job, JobQueue
from stillmotion.ui.sessions import Session, SessionStore, is_id
from stillmotion.ui.uploads import (
    DEFAULT_MAX_PIXELS,
    UploadRejected,
    decode_image_upload,
    decode_mask_upload,
)

STATIC = resources.files("stillmotion.ui") / "static"
MAX_ARROWS = 64
MAX_POINTS = 64
CHANGE_HEADER = "X-Stillmotion"
MULTIPART_SLACK = 64 * 1024  # boundary lines and part headers around the file
# Arrow files are small; anything larger than this is not one.
MAX_ARROWS_FILE = 2_000_000


# ---------------------------------------------------------------- request bodies


class ArrowIn(BaseModel):
    points: Annotated[list[tuple[float, float]], Field(max_length=MAX_POINTS)]
    strength: Annotated[float, Field(ge=0, le=10)] = 1.0
    name: Annotated[str, Field(max_length=64)] = ""


class ArrowsIn(BaseModel):
    arrows: Annotated[list[ArrowIn], Field(max_length=MAX_ARROWS)] = []
    strength: Annotated[float, Field(ge=0, le=10)] = 1.0


class RunIn(ArrowsIn):
    kind: Literal["preview", "full"] = "full"
    engine: Literal["warp", "diffusion"] = "warp"
    frames: Annotated[int, Field(ge=2, le=1000)] = 50
    fps: Annotated[int, Field(ge=1, le=60)] = 25
    steps: Annotated[int, Field(ge=1, le=200)] = 25
    gamma: Annotated[float, Field(ge=0, le=1)] = 0.8
    omega: Annotated[float, Field(ge=0, le=1)] = 0.2
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] = 0
    long_method: Literal["phased", "direct", "freenoise", "gen-l-video"] = "phased"
    size: Annotated[int, Field(ge=64, le=2048)] = 512
    loop: bool = True


# ---------------------------------------------------------------- upload size limit, enforced while reading


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: refuse request bodies above ``limit`` bytes before they are fully read."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send, int(declared))
        seen = 0
        started = False

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge()
            return message

        async def tracked_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked_send)
        except BodyTooLarge:
            if not started:
                await self._refuse(send, seen)

    async def _refuse(self, send, size: int) -> None:
        mb = (self.limit - MULTIPART_SLACK) / 1_000_000
        body = json.dumps(
            {
                "error": f"upload of {size / 1_000_000:.1f} MB or more refused: the limit is {mb:.1f} MB "
                "(start the server with a larger --max-upload-mb to allow it)"
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------- helpers


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _display_name(name: str | None) -> str:
    # Shown in messages only; keep it short and printable, drop any folder part.
    base = (name or "upload").replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in base if c.isprintable())[:80]
    return base or "upload"


def _arrows(items: list[ArrowIn], size: tuple[int, int]) -> list[Arrow]:
    w, h = size
    out = []
    for i, a in enumerate(items):
        name = a.name or f"#{i + 1}"
        if len(a.points) < 2:
            raise UserInputError(f"arrow {name!r} has a single point: an arrow needs a start and an end")
        out.append(
            Arrow(tuple((float(x), float(y)) for x, y in a.points), float(a.strength), name).validate(w, h)
        )
    return out


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG", compress_level=1)
    return buf.getvalue()


async def _read_upload(file: UploadFile, limit: int) -> bytes:
    # Read at most limit + 1 bytes: enough to tell "too large" without holding more.
    data = await file.read(limit + 1)
    await file.close()
    return data


def replay_command(s: Session, run: RunIn, model_dir: Path | None) -> str:
    """The command line that replays a drawing exported as ``drawing.json`` (and the mask as mask.png)."""
    return runs.cli_command(s.image_name, "drawing.json", run, model_dir, s.mask is not None, s.size)


# ---------------------------------------------------------------- the app


def create_app(
    model_dir: Path | None = None,
    max_upload_mb: float = 20.0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    work_root: Path | None = None,
    session_ttl: float = 3 * 3600,
    allowed_hosts: Sequence[str] | None = None,
) -> FastAPI:
    """Build the app. Files live in a fresh folder under ``work_root`` (default: the system temp dir).

    ``allowed_hosts``: the Host header values accepted (``stillmotion ui`` passes the loopback
    names when it listens on loopback); None accepts any.
    """
    max_bytes = int(max_upload_mb * 1_000_000)
    store = SessionStore(work_root, ttl=session_ttl)
    keep_outputs = 3  # finished full runs kept per session; older files are deleted

    def on_finish(job: Job) -> None:
        # Delete outputs of older jobs of the same kind in this session: disk use stays bounded.
        s = store.get(job.session_id)
        if s is None or job.kind == "convert":
            return
        mine = sorted(
            (j for j in queue.jobs_of(job.session_id) if j.kind == job.kind and j.finished is not None),
            key=lambda j: j.finished or 0,
        )
        # Two previews: the page may still be loading the one a newer preview has just replaced.
        limit = 2 if job.kind == "preview" else keep_outputs
        for old in mine[:-limit]:
            for path in old.result.get("files", {}).values():
                with contextlib.suppress(FileNotFoundError):
                    Path(path).unlink()
            queue.forget(old.id)
            with conversions_lock:
                conversions.pop(old.id, None)

    queue = JobQueue(on_finish=on_finish)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        queue.stop()
        store.close()

    app = FastAPI(title="stillmotion", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store, app.state.queue = store, queue
    app.state.model_dir, app.state.max_bytes = model_dir, max_bytes
    app.add_middleware(BodyLimit, limit=max_bytes + MULTIPART_SLACK)
    if allowed_hosts is not None:
        # A page on a hostile domain that resolves to 127.0.0.1 (DNS rebinding) names that domain here.
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.exception_handler(UserInputError)
    async def _user_error(request: Request, exc: UserInputError):
        return _error(getattr(exc, "status", 400), str(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors()[:3]:
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
            parts.append(f"{where}: {e.get('msg', 'invalid')}")
        return _error(422, "; ".join(parts) or "invalid request")

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException):
        return _error(exc.status_code, str(exc.detail))

    @app.middleware("http")
    async def _headers(request: Request, call_next):
        # Another web site open in the same browser can send simple POSTs (forms, multipart) to a
        # loopback server without the user knowing; a custom header makes the browser ask first
        # (CORS preflight), which this server never grants. So every change must carry it.
        if request.method not in ("GET", "HEAD", "OPTIONS") and request.headers.get(CHANGE_HEADER) != "1":
            return _error(403, f"requests that change something must carry the header {CHANGE_HEADER}: 1")
        response = await call_next(request)
        # The page loads nothing from elsewhere; the policy makes that a rule, not a habit.
        response.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
            "style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'"
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    def session(sid: str) -> Session:
        s = store.get(sid)
        if s is None:
            raise HTTPException(404, "unknown or expired session: reload the page")
        return s

    def with_image(sid: str) -> Session:
        s = session(sid)
        if s.image is None:
            raise UserInputError("upload a photo first")
        return s

    def job_of(s: Session, jid: str) -> Job:
        job = queue.get(jid) if is_id(jid) else None
        if job is None or job.session_id != s.id:
            raise HTTPException(404, "unknown job")
        return job

    # ------------------------------------------------------------ page and info

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(
            (STATIC / "index.html").read_text(encoding="utf-8"), headers={"Cache-Control": "no-cache"}
        )

    @app.get("/api/info")
    def info() -> dict:
        return {
            "engines": runs.engine_status(model_dir),
            "long_methods": ["phased", "direct", "freenoise", "gen-l-video"],
            "max_upload_mb": max_upload_mb,
            "max_megapixels": max_pixels / 1e6,
            "defaults": RunIn().model_dump(exclude={"arrows", "kind"}),
            "queue": {"busy": len(queue.busy_sessions())},
        }

    @app.post("/api/session")
    def new_session() -> dict:
        store.sweep(queue.busy_sessions())
        return {"session": store.create().id}

    # ------------------------------------------------------------ photo and mask

    @app.post("/api/s/{sid}/image")
    async def upload_image(sid: str, file: UploadFile = File(...)) -> dict:
        s = session(sid)
        name = _display_name(file.filename)
        data = await _read_upload(file, max_bytes)
        # Decoding takes a while for a large photo: off the event loop, so other requests go on.
        image = await run_in_threadpool(
            decode_image_upload, data, name, max_bytes=max_bytes, max_pixels=max_pixels
        )
        with s.lock:
            # Kept in memory only: the engines take arrays, and nothing of the upload touches the disk.
            s.image, s.image_name, s.mask, s.mask_version = image, name, None, s.mask_version + 1
        h, w = image.shape[:2]
        return {"width": w, "height": h, "name": name}

    @app.get("/api/s/{sid}/image.jpg")
    def get_image(sid: str) -> Response:
        s = with_image(sid)
        im = Image.fromarray(s.image)
        im.thumbnail((2048, 2048))  # display copy; coordinates stay in the photo's own pixels
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=90)
        return Response(buf.getvalue(), media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @app.post("/api/s/{sid}/mask")
    async def upload_mask(sid: str, file: UploadFile = File(...)) -> dict:
        s = with_image(sid)
        name = _display_name(file.filename)
        data = await _read_upload(file, max_bytes)
        w, h = s.size
        mask = await run_in_threadpool(
            decode_mask_upload, data, name, w, h, max_bytes=max_bytes, max_pixels=max_pixels
        )
        with s.lock:
            s.mask, s.mask_version = mask, s.mask_version + 1
        return {"coverage": round(float(mask.mean()), 4), "version": s.mask_version}

    @app.delete("/api/s/{sid}/mask")
    def clear_mask(sid: str) -> dict:
        s = session(sid)
        with s.lock:
            s.mask, s.mask_version = None, s.mask_version + 1
        return {"coverage": 1.0, "version": s.mask_version}

    @app.get("/api/s/{sid}/mask.png")
    def get_mask(sid: str) -> Response:
        s = with_image(sid)
        if s.mask is None:
            raise HTTPException(404, "no mask")
        return Response(
            _png(s.mask.astype(np.uint8) * 255), media_type="image/png", headers={"Cache-Control": "no-store"}
        )

    # ------------------------------------------------------------ motion field and arrows files

    @app.post("/api/s/{sid}/field")
    def field(sid: str, body: ArrowsIn) -> Response:
        s = with_image(sid)
        arrows = _arrows(body.arrows, s.size)
        png, stats = render_field_preview(s.image, arrows, s.mask, body.strength)
        return Response(
            png,
            media_type="image/png",
            headers={"X-Field-Stats": json.dumps(stats), "Cache-Control": "no-store"},
        )

    @app.post("/api/s/{sid}/arrows/export")
    def export_arrows(sid: str, body: ArrowsIn) -> Response:
        s = with_image(sid)
        arrows = _arrows(body.arrows, s.size)
        with tempfile.TemporaryDirectory(dir=s.dir) as d:
            path = Path(d) / "drawing.json"
            save_arrows_json(path, arrows, image_size=s.size)
            text = path.read_text(encoding="utf-8")
        return Response(
            text,
            media_type="application/json",
            headers={"Content-Disposition": 'attachment; filename="drawing.json"'},
        )

    @app.post("/api/s/{sid}/arrows/import")
    async def import_arrows(sid: str, file: UploadFile = File(...)) -> dict:
        s = with_image(sid)
        name = _display_name(file.filename)
        data = await _read_upload(file, MAX_ARROWS_FILE)
        if len(data) > MAX_ARROWS_FILE:
            raise UploadRejected(
                f"{name} is larger than {MAX_ARROWS_FILE // 1_000_000} MB: not an arrows file", 413
            )
        with tempfile.TemporaryDirectory(dir=s.dir) as d:
            path = Path(d) / "arrows.json"  # server-chosen name; the reader only sees this file
            path.write_bytes(data)
            try:
                doc = load_arrows_file(path)
                arrows = doc.arrows_for_image(*s.size)
            except UserInputError as exc:
                raise UserInputError(str(exc).replace(str(path), name)) from None
        notes = []
        if doc.mask_path is not None:
            notes.append(f"{name} names a mask file ({doc.mask_path.name}); upload it with 'Upload mask'")
        if doc.mask_polygons:
            notes.append(
                f"{name} has polygons (a LabelMe mask); they are not imported, paint or upload the mask"
            )
        if doc.image_size and tuple(doc.image_size) != s.size:
            notes.append(f"coordinates scaled from {doc.image_size[0]}x{doc.image_size[1]} to this photo")
        return {"arrows": [a.to_json() for a in arrows], "notes": notes}

    @app.post("/api/s/{sid}/command")
    def command(sid: str, body: RunIn) -> dict:
        s = with_image(sid)
        has_mask = s.mask is not None
        return {"command": replay_command(s, body, model_dir), "has_mask": has_mask}

    # ------------------------------------------------------------ jobs

    @app.post("/api/s/{sid}/jobs")
    def submit(sid: str, body: RunIn) -> dict:
        s = with_image(sid)
        arrows = _arrows(body.arrows, s.size)
        if not arrows:
            raise UserInputError("draw at least one arrow first")
        if body.kind == "full" and body.engine == "diffusion":
            status = runs.engine_status(model_dir)["diffusion"]
            if not status["available"]:
                raise UserInputError(f"the diffusion engine is unavailable: {status['reason']}")
        if body.kind == "preview":
            queue.cancel_session(s.id, "preview")  # only the newest preview matters
        settings = runs.Settings.from_request(body, model_dir)
        with s.lock:
            image, mask = s.image, s.mask
        job = Job(s.id, body.kind, lambda job: runs.render(job, s, image, arrows, mask, settings))
        queue.submit(job)
        return status_of(s, job) | {"command": replay_command(s, body, model_dir)}

    def status_of(s: Session, job: Job) -> dict:
        out = {
            "id": job.id,
            "kind": job.kind,
            "state": job.state,
            "progress": round(job.progress, 4),
            "message": job.message,
            "position": queue.position(job),
            "error": job.error,
        }
        if job.state == "running" and job.started:
            out["elapsed"] = round(time.time() - job.started, 1)
        if job.state == "done":
            base = f"/api/s/{s.id}/jobs/{job.id}"
            out["files"] = {k: f"{base}/video.{k}" for k in job.result.get("files", {})}
            out["report"] = job.result.get("report", {})
        return out

    @app.get("/api/s/{sid}/jobs/{jid}")
    def job_status(sid: str, jid: str) -> dict:
        s = session(sid)
        return status_of(s, job_of(s, jid))

    @app.post("/api/s/{sid}/jobs/{jid}/cancel")
    def job_cancel(sid: str, jid: str) -> dict:
        s = session(sid)
        job = job_of(s, jid)
        queue.cancel(job)
        return status_of(s, job)

    conversions: dict[str, Job] = {}
    conversions_lock = threading.Lock()

    def gif_of(s: Session, job: Job) -> str:
        """Make the GIF of a finished run on first request, through the queue like any job."""
        with conversions_lock:
            conv = conversions.get(job.id)
            if conv is None or conv.state in ("error", "cancelled"):
                src, dst = Path(job.result["files"]["mp4"]), s.file(f"{job.id}.gif")
                conv = Job(s.id, "convert", lambda j: runs.gif_from_mp4(j, src, dst))
                conversions[job.id] = conv
                queue.submit(conv)
        end = time.monotonic() + 900
        while conv.finished is None and time.monotonic() < end:
            time.sleep(0.1)
        if conv.state != "done":
            raise UserInputError(f"the GIF could not be made: {conv.error or conv.state}")
        job.result["files"]["gif"] = conv.result["gif"]
        return conv.result["gif"]

    @app.get("/api/s/{sid}/jobs/{jid}/video.{ext}")
    def job_file(sid: str, jid: str, ext: str) -> FileResponse:
        s = session(sid)
        job = job_of(s, jid)
        path = job.result.get("files", {}).get(ext) if job.state == "done" else None
        if path is None and ext == "gif" and job.state == "done" and job.kind == "full":
            path = gif_of(s, job)
        if path is None or not Path(path).is_file():
            raise HTTPException(404, f"no {ext} output for this job (newer runs replace older ones)")
        media = {"mp4": "video/mp4", "gif": "image/gif"}.get(ext, "application/octet-stream")
        stem = "stillmotion-preview" if job.kind == "preview" else "stillmotion"
        return FileResponse(
            path,
            media_type=media,
            filename=f"{stem}.{ext}",
            content_disposition_type="inline",
            headers={"Cache-Control": "no-store"},
        )

    return app
