"""The web app's limits: what one client may hold, so that the server stays up for everyone else.

Every limit is answered the same way: HTTP 429 with a JSON ``{"error": ...}`` that names the limit
and what to do (wait, cancel, or the ``stillmotion ui`` option that raises it). Nothing already
accepted is ever taken away to make room for someone else: an active session is never evicted,
a queued job is never dropped.

``MemoryBudget`` counts the bytes a session holds (its decoded photo and mask, the photos its
unfinished jobs keep, uploads being decoded) against a per-session and a global limit.
``RequestPool`` runs request work (decoding uploads, field pictures) on a few threads of its own,
with a bounded number waiting: a flood of such requests gets 429s instead of taking every server
thread, so the page and ``/api/info`` still answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from stillmotion.errors import UserInputError

T = TypeVar("T")
MB = 1_000_000


@dataclass(frozen=True)
class Limits:
    """Defaults fit a desktop with a few GB to spare; ``stillmotion ui`` has an option for each."""

    max_sessions: int = 40  # browser tabs with a session, all clients together
    session_idle: float = 15 * 60  # a session with no unfinished job, unseen this long, may make room
    session_ttl: float = 3 * 3600  # a session unseen this long is removed, with its files
    max_queued_jobs: int = 32  # jobs waiting in the queue, all sessions together
    max_jobs_per_session: int = 4  # unfinished runs and GIF conversions of one session
    max_memory_mb: float = 2000.0  # photos, masks and uploads held, all sessions together
    max_session_memory_mb: float = 500.0  # the same for one session
    request_workers: int = 2  # threads doing request work (decoding, field pictures)
    max_requests: int = 16  # request work running or waiting, all sessions together
    max_requests_per_session: int = 4

    def __post_init__(self) -> None:
        for name in (
            "max_sessions", "max_queued_jobs", "max_jobs_per_session", "request_workers", "max_requests",
            "max_requests_per_session",
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise UserInputError(f"limit {name} must be at least 1, got {getattr(self, name)}")
        for name in ("session_idle", "session_ttl", "max_memory_mb", "max_session_memory_mb"):
            value = getattr(self, name)
            if not (value >= 0 and value < float("inf")):
                raise UserInputError(f"limit {name} must be a finite number >= 0, got {value}")


class LimitReached(UserInputError):
    """A request refused because a limit is reached; the server answers 429 with the message."""

    status = 429


def nbytes(arrays: Iterable[np.ndarray | None]) -> int:
    """Bytes of the distinct arrays given (the same photo held twice counts once)."""
    seen: dict[int, np.ndarray] = {}
    for a in arrays:
        if a is not None:
            seen[id(a)] = a
    return sum(a.nbytes for a in seen.values())


def _mb(n: float) -> str:
    return f"{n / MB:.0f} MB"


class MemoryBudget:
    """Reservations against the bytes held per session and in all.

    ``held(sid)`` is supplied by the server (it knows the sessions and the queue): the bytes a
    session holds now, reservations excluded. A reservation covers an upload from before its bytes
    are read until its decoded array is in the session (then ``held`` counts it).
    """

    def __init__(self, limits: Limits, held: Callable[[str], int], sessions: Callable[[], list[str]]) -> None:
        self.per_session = int(limits.max_session_memory_mb * MB)
        self.total = int(limits.max_memory_mb * MB)
        self._held, self._sessions = held, sessions
        self._reserved: Counter[str] = Counter()
        self._lock = threading.Lock()

    def usage(self) -> tuple[int, int]:
        """(bytes held, bytes reserved) over all sessions."""
        with self._lock:
            return sum(self._held(s) for s in self._sessions()), sum(self._reserved.values())

    def session_usage(self, sid: str) -> int:
        with self._lock:
            return self._held(sid) + self._reserved[sid]

    @contextlib.contextmanager
    def reserve(self, sid: str, need: int, keep: int = 0) -> Iterator[None]:
        """Hold ``need`` bytes for session ``sid`` for the ``with`` block, or raise :class:`LimitReached`.

        ``keep``: bytes of what the session holds now that the new data replaces (freed once it is
        in), so replacing a photo by one of the same size is not refused.
        """
        with self._lock:
            mine = self._held(sid) + self._reserved[sid]
            if mine - keep + need > self.per_session:
                raise LimitReached(
                    f"this session holds {_mb(mine)} of photos and queued work and this upload needs "
                    f"{_mb(need)} more; the limit for one session is {_mb(self.per_session)}: wait for "
                    "your queued runs to finish or cancel them (or start the server with a larger "
                    "--max-session-memory-mb)"
                )
            everyone = sum(self._held(s) for s in self._sessions()) + sum(self._reserved.values())
            if everyone - keep + need > self.total:
                raise LimitReached(
                    f"the server holds {_mb(everyone)} of photos for all its users and this upload needs "
                    f"{_mb(need)} more; the limit is {_mb(self.total)}: try again in a few minutes "
                    "(or start the server with a larger --max-memory-mb)"
                )
            self._reserved[sid] += need
        try:
            yield
        finally:
            with self._lock:
                self._reserved[sid] -= need
                if self._reserved[sid] <= 0:
                    del self._reserved[sid]


def background_priority(niceness: int = 10) -> None:
    """Lower the calling thread's CPU priority (Linux: threads have their own): decoding and
    rendering then yield to the thread that answers requests, so the page stays quick under load."""
    get_id = getattr(threading, "get_native_id", None)
    if get_id is None or not hasattr(os, "setpriority"):
        return
    with contextlib.suppress(OSError):
        os.setpriority(
            os.PRIO_PROCESS, get_id(), min(19, os.getpriority(os.PRIO_PROCESS, get_id()) + niceness)
        )


class RequestPool:
    """Request work on a bounded pool of threads of its own; over the limits, 429 at once.

    Used from async endpoints on the event loop thread only, so the counters need no lock. A slot is
    given back when the work itself ends (not when the client goes away), so the counts are true.
    """

    def __init__(self, limits: Limits) -> None:
        self.max_total, self.max_per_session = limits.max_requests, limits.max_requests_per_session
        self._executor = ThreadPoolExecutor(
            limits.request_workers,
            thread_name_prefix="stillmotion-ui-request",
            initializer=background_priority,
        )
        self._count = 0
        self._per: Counter[str] = Counter()

    @property
    def in_flight(self) -> int:
        return self._count

    async def run(self, sid: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        if self._count >= self.max_total:
            raise LimitReached(
                f"the server is busy with {self._count} other requests (limit {self.max_total}): "
                "try again in a moment"
            )
        if self._per[sid] >= self.max_per_session:
            raise LimitReached(
                f"this session already has {self._per[sid]} requests in progress "
                f"(limit {self.max_per_session}): wait for them to finish"
            )
        self._count += 1
        self._per[sid] += 1
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

        def release(_: object) -> None:
            self._count -= 1
            self._per[sid] -= 1
            if self._per[sid] <= 0:
                del self._per[sid]

        future.add_done_callback(release)
        # Shielded: a client that goes away does not cancel work already started, and its slot is
        # counted until that work really ends.
        return await asyncio.shield(future)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
