"""Progress reporting for long GC and verify runs, without tying the library to a UI.

A run asks its ``progress`` factory for one bar per phase: ``progress(desc, total)``
returns an object with ``update(n)`` and ``close()`` (a ``tqdm`` bar fits; the CLI
passes one). ``total`` may be ``None`` when the phase cannot know it in advance.
Runs move a bar by each item as it is done (not by batches), from worker threads
too: a bar must accept ``update`` from several threads.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol


class Bar(Protocol):
    def update(self, n: int = 1) -> object: ...

    def close(self) -> object: ...


ProgressFactory = Callable[[str, "int | None"], Bar]


class NullBar:
    """A bar that shows nothing (the library default)."""

    def update(self, n: int = 1) -> None:
        return None

    def close(self) -> None:
        return None


def no_progress(desc: str, total: int | None = None) -> Bar:
    return NullBar()


class LockedBar:
    """A bar whose ``update`` may be called from several threads (tqdm's counter is not locked)."""

    def __init__(self, bar: Bar):
        self._bar = bar
        self._lock = threading.Lock()

    def update(self, n: int = 1) -> None:
        with self._lock:
            self._bar.update(n)

    def close(self) -> None:
        with self._lock:
            self._bar.close()


def tqdm_progress(desc: str, total: int | None = None) -> Bar:
    """A tqdm bar on stderr, shown only on a terminal (what the CLI passes)."""
    import sys

    from tqdm import tqdm

    return LockedBar(tqdm(desc=desc, total=total, file=sys.stderr, disable=None, leave=False, unit=" items",
                          dynamic_ncols=True, mininterval=0.2))
