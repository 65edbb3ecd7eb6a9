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

# mkstemp creates 0600 files; give finished outputs the permissions a plain open() would.
_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``final``; on success move it onto ``final``.

    The temporary name keeps the final suffix so that writers that choose a format by extension
    (video encoders, PIL) behave the same. With ``directory=True`` a temporary folder is yielded.
    On any exception the temporary file or folder is removed and ``final`` is untouched.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{final.stem}.", suffix=f".tmp{final.suffix}", dir=final.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
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


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
