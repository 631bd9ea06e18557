"""The rules that keep GC from losing data (DESIGN §4), in one place.

- **Grace.** A condemned block is deleted only once it has stayed condemned for
  ``min_age`` seconds (readers in flight finish in that time), and a block file
  with no index row (an orphan from a crashed or still-running writer) only
  once it is ``min_age`` old. Temp files of interrupted block writes are removed
  after ``max(min_age, TEMP_MIN_AGE)``: a live write renames its temp file within
  milliseconds, so even ``--min-age 0`` must not race a write in progress.
- **Leases.** A pin counts only while its writer's lease (heartbeat expiry in
  ``writers``) lies in the future; a pin without a writer row is dead.
- **Orphan deletion row.** Before an orphan's file is deleted, GC inserts a
  ``deleting`` row for it (in a write txn that sees no row and no live pin), so
  a writer that pins the id meanwhile waits and writes it again, exactly as for
  an indexed block. Such rows have ``stored_size == raw_len == 0`` and are not
  counted in the store's counters (``counted``).
- **Dry runs** judge pins as the real run would after reaping dead writers (``ReapedView``).
- **One GC at a time.** ``GcLock`` is an exclusive ``flock`` on ``DATA/gc.lock``
  (works across processes and between threads of one process, since each lock
  holds its own open file). Verify takes the same lock so it never sees a
  block disappear under a snapshot it is checking.

Pure functions and one small class; thread-safe.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from ..errors import Conflict
from ..index.schema import CONDEMNED, LIVE, BlockRow
from ..writer import owner_is_dead

TEMP_MIN_AGE = 300.0
LOCK_NAME = "gc.lock"


def grace_over(since: float, now: float, min_age: float) -> bool:
    """Whether something dated ``since`` has waited out a grace of ``min_age`` seconds at ``now``."""
    return now - since >= min_age


def temp_grace(min_age: float) -> float:
    return max(min_age, TEMP_MIN_AGE)


def lease_alive(expiry: float | None, now: float) -> bool:
    """A writer's pins count while its lease has not expired."""
    return expiry is not None and expiry > now


def writer_alive(expiry: float | None, owner: bytes, now: float) -> bool:
    """A writer counts while its lease runs, unless its process is certainly gone
    (killed: the same boot and pid namespace, and no such pid)."""
    return lease_alive(expiry, now) and not owner_is_dead(owner)


class ReapedView:
    """A read txn as a GC run sees it once it has reaped ``dead`` writers: their pins count for nothing.

    A real run drops dead writers (lease over, or process gone) and their pins before it
    sweeps; a dry run writes nothing, so it asks the rules below through this view.
    """

    def __init__(self, t, dead: set[bytes]):
        self._t = t
        self._dead = dead

    def __getattr__(self, name):
        return getattr(self._t, name)

    def is_pinned(self, block_id: bytes, now: float) -> bool:
        return any(lease_alive(self._t.writer_expiry(w), now)
                   for w in self._t.pin_writers(block_id) if w not in self._dead)


def may_condemn(t, block_id: bytes, row: BlockRow | None, marked: bool, now: float) -> bool:
    """Inside the condemn txn (after re-marking): live, unreferenced and not pinned by a live writer."""
    return row is not None and row.state == LIVE and not marked and not t.is_pinned(block_id, now)


def may_delete(t, block_id: bytes, row: BlockRow | None, marked: bool, now: float, min_age: float) -> bool:
    """Inside the ``deleting`` txn (after re-marking): condemned long enough, unreferenced, unpinned."""
    return (row is not None and row.state == CONDEMNED and not marked
            and grace_over(row.state_time, now, min_age) and not t.is_pinned(block_id, now))


def may_delete_orphan(t, block_id: bytes, created: float, marked: bool, now: float, min_age: float) -> bool:
    """Inside the orphan txn: still no row, old enough, unreferenced by any manifest, unpinned."""
    return (t.get_block(block_id) is None and not marked and grace_over(created, now, min_age)
            and not t.is_pinned(block_id, now))


def orphan_row(created: float, now: float) -> BlockRow:
    """The ``deleting`` row that guards an orphan's file while GC deletes it."""
    from ..index.schema import DELETING

    return BlockRow(DELETING, 0, 0, created, now)


def counted(row: BlockRow) -> bool:
    """Whether a row is in the store's counters (every row a writer made; not orphan guards)."""
    return row.raw_len > 0


class GcLock:
    """Exclusive lock on ``DATA/gc.lock``: one GC (or verify) per store at a time."""

    def __init__(self, data_dir: str | os.PathLike, *, wait: float = 0.0, what: str = "gc"):
        self.path = Path(data_dir) / LOCK_NAME
        self.wait = wait
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    raise Conflict(f"another gc or verify is running on {self.path.parent} "
                                   f"(it holds {self.path}); try again later") from None
                time.sleep(0.1)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> GcLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
