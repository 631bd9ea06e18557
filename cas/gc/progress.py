"""Progress reporting for long GC and verify runs, without tying the library to a UI.

A run asks its ``progress`` factory for one bar per phase: ``progress(desc, total)``
returns an object with ``update(n)`` and ``close()`` (a ``tqdm`` bar fits; the CLI
passes one). ``total`` may be ``None`` when the phase cannot know it in advance.
"""

from __future__ import annotations

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


def tqdm_progress(desc: str, total: int | None = None) -> Bar:
    """A tqdm bar on stderr, shown only on a terminal (what the CLI passes)."""
    import sys

    from tqdm import tqdm

    return tqdm(desc=desc, total=total, file=sys.stderr, disable=None, leave=False, unit=" items",
                dynamic_ncols=True, mininterval=0.5)
