"""GC's own safety mechanics: one run at a time, and the grace for temp files.

The rules for block rows, pins and leases (what GC may condemn or delete, and when) are
DESIGN §4's contract and live in ``cas.blocklife``. What stays here is GC's:

- **Temp files** of interrupted block writes are removed after ``max(min_age,
  TEMP_MIN_AGE)``: a live write renames its temp file within milliseconds, so even
  ``--min-age 0`` must not race a write in progress.
- **One GC at a time.** ``GcLock`` is an exclusive ``flock`` on ``DATA/gc.lock``
  (works across processes and between threads of one process, since each lock
  holds its own open file). Verify takes the same lock so it never sees a
  block disappear under a snapshot it is checking.

Thread-safe.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from ..errors import Conflict

TEMP_MIN_AGE = 300.0
LOCK_NAME = "gc.lock"


def temp_grace(min_age: float) -> float:
    return max(min_age, TEMP_MIN_AGE)


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


def trim_idle_refs(store) -> dict:
    """Drop the commit references (``refs``) that no GC or verify run needs.

    Refs let a run re-mark what was committed after its snapshot; only a run between its mark
    and its last condemn needs them, and such a run holds the GC lock. Holding the lock here
    (without waiting) therefore makes every ref up to now unneeded; when a run holds it, it
    trims what it read itself when it is done. Returns ``{"refs": <rows dropped>}``."""
    try:
        with GcLock(store.settings.data_dir, what="ref retention"):
            with store.index.write() as t:
                return {"refs": t.trim_refs(t.last_seq())}
    except Conflict:
        return {"refs": 0}
