"""The web app: a FastAPI server and one self-contained page (``static/``) to draw arrows and animate.

Routes (all JSON unless noted; ``{sid}`` is a random session id the server handed out):

    GET  /                                 the page (HTML, JS, CSS from static/; nothing from the internet)
    GET  /api/info                         engines and whether they are available, limits, defaults
    POST /api/session                      a new session id (429 when every place is taken)
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
    POST /api/s/{sid}/jobs/{jid}/gif       start making the GIF of a finished run (through the queue)
    GET  /api/s/{sid}/jobs/{jid}/gif       how far that is
    GET  /api/s/{sid}/jobs/{jid}/video.mp4 | video.gif   (the GIF: 202 and its state until it is made)

Safety: uploads are size-limited while they arrive (``BodyLimit``), decoded by Pillow before they
are believed, and kept in memory; outputs go under server-generated names in a private temporary
folder that is deleted when the server stops; session and job ids are looked up, never joined into
paths. Requests must name an allowed host (DNS rebinding) and, when a browser says where they come
from, come from this server's own page. Every endpoint runs on the event loop and hands slow work
to bounded pools (``limits``): nothing a client does can take the threads that answer the page.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import numpy as np
from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from stillmotion.errors import UserInputError
from stillmotion.inputs.arrows import Arrow, load_arrows_file, save_arrows_json
from stillmotion.ui import runs
from stillmotion.ui.field_preview import render_field_preview
from stillmotion.ui.hosts import LOOPBACK_HOSTS, host_name
from stillmotion.ui.jobs import Job, JobCancelled, JobQueue
from stillmotion.ui.limits import Limits, MemoryBudget, RequestPool, nbytes
from stillmotion.ui.sessions import Session, SessionStore, is_id
from stillmotion.ui.uploads import (
    DEFAULT_MAX_PIXELS,
    UploadRejected,
    declared_pixels,
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
# JSON bodies (arrows and settings) are a few kB; a larger one is parsed on the event loop for nothing.
MAX_JSON_BODY = 1_000_000
RETRY_AFTER_S = 2  # what a 429 or a 202 suggests the client waits before asking again
SWEEP_EVERY_S = 60.0


# ---------------------------------------------------------------- request bodies

Coordinate = Annotated[float, Field(allow_inf_nan=False)]


class ArrowIn(BaseModel):
    points: Annotated[list[tuple[Coordinate, Coordinate]], Field(max_length=MAX_POINTS)]
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
    control: Literal["auto", "trained", "warp-guided", "none"] = "auto"
    size: Annotated[int, Field(ge=64, le=2048)] = 512
    loop: bool = True
    prompt: Annotated[str, Field(max_length=1000)] = ""  # Wan models only


# ---------------------------------------------------------------- upload size limit, enforced while reading


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: refuse request bodies above the limit before they are fully read.

    ``limit`` for uploads (multipart), ``json_limit`` for everything else.
    """

    def __init__(self, app, limit: int, json_limit: int = MAX_JSON_BODY) -> None:
        self.app, self.limit, self.json_limit = app, limit, json_limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        multipart = headers.get(b"content-type", b"").lower().startswith(b"multipart/")
        limit = self.limit if multipart else self.json_limit
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await self._refuse(send, int(declared), multipart)
        seen = 0
        started = False

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
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
                await self._refuse(send, seen, multipart)

    async def _refuse(self, send, size: int, multipart: bool) -> None:
        if multipart:
            mb = (self.limit - MULTIPART_SLACK) / 1_000_000
            message = (
                f"upload of {size / 1_000_000:.1f} MB or more refused: the limit is {mb:.1f} MB "
                "(start the server with a larger --max-upload-mb to allow it)"
            )
        else:
            message = (
                f"request body of {size / 1_000_000:.1f} MB or more refused: arrows and settings take "
                f"less than {self.json_limit / 1_000_000:.0f} MB"
            )
        body = json.dumps({"error": message}).encode()
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


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    if status == 429:
        headers = {"Retry-After": str(RETRY_AFTER_S), **(headers or {})}
    return JSONResponse({"error": message}, status_code=status, headers=headers)


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


def _jpeg(image: np.ndarray) -> bytes:
    im = Image.fromarray(image)
    im.thumbnail((2048, 2048))  # display copy; coordinates stay in the photo's own pixels
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _upload_size(file: UploadFile) -> int:
    if file.size is not None:
        return int(file.size)
    f = file.file
    pos = f.tell()
    f.seek(0, io.SEEK_END)
    size = f.tell()
    f.seek(pos)
    return size


async def _read_upload(file: UploadFile, limit: int) -> bytes:
    # Read at most limit + 1 bytes: enough to tell "too large" without holding more.
    data = await file.read(limit + 1)
    await file.close()
    return data


# Arrows files from elsewhere: whatever the parser trips on is the file's fault, never a server error.
_BAD_FILE = (ValueError, TypeError, KeyError, IndexError, AttributeError, ArithmeticError, RecursionError)


def parse_arrows_upload(data: bytes, name: str, folder: Path, size: tuple[int, int]) -> dict:
    """An uploaded arrows file -> the page's arrows and notes; :class:`UserInputError` when unusable."""
    with tempfile.TemporaryDirectory(dir=folder) as d:
        path = Path(d) / "arrows.json"  # server-chosen name; the reader only sees this file
        path.write_bytes(data)
        try:
            doc = load_arrows_file(path)
            if len(doc.arrows) > MAX_ARROWS:
                raise UserInputError(
                    f"{name} has {len(doc.arrows)} arrows; the page takes at most {MAX_ARROWS}"
                )
            for a in doc.arrows:
                if len(a.points) > MAX_POINTS:
                    raise UserInputError(
                        f"{name}: {a.label()} has {len(a.points)} points; the page takes at most {MAX_POINTS}"
                    )
            arrows = doc.arrows_for_image(*size)
        except UserInputError as exc:
            message = str(exc).replace(str(path), name)
            raise UserInputError(message if name in message else f"{name}: {message}") from None
        except _BAD_FILE as exc:
            detail = str(exc).replace(str(path), name)[:200] or type(exc).__name__
            raise UserInputError(f"{name} is not a usable arrows file: {detail}") from None
    notes = []
    if doc.mask_path is not None:
        notes.append(f"{name} names a mask file ({doc.mask_path.name}); upload it with 'Upload mask'")
    if doc.mask_polygons:
        notes.append(f"{name} has polygons (a LabelMe mask); they are not imported, paint or upload the mask")
    if doc.image_size and tuple(doc.image_size) != size:
        notes.append(f"coordinates scaled from {doc.image_size[0]}x{doc.image_size[1]} to this photo")
    return {"arrows": [a.to_json() for a in arrows], "notes": notes}


def replay_command(s: Session, run: RunIn, model_dir: Path | None) -> str:
    """The command line that replays a drawing exported as ``drawing.json`` (and the mask as mask.png)."""
    return runs.cli_command(s.image_name, "drawing.json", run, model_dir, s.mask is not None, s.size)


# ---------------------------------------------------------------- the app


def create_app(
    model_dir: Path | None = None,
    max_upload_mb: float = 20.0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    work_root: Path | None = None,
    allowed_hosts: Sequence[str] = LOOPBACK_HOSTS,
    limits: Limits | None = None,
    show_paths: bool = True,
) -> FastAPI:
    """Build the app. Files live in a fresh folder under ``work_root`` (default: the system temp dir).

    ``allowed_hosts``: the host names a request's Host header may name (a page on a foreign domain
    that resolves to this server, DNS rebinding, names that domain); ``limits``: what one client may
    hold (:class:`~stillmotion.ui.limits.Limits`); ``show_paths``: whether the replay command names the
    model folder as given (for a server on loopback) or by its name only (for remote clients).
    """
    limits = limits or Limits()
    max_bytes = int(max_upload_mb * 1_000_000)
    hosts = {host_name(h) for h in allowed_hosts}
    keep_outputs = 3  # finished full runs kept per session; older files are deleted
    keep_records = 8  # finished jobs without files (cancelled, failed) whose state can still be asked

    conversions: dict[str, Job] = {}  # run id -> its GIF conversion
    conversions_lock = threading.Lock()

    def unlink_files(job: Job) -> None:
        for path in job.result.get("files", {}).values():
            with contextlib.suppress(FileNotFoundError):
                Path(path).unlink()
        if job.kind == "convert" and "gif" in job.result:
            with contextlib.suppress(FileNotFoundError):
                Path(job.result["gif"]).unlink()

    def forget(job: Job) -> None:
        queue.forget(job.id)
        with conversions_lock:
            conv = conversions.pop(job.id, None)
        if conv is not None:
            queue.cancel(conv)
            queue.forget(conv.id)
            unlink_files(conv)

    def on_finish(job: Job) -> None:
        s = store.peek(job.session_id)
        if s is None:
            # Its session is gone (expired or evicted): nothing of it may stay behind.
            unlink_files(job)
            forget(job)
            # One worker: no other job of the session runs, and its waiting ones were cancelled.
            shutil.rmtree(store.root / job.session_id, ignore_errors=True)
            return
        if job.kind == "convert":
            with conversions_lock:
                orphan = job not in conversions.values()
            if orphan:  # its run was deleted while the GIF was being made
                unlink_files(job)
                queue.forget(job.id)
            return
        # Delete outputs of older jobs of the same kind in this session: disk use stays bounded.
        finished = sorted(
            (j for j in queue.jobs_of(job.session_id) if j.kind != "convert" and j.finished is not None),
            key=lambda j: j.finished or 0,
        )
        with_files = [j for j in finished if j.state == "done" and j.kind == job.kind]
        # Two previews: the page may still be loading the one a newer preview has just replaced.
        limit = 2 if job.kind == "preview" else keep_outputs
        for old in with_files[:-limit]:
            unlink_files(old)
            forget(old)
        without = [j for j in finished if j.state != "done"]
        for old in without[:-keep_records]:
            forget(old)

    queue = JobQueue(on_finish, limits.max_queued_jobs, limits.max_jobs_per_session)

    def on_drop(s: Session) -> None:
        # Cancelled and forgotten: a removed session's queued work never runs, its running job stops
        # at its next progress report, and on_finish then deletes what it wrote.
        with conversions_lock:
            mine = [rid for rid, c in conversions.items() if c.session_id == s.id]
            for rid in mine:
                conversions.pop(rid)
        queue.cancel_session(s.id, forget=True)

    store = SessionStore(
        work_root,
        ttl=limits.session_ttl,
        max_sessions=limits.max_sessions,
        idle=limits.session_idle,
        on_drop=on_drop,
    )

    def held(sid: str) -> int:
        """Bytes session ``sid`` holds: its photo and mask, and what its unfinished jobs keep."""
        s = store.peek(sid)
        arrays = [] if s is None else [s.image, s.mask]
        for j in queue.jobs_of(sid):
            if j.finished is None:
                arrays.extend(j.holds)
        return nbytes(arrays)

    def replaced(s: Session, arrays: Sequence[np.ndarray | None]) -> int:
        """Bytes of ``arrays`` (held by ``s``) that are freed when the session lets go of them."""
        kept = {id(a) for j in queue.jobs_of(s.id) if j.finished is None for a in j.holds}
        return nbytes(a for a in arrays if a is not None and id(a) not in kept)

    budget = MemoryBudget(limits, held, store.ids)
    pool = RequestPool(limits)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        async def sweeper() -> None:
            while True:
                await asyncio.sleep(SWEEP_EVERY_S)
                await asyncio.to_thread(store.sweep)

        task = asyncio.create_task(sweeper())
        yield
        task.cancel()
        pool.close()
        queue.stop()
        store.close()

    app = FastAPI(title="stillmotion", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.store, app.state.queue, app.state.pool, app.state.budget = store, queue, pool, budget
    app.state.model_dir, app.state.max_bytes, app.state.limits = model_dir, max_bytes, limits
    app.add_middleware(BodyLimit, limit=max_bytes + MULTIPART_SLACK)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    index_html = (STATIC / "index.html").read_text(encoding="utf-8")

    def scrub(text: str) -> str:
        """No absolute path of this machine in what a client is shown."""
        text = text.replace(str(store.root), "<work folder>")
        if model_dir is not None:
            for form in {str(Path(model_dir).resolve()), str(model_dir)}:
                text = text.replace(form, Path(model_dir).name or "model")
        return text

    @app.exception_handler(UserInputError)
    async def _user_error(request: Request, exc: UserInputError):
        return _error(getattr(exc, "status", 400), scrub(str(exc)))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        parts = []
        for e in exc.errors()[:3]:
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body")
            parts.append(f"{where}: {e.get('msg', 'invalid')}")
        return _error(422, "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail))

    @app.middleware("http")
    async def _headers(request: Request, call_next):
        # DNS rebinding: a page on a hostile domain that resolves to this server names that domain.
        host = request.headers.get("host", "")
        if host_name(host) not in hosts:
            return _error(
                400,
                f"this server does not answer to the host name {host_name(host)[:100]!r} "
                "(start it with --allowed-host NAME to allow a name)",
            )
        # Browsers say which page sent a request; only this server's own page may use it.
        origin = request.headers.get("origin")
        if origin is not None:
            parts = urlsplit(origin)
            if (
                origin == "null"
                or parts.scheme not in ("http", "https")
                or parts.netloc.lower() != host.lower()
            ):
                return _error(403, f"requests from another site ({origin[:100]}) are refused")
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

    def photo_of(s: Session) -> tuple[np.ndarray, np.ndarray | None]:
        # One consistent look at the photo and mask: another request may replace them meanwhile.
        with s.lock:
            image, mask = s.image, s.mask
        if image is None:
            raise UserInputError("upload a photo first")
        return image, mask

    def job_of(s: Session, jid: str) -> Job:
        job = queue.get(jid) if is_id(jid) else None
        if job is None or job.session_id != s.id:
            raise HTTPException(404, "unknown job")
        return job

    # ------------------------------------------------------------ page and info

    @app.get("/", response_class=HTMLResponse)
    async def index() -> HTMLResponse:
        return HTMLResponse(index_html, headers={"Cache-Control": "no-cache"})

    @app.get("/api/info")
    async def info() -> dict:
        engines = runs.engine_status(model_dir)
        for status in engines.values():
            if "model" in status:  # the folder's name, not where it lies on this machine
                status["model"] = Path(status["model"]).name
            status["reason"] = scrub(status.get("reason", ""))
        held_bytes, reserved = budget.usage()
        return {
            "engines": engines,
            "long_methods": ["phased", "direct", "freenoise", "gen-l-video"],
            "max_upload_mb": max_upload_mb,
            "max_megapixels": max_pixels / 1e6,
            "defaults": RunIn().model_dump(exclude={"arrows", "kind"}),
            "queue": {"busy": len(queue.busy_sessions()), "waiting": queue.waiting()},
            "limits": {
                "max_sessions": limits.max_sessions,
                "max_queued_jobs": limits.max_queued_jobs,
                "max_jobs_per_session": limits.max_jobs_per_session,
                "max_memory_mb": limits.max_memory_mb,
                "max_session_memory_mb": limits.max_session_memory_mb,
            },
            "sessions": len(store),
            "memory_mb": round((held_bytes + reserved) / 1e6, 1),
        }

    @app.post("/api/session")
    async def new_session() -> dict:
        return {"session": store.create().id}

    # ------------------------------------------------------------ photo and mask

    @app.post("/api/s/{sid}/image")
    async def upload_image(sid: str, file: UploadFile = File(...)) -> dict:
        s = session(sid)
        name = _display_name(file.filename)
        size = _upload_size(file)
        # What decoding will hold (the decoded picture and one working copy), known from the header
        # alone: refused before a byte is decoded when the session or the server has no room.
        pixels = min(declared_pixels(file.file), max_pixels)
        with s.lock:
            old = (s.image, s.mask)
        with budget.reserve(s.id, size + 6 * pixels, keep=replaced(s, old)):
            data = await _read_upload(file, max_bytes)
            image = await pool.run(
                s.id, decode_image_upload, data, name, max_bytes=max_bytes, max_pixels=max_pixels
            )
            del data
            if store.peek(s.id) is None:
                raise HTTPException(404, "unknown or expired session: reload the page")
            with s.lock:
                # Kept in memory only: the engines take arrays, and nothing of the upload touches the disk.
                s.image, s.image_name, s.mask, s.mask_version = image, name, None, s.mask_version + 1
        h, w = image.shape[:2]
        return {"width": w, "height": h, "name": name}

    @app.get("/api/s/{sid}/image.jpg")
    async def get_image(sid: str) -> Response:
        s = session(sid)
        image, _ = photo_of(s)
        data = await pool.run(s.id, _jpeg, image)
        return Response(data, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    @app.post("/api/s/{sid}/mask")
    async def upload_mask(sid: str, file: UploadFile = File(...)) -> dict:
        s = session(sid)
        image, old = photo_of(s)
        name = _display_name(file.filename)
        size = _upload_size(file)
        h, w = image.shape[:2]
        pixels = min(declared_pixels(file.file), max_pixels)
        with budget.reserve(s.id, size + 8 * pixels + w * h, keep=replaced(s, [old])):
            data = await _read_upload(file, max_bytes)
            mask = await pool.run(
                s.id, decode_mask_upload, data, name, w, h, max_bytes=max_bytes, max_pixels=max_pixels
            )
            del data
            with s.lock:
                if s.image is not image:
                    raise UserInputError(
                        "the photo changed while the mask was uploaded: upload the mask again"
                    )
                s.mask, s.mask_version = mask, s.mask_version + 1
        return {"coverage": round(float(mask.mean()), 4), "version": s.mask_version}

    @app.delete("/api/s/{sid}/mask")
    async def clear_mask(sid: str) -> dict:
        s = session(sid)
        with s.lock:
            s.mask, s.mask_version = None, s.mask_version + 1
        return {"coverage": 1.0, "version": s.mask_version}

    @app.get("/api/s/{sid}/mask.png")
    async def get_mask(sid: str) -> Response:
        s = session(sid)
        _, mask = photo_of(s)
        if mask is None:
            raise HTTPException(404, "no mask")
        data = await pool.run(s.id, lambda: _png(mask.astype(np.uint8) * 255))
        return Response(data, media_type="image/png", headers={"Cache-Control": "no-store"})

    # ------------------------------------------------------------ motion field and arrows files

    @app.post("/api/s/{sid}/field")
    async def field(sid: str, body: ArrowsIn) -> Response:
        s = session(sid)
        image, mask = photo_of(s)
        arrows = _arrows(body.arrows, (image.shape[1], image.shape[0]))
        png, stats = await pool.run(s.id, render_field_preview, image, arrows, mask, body.strength)
        return Response(
            png,
            media_type="image/png",
            headers={"X-Field-Stats": json.dumps(stats), "Cache-Control": "no-store"},
        )

    def export_text(s: Session, arrows: list[Arrow], size: tuple[int, int]) -> str:
        with tempfile.TemporaryDirectory(dir=s.dir) as d:
            path = Path(d) / "drawing.json"
            save_arrows_json(path, arrows, image_size=size)
            return path.read_text(encoding="utf-8")

    @app.post("/api/s/{sid}/arrows/export")
    async def export_arrows(sid: str, body: ArrowsIn) -> Response:
        s = session(sid)
        image, _ = photo_of(s)
        size = (image.shape[1], image.shape[0])
        text = await pool.run(s.id, export_text, s, _arrows(body.arrows, size), size)
        return Response(
            text,
            media_type="application/json",
            headers={"Content-Disposition": 'attachment; filename="drawing.json"'},
        )

    @app.post("/api/s/{sid}/arrows/import")
    async def import_arrows(sid: str, file: UploadFile = File(...)) -> dict:
        s = session(sid)
        image, _ = photo_of(s)
        name = _display_name(file.filename)
        data = await _read_upload(file, MAX_ARROWS_FILE)
        if len(data) > MAX_ARROWS_FILE:
            raise UploadRejected(
                f"{name} is larger than {MAX_ARROWS_FILE // 1_000_000} MB: not an arrows file", 413
            )
        return await pool.run(s.id, parse_arrows_upload, data, name, s.dir, (image.shape[1], image.shape[0]))

    @app.post("/api/s/{sid}/command")
    async def command(sid: str, body: RunIn) -> dict:
        s = session(sid)
        photo_of(s)
        has_mask = s.mask is not None
        shown = model_dir if show_paths or model_dir is None else Path(Path(model_dir).name)
        return {"command": replay_command(s, body, shown), "has_mask": has_mask}

    # ------------------------------------------------------------ jobs

    @app.post("/api/s/{sid}/jobs")
    async def submit(sid: str, body: RunIn) -> dict:
        s = session(sid)
        image, mask = photo_of(s)
        arrows = _arrows(body.arrows, (image.shape[1], image.shape[0]))
        if not arrows:
            raise UserInputError("draw at least one arrow first")
        if body.kind == "full":  # refused here rather than in the queue (a preview runs the warp engine)
            status = runs.one_engine_status(body.engine, model_dir)
            if not status["available"]:
                raise UserInputError(f"the {body.engine} engine is unavailable: {status['reason']}")
        settings = runs.Settings.from_request(body, model_dir)

        def work(job: Job) -> dict:
            if store.peek(s.id) is None:
                raise JobCancelled()  # the session went while this waited: write nothing for nobody
            return runs.render(job, s, image, arrows, mask, settings)

        job = Job(s.id, body.kind, work, holds=(image, mask))
        queue.submit(job, replace=body.kind == "preview")  # only the newest preview matters
        shown = model_dir if show_paths or model_dir is None else Path(Path(model_dir).name)
        return status_of(s, job) | {"command": replay_command(s, body, shown)}

    def status_of(s: Session, job: Job) -> dict:
        out = {
            "id": job.id,
            "kind": job.kind,
            "state": job.state,
            "progress": round(job.progress, 4),
            "message": job.message,
            "position": queue.position(job),
            "error": scrub(job.error),
        }
        if job.state == "running" and job.started:
            out["elapsed"] = round(time.time() - job.started, 1)
        if job.state == "done":
            base = f"/api/s/{s.id}/jobs/{job.id}"
            out["files"] = {k: f"{base}/video.{k}" for k in job.result.get("files", {})}
            out["report"] = job.result.get("report", {})
        return out

    @app.get("/api/s/{sid}/jobs/{jid}")
    async def job_status(sid: str, jid: str) -> dict:
        s = session(sid)
        return status_of(s, job_of(s, jid))

    @app.post("/api/s/{sid}/jobs/{jid}/cancel")
    async def job_cancel(sid: str, jid: str) -> dict:
        s = session(sid)
        job = job_of(s, jid)
        queue.cancel(job)
        return status_of(s, job)

    # ------------------------------------------------------------ GIFs: made on request, never waited for

    def finished_run(s: Session, jid: str) -> Job:
        job = job_of(s, jid)
        if job.kind != "full" or job.state != "done":
            raise HTTPException(404, "no GIF for this job: only finished runs have one (previews: MP4 only)")
        return job

    def conversion(s: Session, job: Job, restart: bool) -> Job | None:
        """The run's GIF conversion, started when there is none (or, with ``restart``, a failed one)."""
        with conversions_lock:
            conv = conversions.get(job.id)
            again = conv is not None and (conv.state == "cancelled" or (restart and conv.state == "error"))
            if conv is None or again:
                src, dst = Path(job.result["files"]["mp4"]), s.file(f"{job.id}.gif")

                def convert(j: Job) -> dict:
                    out = runs.gif_from_mp4(j, src, dst)
                    job.result["files"]["gif"] = out["gif"]
                    return out

                conv = queue.submit(Job(s.id, "convert", convert))  # LimitReached: 429, nothing queued
                conversions[job.id] = conv
            return conv

    def gif_state(s: Session, job: Job, conv: Job | None) -> dict:
        ready = "gif" in job.result.get("files", {})
        out = {"state": "done" if ready else "none", "progress": 1.0 if ready else 0.0, "position": 0,
               "message": "", "error": ""}  # fmt: skip
        if conv is not None and not ready:
            out.update(
                state=conv.state, progress=round(conv.progress, 4), position=queue.position(conv),
                message=conv.message, error=scrub(conv.error),
            )  # fmt: skip
        if ready:
            out["file"] = f"/api/s/{s.id}/jobs/{job.id}/video.gif"
        return out

    @app.post("/api/s/{sid}/jobs/{jid}/gif")
    async def gif_start(sid: str, jid: str) -> dict:
        s = session(sid)
        job = finished_run(s, jid)
        conv = None if "gif" in job.result["files"] else conversion(s, job, restart=True)
        return gif_state(s, job, conv)

    @app.get("/api/s/{sid}/jobs/{jid}/gif")
    async def gif_progress(sid: str, jid: str) -> dict:
        s = session(sid)
        job = finished_run(s, jid)
        with conversions_lock:
            conv = conversions.get(job.id)
        return gif_state(s, job, conv)

    @app.get("/api/s/{sid}/jobs/{jid}/video.{ext}")
    async def job_file(sid: str, jid: str, ext: str) -> Response:
        s = session(sid)
        job = job_of(s, jid)
        path = job.result.get("files", {}).get(ext) if job.state == "done" else None
        if path is None and ext == "gif" and job.state == "done" and job.kind == "full":
            # Not made yet: start it and say so at once (202); the client asks again.
            conv = conversion(s, job, restart=False)
            state = gif_state(s, job, conv)
            if state["state"] == "error":
                return _error(500, f"the GIF could not be made: {state['error']}")
            return JSONResponse(state, status_code=202, headers={"Retry-After": str(RETRY_AFTER_S)})
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
