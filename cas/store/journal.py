"""The journal: every committed mutation as an event (appended in its commit txn by the Store),
read by ``GET /api/events`` and ``cas events``. ``follow_events`` is the one follow loop both use.
A mixin of ``Store``."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from .records import Event

log = logging.getLogger(__name__)

POLL = 0.5  # seconds between looks for other processes' commits when the index cannot tell of them
WATCHED_POLL = 5.0  # ... when it can: a safety net only


class JournalMixin:
    """Reading and following the journal (see the module docstring); mixed into ``Store``."""

    # -- journal and figures --------------------------------------------------------------------
    def events(self, after: int = 0, limit: int = 1000) -> list[Event]:
        out = []
        with self.index.read() as t:
            for rec in t.iter_events(after):
                if len(out) >= limit:
                    break
                out.append(Event(**rec))
        return out

    def follow_events(self, after: int, *, limit: int = 1000, wait: float = 0.0,
                      visible: Callable[[Event], bool] | None = None, scan_cap: int = 50_000,
                      on_wait: Callable[[bool], None] | None = None) -> tuple[list[Event], int]:
        """The next events after ``after`` that ``visible`` accepts, and the cursor to go on from.

        The one follow loop of the journal (``GET /api/events`` and ``cas events --follow``):
        reads pages until it has found some events, has looked at ``scan_cap`` events, or — when
        nothing was found — ``wait`` seconds have passed without a new commit. The cursor also
        moves past commits that have no event of their own (multipart parts) and past events that
        ``visible`` refused, so the caller never scans them again. ``on_wait(True/False)`` brackets
        each wait (a gauge of waiting polls).
        """
        deadline = time.monotonic() + wait
        cursor = after
        found: list[Event] = []
        scanned = 0
        for _ in range(10_000):  # bounded: each round scans events, or waits until the deadline
            head = self.last_seq()  # read first: every seq <= head is visible to the next read
            batch = self.events(after=cursor, limit=limit)
            # seqs without an event (multipart parts) must not make wait_events return at once
            batch_end = head if len(batch) < limit else batch[-1].seq
            for ev in batch:
                cursor = ev.seq
                if visible is None or visible(ev):
                    found.append(ev)
                    if len(found) >= limit:
                        break
            if len(found) < limit:
                cursor = max(cursor, batch_end)
            scanned += len(batch)
            if found or scanned >= scan_cap:
                break
            if len(batch) == limit:
                continue  # a full page of refused events: there may be more right behind it
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if on_wait is not None:
                on_wait(True)
            try:
                self.wait_events(cursor, left)
            finally:
                if on_wait is not None:
                    on_wait(False)
        return found, cursor

    def last_seq(self) -> int:
        """The newest commit sequence number (events, bindings and parts all take one)."""
        with self.index.read() as t:
            return t.last_seq()

    def wait_events(self, after: int, timeout: float) -> None:
        """Block until a commit newer than ``after`` exists: woken at once by this process's commits,
        and by those of other processes and nodes when the index tells of them (``Index.watch``:
        PostgreSQL's NOTIFY), else found by polling every ``POLL`` seconds."""
        deadline = time.monotonic() + timeout
        interval = WATCHED_POLL if self._watched() else POLL
        while True:
            with self.index.read() as t:
                if t.last_seq() > after:
                    return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            with self._changed:
                self._changed.wait(min(left, interval))

    def _watched(self) -> bool:
        """Whether the index wakes waiters on other processes' commits (asked once, at the first wait)."""
        with self._changed:
            if self._watching is None:
                self._watching = self.index.watch(self._notify)
            return self._watching
