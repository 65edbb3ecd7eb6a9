"""The job queue: one worker thread renders one job at a time; everyone else waits their turn.

The machine has a few cores and one model; running two animations at once would only make both
slow. Quick previews go ahead of full runs that have not started yet (they take a second or two and
keep the page responsive), and within a kind jobs run first come, first served. Each job reports
progress through ``Job.report``; cancelling sets a flag the next report turns into ``JobCancelled``.

The queue is bounded: ``max_waiting`` jobs wait in all, and one session has at most
``max_per_session`` unfinished runs and GIF conversions (a session's previews replace each other,
so it has one at most); past that ``submit`` raises ``LimitReached`` (HTTP 429). A job lets go of
its inputs (``work`` and ``holds``, the photo) as soon as it is finished or cancelled.
"""

from __future__ import annotations

import itertools
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stillmotion.errors import UserInputError
from stillmotion.ui.limits import LimitReached, background_priority
from stillmotion.ui.sessions import new_id

PRIORITY = {"preview": 0, "full": 1, "convert": 1}


class JobCancelled(Exception):
    pass


@dataclass
class Job:
    session_id: str
    kind: str  # "preview" | "full" | "convert" (a finished run's MP4 to GIF)
    work: Callable[[Job], dict[str, Any]] | None
    holds: tuple[Any, ...] = ()  # the arrays the work keeps alive (photo, mask): counted as memory held
    id: str = field(default_factory=new_id)
    state: str = "queued"  # queued | running | done | error | cancelled
    progress: float = 0.0
    message: str = "waiting"
    result: dict[str, Any] = field(default_factory=dict)
    error: str = ""
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    _order: int = 0
    _cancel: threading.Event = field(default_factory=threading.Event)

    def report(self, fraction: float, message: str | None = None) -> None:
        """Called by the work function; raises :class:`JobCancelled` once the user cancelled."""
        if self._cancel.is_set():
            raise JobCancelled()
        self.progress = min(max(float(fraction), 0.0), 1.0)
        if message is not None:
            self.message = message

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()


class JobQueue:
    def __init__(
        self,
        on_finish: Callable[[Job], None] | None = None,
        max_waiting: int = 1000,
        max_per_session: int = 1000,
    ) -> None:
        """``on_finish(job)``: called once for every job that ends, run or cancelled before it ran."""
        self.max_waiting, self.max_per_session = max_waiting, max_per_session
        self._waiting: list[Job] = []
        self._jobs: dict[str, Job] = {}
        self._running: Job | None = None
        self._cv = threading.Condition()
        self._counter = itertools.count()
        self._stop = False
        self._on_finish = on_finish
        self._thread = threading.Thread(target=self._loop, name="stillmotion-ui-worker", daemon=True)
        self._thread.start()

    def submit(self, job: Job, replace: bool = False) -> Job:
        """Queue ``job``, or raise :class:`LimitReached` when the queue or the session is full.

        ``replace``: first cancel the session's unfinished jobs of the same kind (a newer preview
        makes the older one pointless), in the same step, so two requests cannot both get in.
        """
        ended: list[Job] = []
        refused: LimitReached | None = None
        with self._cv:
            if replace:
                for other in list(self._jobs.values()):
                    if other.session_id == job.session_id and other.kind == job.kind:
                        if other.finished is None and self._cancel_locked(other):
                            ended.append(other)
            mine = sum(
                1
                for j in self._jobs.values()
                if j.session_id == job.session_id and j.kind != "preview" and j.finished is None
                and not j.cancelled
            )  # fmt: skip
            if job.kind != "preview" and mine >= self.max_per_session:
                refused = LimitReached(
                    f"this session already has {mine} runs or GIFs queued or running (the limit is "
                    f"{self.max_per_session}): wait for one to finish or cancel it"
                )
            elif len(self._waiting) >= self.max_waiting:
                refused = LimitReached(
                    f"the queue is full ({len(self._waiting)} jobs waiting, the limit is "
                    f"{self.max_waiting}): try again when some have run"
                )
            else:
                job._order = next(self._counter)
                self._waiting.append(job)
                self._waiting.sort(key=lambda j: (PRIORITY[j.kind], j._order))
                self._jobs[job.id] = job
                self._cv.notify()
        self._end(ended)  # outside the lock, like every on_finish
        if refused is not None:
            job.work, job.holds = None, ()
            raise refused
        return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def position(self, job: Job) -> int:
        """0 while running or finished; otherwise how many jobs run before it starts (1 = next)."""
        with self._cv:
            if job not in self._waiting:
                return 0
            return self._waiting.index(job) + (1 if self._running is not None else 0)

    def cancel(self, job: Job) -> None:
        with self._cv:
            ended = [job] if self._cancel_locked(job) else []
        self._end(ended)

    def _cancel_locked(self, job: Job) -> bool:
        """Flag ``job``; a waiting one ends now (True), a running one at its next report."""
        job._cancel.set()
        if job not in self._waiting:
            return False
        self._waiting.remove(job)
        job.state, job.message, job.finished = "cancelled", "cancelled", time.time()
        # It will never run: let go of the photo it holds now, not when its record is forgotten.
        job.work, job.holds = None, ()
        return True

    def _end(self, jobs: list[Job]) -> None:
        # Outside the lock: on_finish looks at the queue again.
        for job in jobs:
            if self._on_finish is not None:
                try:
                    self._on_finish(job)
                except Exception:
                    traceback.print_exc()

    def cancel_session(self, session_id: str, kind: str | None = None, forget: bool = False) -> None:
        """Cancel every unfinished job of a session (of one ``kind``, or all); ``forget``: also drop
        every record of the session's jobs (the session is gone)."""
        ended = []
        with self._cv:
            for job in list(self._jobs.values()):
                if job.session_id != session_id or (kind is not None and job.kind != kind):
                    continue
                if job.finished is None and self._cancel_locked(job):
                    ended.append(job)
                if forget:
                    self._jobs.pop(job.id, None)
        self._end(ended)

    def waiting(self) -> int:
        with self._cv:
            return len(self._waiting)

    def busy_sessions(self) -> set[str]:
        with self._cv:
            out = {j.session_id for j in self._waiting}
            if self._running is not None:
                out.add(self._running.session_id)
            return out

    def jobs_of(self, session_id: str) -> list[Job]:
        with self._cv:
            return [j for j in self._jobs.values() if j.session_id == session_id]

    def forget(self, job_id: str) -> None:
        with self._cv:
            self._jobs.pop(job_id, None)

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Block until nothing waits or runs (for tests and shutdown)."""
        end = time.monotonic() + timeout
        with self._cv:
            while self._waiting or self._running is not None:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(left)
        return True

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            for job in self._waiting:
                job._cancel.set()
                job.state, job.work, job.holds = "cancelled", None, ()
            self._waiting.clear()
            if self._running is not None:
                self._running._cancel.set()
            self._cv.notify_all()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        background_priority()  # renders yield the CPU to the threads answering requests
        while True:
            with self._cv:
                while not self._waiting and not self._stop:
                    self._cv.wait()
                if self._stop:
                    return
                job = self._waiting.pop(0)
                self._running = job
                job.state, job.started, job.message = "running", time.time(), "starting"
            try:
                job.result = job.work(job) or {}
                job.state, job.progress, job.message = "done", 1.0, "done"
            except JobCancelled:
                job.state, job.message = "cancelled", "cancelled"
            except UserInputError as exc:
                job.state, job.error, job.message = "error", str(exc), "failed"
            except Exception as exc:  # a bug or an engine failure: the page gets the line, the log the trace
                traceback.print_exc()
                job.state, job.error, job.message = "error", f"{type(exc).__name__}: {exc}", "failed"
            finally:
                job.finished = time.time()
                job.work, job.holds = None, ()  # they hold the photo: let it go with the job done
                self._end([job])  # before the queue counts as idle: its clean-up is part of the job
                with self._cv:
                    self._running = None
                    self._cv.notify_all()
