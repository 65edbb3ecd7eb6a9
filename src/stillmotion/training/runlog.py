"""What a training run writes as it goes: the CSV loss log and the step-time split.

``train_log.csv`` has one row per optimizer step: ``step, loss, lr, steps_per_s, data_wait`` (plus
any trainer-specific columns). ``data_wait`` is the share of the step's wall time spent blocked on
the data loader. When a run resumes from the checkpoint at step k, rows after k (written by the
killed run after its last checkpoint) are dropped first, so the log of a resumed run is the log of
an unbroken one: no step missing, none twice.
"""

from __future__ import annotations

import csv
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from stillmotion.errors import UserInputError
from stillmotion.io.atomic import atomic_path

from .checkpoint import latest_checkpoint

BASE_FIELDS = ("step", "loss", "lr", "steps_per_s", "data_wait")


def read_csv_log(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


class CsvLog:
    """Append-only CSV log, flushed after every row; ``resume_step`` trims rows written after it."""

    def __init__(
        self, path: str | Path, fields: Sequence[str] = BASE_FIELDS, *, resume_step: int | None = None,
        enabled: bool = True,
    ) -> None:
        self.path = Path(path)
        self.fields = list(fields)
        self._file = None
        if not enabled:
            return
        rows: list[dict[str, str]] = []
        if resume_step is not None and self.path.is_file():
            rows = [r for r in read_csv_log(self.path) if int(r["step"]) <= resume_step]
        # Rewrite (atomically) the kept part, then append to it.
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=self.fields, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
        self._file = open(self.path, "a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=self.fields, extrasaction="ignore")

    def write(self, **row: Any) -> None:
        if self._file is None:
            return
        self._writer.writerow({k: (f"{v:.8g}" if isinstance(v, float) else v) for k, v in row.items()})
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> CsvLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class StepTimer:
    """Splits each step's wall time into waiting for data and the rest.

    ``batch = timer.fetch(iterator)`` times the wait; ``timer.end_step()`` closes the step and returns
    (steps_per_s over the recent window, data-wait share of the recent window).
    """

    def __init__(self, window: int = 20) -> None:
        self.window = window
        self._start = time.perf_counter()
        self._wait = 0.0
        self._recent: list[tuple[float, float]] = []
        self._all: list[tuple[float, float]] = []  # (step seconds, data-wait seconds) of every step

    def fetch(self, iterator: Iterator[Any]) -> Any:
        t = time.perf_counter()
        item = next(iterator)
        self._wait += time.perf_counter() - t
        return item

    def end_step(self) -> tuple[float, float]:
        now = time.perf_counter()
        dt = now - self._start
        self._recent = (self._recent + [(dt, self._wait)])[-self.window :]
        self._all.append((dt, self._wait))
        self._start, self._wait = now, 0.0
        t = sum(d for d, _ in self._recent)
        return len(self._recent) / max(t, 1e-12), sum(w for _, w in self._recent) / max(t, 1e-12)

    def summary(self, skip: int = 0) -> dict[str, float]:
        """Totals over this run's steps (``skip``: leave out that many first steps, e.g. warm-up)."""
        times = self._all[skip:]
        total = sum(d for d, _ in times)
        return {
            "steps": len(times),
            "seconds": total,
            "steps_per_s": len(times) / max(total, 1e-12),
            "data_wait": sum(w for _, w in times) / max(total, 1e-12),
        }


def start_output_dir(
    output_dir: str | Path, *, resume: bool, overwrite: bool = False, clean: bool = True
) -> Path | None:
    """Check ``output_dir`` for a fresh or resumed run; return the checkpoint to resume from (or None).

    A fresh run refuses a folder that already holds checkpoints (``--resume`` continues it,
    ``overwrite=true`` starts over); ``--resume`` without any checkpoint starts from step 0, so a
    job script can always pass ``--resume``. Every process may call it (same verdict everywhere);
    only the one with ``clean=True`` deletes old checkpoints on overwrite.
    """
    out = Path(output_dir)
    ckpt = latest_checkpoint(out)
    if resume:
        return ckpt
    if ckpt is not None and not overwrite:
        raise UserInputError(
            f"output_dir {out} already holds checkpoints (latest {ckpt.name}): pass --resume to continue it, "
            f"overwrite=true to start over, or choose another output_dir"
        )
    if ckpt is not None and clean:
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return None
