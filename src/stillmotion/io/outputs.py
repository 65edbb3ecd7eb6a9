"""Checking a command's outputs before any work: nothing the user did not name is ever lost.

Rules (the CLI and the Python API apply them before reading a frame):

* an output must not be one of the command's inputs, nor another output of the same command;
  paths are compared after resolving symlinks, ``..`` and the current folder;
* a file output must not be an existing folder, and its folder must be writable (a missing
  folder is created when the output is written);
* a folder output (PNG frames, an evaluation report) replaces an existing folder only when that
  folder is empty or one of ours: it holds the marker file :data:`OUTPUT_MARKER` that stillmotion
  writes into the folders it creates, or nothing but ``frame_NNNNN.png`` frames. Anything else is
  refused unless ``overwrite`` is set (``--overwrite`` on the command line). A folder output is
  never the current folder, nor a folder holding an input.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from stillmotion.errors import UserInputError

# Written into the folders stillmotion creates (eval reports), so that a re-run may replace them.
OUTPUT_MARKER = ".stillmotion-output"
# A PNG-frames output: what VideoWriter writes and nothing else.
_FRAME_FILE = re.compile(r"frame_\d{5,}\.png")
_SHOWN = 3

PathLike = str | os.PathLike


def resolved(path: PathLike) -> Path:
    """Absolute path with symlinks and ``..`` resolved (also for paths that do not exist yet)."""
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path)))).resolve()


def folder_is_ours(folder: PathLike) -> bool:
    """True when ``folder`` is empty, holds :data:`OUTPUT_MARKER`, or holds only PNG frames we write."""
    folder = Path(folder)
    if (folder / OUTPUT_MARKER).is_file():
        return True
    try:
        entries = list(folder.iterdir())
    except OSError:
        return False
    return all(_FRAME_FILE.fullmatch(p.name) and p.is_file() and not p.is_symlink() for p in entries)


def _foreign_entries(folder: Path) -> list[str]:
    names = sorted(p.name for p in folder.iterdir() if not _FRAME_FILE.fullmatch(p.name))
    shown = ", ".join(names[:_SHOWN]) + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")
    return [shown] if names else []


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_folder_replaceable(
    path: PathLike, label: str = "output folder", *, overwrite: bool = False
) -> None:
    """Refuse to replace an existing folder that is not ours (see the module docstring)."""
    shown = os.fspath(path)
    target = resolved(path)
    if target.exists() and not target.is_dir():
        raise UserInputError(
            f"{label} {shown}: {target} is an existing file, not a folder; give a folder name"
        )
    cwd = resolved(os.getcwd())
    if _within(cwd, target):
        raise UserInputError(
            f"{label} {shown}: {target} is the current folder or holds it; give a new folder name, "
            "e.g. frames/"
        )
    if target == Path(target.anchor) or target == resolved(Path.home()):
        raise UserInputError(f"{label} {shown}: {target} cannot be an output folder; give a new folder name")
    if not target.is_dir() or overwrite or folder_is_ours(target):
        return
    (foreign,) = _foreign_entries(target) or ["other files"]
    raise UserInputError(
        f"{label} {shown}: the folder exists and holds files stillmotion did not write ({foreign}); "
        "it would be replaced as a whole. Give a new folder name, empty it, or pass --overwrite "
        "(Python: overwrite=True) to replace it"
    )


def check_writable_location(path: PathLike, label: str = "output") -> None:
    """Refuse an output whose folder cannot be created or written (checked by creating a probe file)."""
    shown = os.fspath(path)
    target = resolved(path)
    ancestor = target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserInputError(f"{label} {shown}: {ancestor} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".stillmotion-probe-", dir=ancestor)
    except OSError as exc:
        reason = exc.strerror or exc
        raise UserInputError(f"{label} {shown}: cannot write in folder {ancestor} ({reason})") from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(probe)


def check_outputs(
    outputs: Sequence[tuple[str, PathLike | None, str]],
    inputs: Sequence[tuple[str, object]] = (),
    *,
    overwrite: bool = False,
) -> None:
    """Check a command's outputs against each other and its inputs before any work is done.

    ``outputs``: (label, path or None, ``"file"`` or ``"folder"``), e.g. ``("-o", "clip.mp4", "file")``.
    ``inputs``: (label, path); entries that are not paths (arrays, None) are skipped.
    Raises :class:`UserInputError` naming both options when two paths collide.
    """
    seen: list[tuple[str, str, Path, str]] = []
    for label, path, kind in outputs:
        if path is None:
            continue
        if kind not in ("file", "folder"):
            raise ValueError(f"output kind must be 'file' or 'folder', got {kind!r}")
        shown = os.fspath(path)
        if shown.strip() == "":
            raise UserInputError(f"{label}: the output name is empty")
        target = resolved(path)
        for other_label, other_shown, other, other_kind in seen:
            if target == other:
                raise UserInputError(
                    f"{label} {shown} is the same path as {other_label} {other_shown}; "
                    "give every output its own name"
                )
            if other_kind == "folder" and _within(target, other):
                raise UserInputError(
                    f"{label} {shown} lies inside the output folder {other_label} {other_shown}, "
                    "which is replaced as a whole; write it elsewhere"
                )
            if kind == "folder" and _within(other, target):
                raise UserInputError(
                    f"{other_label} {other_shown} lies inside the output folder {label} {shown}, "
                    "which is replaced as a whole; write it elsewhere"
                )
        seen.append((label, shown, target, kind))
    cwd = resolved(os.getcwd())
    for label, shown, target, kind in seen:
        if kind == "folder" and _within(cwd, target):
            raise UserInputError(
                f"{label} {shown}: {target} is the current folder or holds it; give a new folder name, "
                "e.g. frames/"
            )
    # Inputs first: even --overwrite never replaces an input.
    for in_label, in_path in inputs:
        if not isinstance(in_path, str | os.PathLike):
            continue
        source = resolved(in_path)
        for label, shown, target, kind in seen:
            same = source == target
            if not same and source.exists() and target.exists():
                with contextlib.suppress(OSError):
                    same = os.path.samefile(source, target)  # hard links
            if same:
                raise UserInputError(
                    f"{label} {shown} is also the input {in_label} {os.fspath(in_path)}: writing it would "
                    "destroy the input; choose another output name"
                )
            if kind == "folder" and _within(source, target):
                raise UserInputError(
                    f"{label} {shown}: the output folder holds the input {in_label} {os.fspath(in_path)} "
                    "and would replace it; choose another output folder"
                )
    for label, shown, target, kind in seen:
        if kind == "file":
            if target.is_dir():
                raise UserInputError(f"{label} {shown} is an existing folder; give a file name")
        else:
            check_folder_replaceable(shown, label, overwrite=overwrite)
        check_writable_location(shown, label)
