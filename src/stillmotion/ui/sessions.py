"""Per-browser state on the server, keyed by random ids, with files under a server-chosen folder.

Every file the app writes lives in ``<root>/<session id>/`` under a name the server generates
(``<job id>.mp4``...). Ids are random tokens checked against this store, so a request can only
ever name something the server created; nothing a client sends becomes a path.

A session is removed (with its files, and its jobs cancelled through ``on_drop``) once unseen for
``ttl`` seconds. When all ``max_sessions`` places are taken, a new session may take the place of
one that is idle (unseen for ``idle`` seconds: the page asks about its jobs every few hundred
milliseconds while it waits for them, so an open page with work going on is never idle); an
active session is never evicted for someone else's: the newcomer gets
:class:`~stillmotion.ui.limits.LimitReached` (HTTP 429).
"""

from __future__ import annotations

import re
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from stillmotion.ui.limits import LimitReached

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
    def __init__(
        self,
        root: Path | None = None,
        ttl: float = 3 * 3600,
        max_sessions: int = 40,
        idle: float = 15 * 60,
        on_drop: Callable[[Session], None] | None = None,
    ) -> None:
        """``on_drop(session)``: called once a session is removed (its jobs are to be cancelled)."""
        self.root = Path(tempfile.mkdtemp(prefix="stillmotion-ui-", dir=root))
        self.ttl, self.idle, self.max_sessions = ttl, idle, max_sessions
        self._on_drop = on_drop
        self._sessions: dict[str, Session] = {}
        self._lock = threading.Lock()

    def create(self) -> Session:
        """A new session; raises :class:`LimitReached` when every place is taken by an active one."""
        self.sweep()
        dropped = None
        with self._lock:
            if len(self._sessions) >= self.max_sessions:
                now = time.monotonic()
                idle = [s for s in self._sessions.values() if now - s.last_seen > self.idle]
                if not idle:
                    raise LimitReached(
                        f"the server already has {len(self._sessions)} sessions in use (the limit is "
                        f"{self.max_sessions}): try again in a few minutes, or close other tabs of this app"
                    )
                dropped = self._pop(min(idle, key=lambda s: s.last_seen).id)
            sid = new_id()
            d = self.root / sid
            d.mkdir()
            s = Session(sid, d)
            self._sessions[sid] = s
        self._dropped([dropped] if dropped else [])
        return s

    def get(self, sid: str) -> Session | None:
        if not is_id(sid):
            return None
        with self._lock:
            s = self._sessions.get(sid)
            if s is not None:
                s.last_seen = time.monotonic()
            return s

    def ids(self) -> list[str]:
        with self._lock:
            return list(self._sessions)

    def peek(self, sid: str) -> Session | None:
        """The session without counting it as seen (for the server's own bookkeeping)."""
        with self._lock:
            return self._sessions.get(sid)

    def sweep(self, busy: set[str] | None = None) -> int:
        """Remove sessions unseen for longer than ``ttl`` (not those in ``busy``), and folders left by
        sessions already removed; return how many sessions."""
        busy = busy or set()
        now = time.monotonic()
        with self._lock:
            old = [
                sid for sid, s in self._sessions.items() if now - s.last_seen > self.ttl and sid not in busy
            ]
            dropped = [self._pop(sid) for sid in old]
            live = set(self._sessions)
        self._dropped(dropped)
        # A job that was running when its session went may have re-created the folder to write in.
        for d in self.root.iterdir() if self.root.is_dir() else ():
            if d.name not in live:
                shutil.rmtree(d, ignore_errors=True) if d.is_dir() else d.unlink(missing_ok=True)
        return len(old)

    def drop(self, sid: str) -> bool:
        with self._lock:
            s = self._pop(sid)
        self._dropped([s] if s else [])
        return s is not None

    def _pop(self, sid: str) -> Session | None:
        return self._sessions.pop(sid, None)

    def _dropped(self, sessions: list[Session]) -> None:
        for s in sessions:
            # The photo and mask go with the session, whoever still holds the Session object.
            s.image = s.mask = None
            if self._on_drop is not None:
                self._on_drop(s)
            shutil.rmtree(s.dir, ignore_errors=True)

    def close(self) -> None:
        with self._lock:
            self._sessions.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    def __len__(self) -> int:
        return len(self._sessions)
