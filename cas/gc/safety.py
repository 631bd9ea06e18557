"""GC's own safety mechanics: one run at a time, and the grace for temp files.

The rules for block rows, pins and leases (what GC may condemn or delete, and when) are
DESIGN §4's contract and live in ``cas.blocklife``. What stays here is GC's:

- **Temp files** of interrupted block writes are removed after ``max(min_age,
  TEMP_MIN_AGE)``: a live write renames its temp file within milliseconds, so even
  ``--min-age 0`` must not race a write in progress.
- **One GC at a time.** ``gc_lock`` is the index's lock ``"gc"`` (``Index.lock``): exclusive across
  every process on every node that shares the index (LMDB: ``flock`` on ``DATA/gc.lock``; PostgreSQL:
  an advisory lock), and between threads of one process. Verify, ref retention, migrate and recover
  take the same lock: verify never sees a block disappear under a snapshot it is checking, and
  refs are trimmed only when no run needs them.

Thread-safe.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ..errors import Conflict

TEMP_MIN_AGE = 300.0
GC_LOCK = "gc"


def temp_grace(min_age: float) -> float:
    return max(min_age, TEMP_MIN_AGE)


def gc_lock(index, *, wait: float = 0.0) -> contextlib.AbstractContextManager[None]:
    """Hold the store's GC lock for the ``with`` block: one GC (or verify, ...) per store at a time
    across all nodes; ``Conflict`` naming its holder when it is not free within ``wait`` seconds."""
    return held(index.lock(GC_LOCK, wait=wait))


@contextlib.contextmanager
def held(lock: contextlib.AbstractContextManager) -> Iterator[None]:
    """Enter ``lock`` (a GC lock) for the ``with`` block; a busy lock becomes the one message every GC
    lock user gives (a ``Conflict`` raised inside the block is left alone)."""
    with contextlib.ExitStack() as stack:
        try:
            stack.enter_context(lock)
        except Conflict as exc:
            raise Conflict(f"another gc or verify is running on this store ({exc}); try again later") from None
        yield


def trim_idle_refs(store) -> dict:
    """Drop the commit references (``refs``) that no GC or verify run needs.

    Refs let a run re-mark what was committed after its snapshot; only a run between its mark
    and its last condemn needs them, and such a run holds the GC lock. Holding the lock here
    (without waiting) therefore makes every ref up to now unneeded; when a run holds it, it
    trims what it read itself when it is done. Returns ``{"refs": <rows dropped>}``."""
    try:
        with gc_lock(store.index):
            with store.index.write() as t:
                return {"refs": t.trim_refs(t.last_seq())}
    except Conflict:
        return {"refs": 0}
