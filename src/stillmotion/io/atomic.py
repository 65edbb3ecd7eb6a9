"""Atomic output: write to a temporary sibling, rename into place only on success.

A crash or a user error half-way never leaves a truncated file (or folder) under the final name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from stillmotion.errors import UserInputError
from stillmotion.io.outputs import OUTPUT_MARKER, check_folder_replaceable

# mkstemp creates 0600 files; give finished outputs the permissions a plain open() would.
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(
    final: str | os.PathLike,
    *,
    directory: bool = False,
    replace_foreign: bool = True,
    marker: bool = False,
) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; on success move it onto ``final``.

    The temporary name keeps the final suffix so that writers that choose a format by extension
    (video encoders, PIL) behave the same. With ``directory=True`` a temporary folder is yielded.
    On any exception the temporary file or folder is removed and ``final`` is untouched.

    Folders: ``replace_foreign=False`` refuses (before and after the work) to replace an existing
    folder that is not ours (:func:`stillmotion.io.outputs.folder_is_ours`); ``marker=True`` writes
    :data:`stillmotion.io.outputs.OUTPUT_MARKER` into the new folder so that a re-run may replace it.
    """
    # Absolute, so that "." or "out/.." name a real folder and its parent.
    final = Path(os.path.abspath(final)) if directory else Path(final)
    if directory and not replace_foreign:
        check_folder_replaceable(final)
    if not directory and final.is_dir():
        raise UserInputError(f"output {final} is an existing folder; give a file name")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        if directory:
            tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
        else:
            fd, name = tempfile.mkstemp(
                prefix=f".{final.stem}.", suffix=f".tmp{final.suffix}", dir=final.parent
            )
            os.close(fd)
            tmp = Path(name)
    except OSError as exc:
        raise UserInputError(f"cannot write {final}: {exc.strerror or exc}") from None
    try:
        if directory and marker:
            (tmp / OUTPUT_MARKER).write_text("written by stillmotion; a re-run may replace this folder\n")
        yield tmp
        if directory and not replace_foreign:
            check_folder_replaceable(final)  # it may have changed while the work ran
    except BaseException:
        _remove(tmp)
        raise
    try:
        _commit(tmp, final, directory)
    except OSError as exc:
        _remove(tmp)
        raise UserInputError(f"cannot write {final}: {exc.strerror or exc}") from None


def _commit(tmp: Path, final: Path, directory: bool) -> None:
    if directory:
        if final.exists():
            # A folder cannot be replaced atomically by rename; move the old one aside first.
            old = final.with_name(f".{final.name}.old")
            _remove(old)
            final.rename(old)
            tmp.rename(final)
            _remove(old)
        else:
            tmp.rename(final)
    else:
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, final)


class AtomicGroup:
    """Several outputs that appear together: each is written under a temporary name, and all are
    renamed into place only after the last one was written. On failure every temporary is removed.

        with AtomicGroup() as group:
            write_report(group.path("report.json"))
            write_picture(group.path("field.png"))
        # both files exist now, or (on an exception) neither was touched
    """

    def __init__(self) -> None:
        self._stack = contextlib.ExitStack()

    def path(self, final: str | os.PathLike, *, directory: bool = False, **options) -> Path:
        """A temporary path that becomes ``final`` when the group closes without error."""
        return self._stack.enter_context(atomic_path(final, directory=directory, **options))

    def enter(self, context):
        """Join a context manager (e.g. a video writer) whose exit is its own commit or abort."""
        return self._stack.enter_context(context)

    def __enter__(self) -> AtomicGroup:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        return bool(self._stack.__exit__(exc_type, exc, tb))


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
