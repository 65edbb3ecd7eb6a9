"""Per-browser state on the server, keyed by random ids, with files under a server-chosen folder.

Every file the app writes lives in ``<root>/<session id>/`` under a name the server generates
(``photo.png``, ``<job id>.mp4``...). Ids are random tokens checked against this store, so a
request can only ever name something the server created; nothing a client sends becomes a path.
Idle sessions are removed (with their files) after ``ttl`` seconds.
"""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")


def new_id() -> str:
    return secrets.token_urlsafe(18)


def is_id(text: str) -> bool:
    return bool(_ID.match(text))


@dataclass
class Session:
    id: str
    dir: Path
    last_seen: float = field(default_factory=time.monotonic)
    image: np.ndarray | None = None  # RGB uint8 (H, W, 3) as uploaded (EXIF rotation applied)
    image_name: str = "photo.jpg"  # display only (sanitised); never used as a path
    mask: np.ndarray | None = None  # bool (H, W) at the image's size; None = everything may move
    mask_version: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def size(self) -> tuple[int, int] | None:
        return None if self.image is None else (int(self.image.shape[1]), int(self.image.shape[0]))

    def file(self, name: str) -> Path:
        """A path inside this session's folder; ``name`` is always server-made."""
        return self.dir / name


class SessionStore:
    # A session holds its photo in memory (a 12 MP photo is 36 MB): the oldest goes past this many.
    def __init__(self, root: Path | None = None, ttl: float = 3 * 3600, max_sessions: int = 40) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="stillmotion-ui-", dir=root))
        self.ttl = ttl
        self.max_sessions = max_sessions
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self) -> Session:
        self.sweep()
        with self._lock:
            if len(self._sessions) >= self.max_sessions:
                oldest = min(self._sessions.values(), key=lambda s: s.last_seen)
                self._drop(oldest.id)
            sid = new_id()
            d = self.root / sid
            d.mkdir()
            s = Session(sid, d)
            self._sessions[sid] = s
            return s

    def get(self, sid: str) -> Session | None:
        if not is_id(sid):
            return None
        with self._lock:
            s = self._sessions.get(sid)
            if s is not None:
                s.last_seen = time.monotonic()
            return s

    def sweep(self, busy: set[str] | None = None) -> int:
        """Remove sessions idle for longer than ``ttl`` (not those in ``busy``); return how many."""
        now = time.monotonic()
        with self._lock:
            old = [
                sid
                for sid, s in self._sessions.items()
                if now - s.last_seen > self.ttl and sid not in (busy or ())
            ]
            for sid in old:
                self._drop(sid)
        return len(old)

    def _drop(self, sid: str) -> None:
        s = self._sessions.pop(sid, None)
        if s is not None:
            shutil.rmtree(s.dir, ignore_errors=True)

    def close(self) -> None:
        with self._lock:
            self._sessions.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    def __len__(self) -> int:
        return len(self._sessions)
