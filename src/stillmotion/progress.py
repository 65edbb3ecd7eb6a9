"""Progress reporting shared by every long-running stage.

Library functions take ``progress: bool``; when true they show a tqdm bar on stderr. The CLI turns
it on; Python callers and tests leave it off by default.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress_iter(
    iterable: Iterable[T], *, total: int | None = None, desc: str = "", enabled: bool = True, unit: str = "it"
) -> Iterator[T]:
    """Iterate with a progress bar on stderr when ``enabled``."""
    if not enabled:
        yield from iterable
        return
    with tqdm(iterable, total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False) as bar:
        yield from bar


def progress_bar(*, total: int | None, desc: str = "", enabled: bool = True, unit: str = "it") -> tqdm:
    """A manual bar (``.update(n)``); disabled bars are no-ops."""
    return tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True, leave=False, disable=not enabled)
