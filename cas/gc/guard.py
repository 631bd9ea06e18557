"""GC's guards: a run deletes nothing unless the index is the backend's and what it cannot explain
is a plausible share of the backend (DESIGN §8, issue 13).

1. **Identity** (``check_identity``, first thing in a run): the index's store id must be the one in
   the backend's ``store.json`` and the backend's metadata log must not be ahead of the index's
   (``cas.meta.identity.check``). An index swapped in from another store, or restored from an
   old copy, would take the backend's newer blocks for garbage.
2. **Orphan share** (``check_orphans``, after marking, before the sweep): orphans are the blocks
   the backend holds (located pack entries; with a store of one object per block, its objects)
   that no index row explains, old enough for the sweep to delete. A damaged index (rows lost,
   locations kept) makes most of the backend look like orphans; a crashed writer leaves a few.
   The run is ``Refused`` — nothing deleted, both counts in the message, exit 9 — when orphans
   are more than half of the backend's blocks or of its stored bytes, unless ``force_orphans``.

   The share rule applies only where a mistake is large: at least ``MIN_BLOCKS`` orphan blocks
   or ``MIN_BYTES`` orphan bytes. Below that a young store whose first upload was killed is
   legitimately "all orphans" (tests and first runs do this all the time), and refusing there
   would teach operators to pass ``--force-orphans`` by habit.

   **Garbage is not guarded by share.** Blocks whose rows say *unreferenced* (condemned after
   their last name was deleted) are explained by the index: deleting a bucket and collecting is
   meant to free nearly everything. The index that lost its names is caught by identity (1)
   when it is older than the backend's log, and by ``cas verify``. Packs without a row
   (``unknown_packs``) are never deleted at all (``packs.py``): the orphans here are the only
   thing GC deletes that the index cannot explain.

The periodic GC inside ``cas serve`` never forces: a refusal is logged as an error and the next
interval checks again.
"""

from __future__ import annotations

from ..blocks import packs_of
from ..errors import Refused
from ..index.schema import KIND_DATA
from ..meta import identity
from .report import human_size

#: the share rule applies from this many orphan blocks, or this many orphan bytes, on
MIN_BLOCKS = 1024
MIN_BYTES = 64 << 20
BATCH = 2048


def check_identity(store) -> None:
    """``IdentityMismatch`` unless the store's index and backend agree (a legacy backend of one
    object per block has no identity to check)."""
    packs = packs_of(store.blocks)
    if packs is not None:
        identity.check(store.index, packs.files, store.settings)


class OrphanCount:
    """The backend's blocks and, of them, the orphans a run's sweep would delete."""

    def __init__(self) -> None:
        self.blocks = self.bytes = self.orphans = self.orphan_bytes = 0

    def implausible(self) -> bool:
        big = self.orphans >= MIN_BLOCKS or self.orphan_bytes >= MIN_BYTES
        return big and (2 * self.orphans > self.blocks or 2 * self.orphan_bytes > self.bytes)


def count_orphans(store, *, is_marked, now: float, min_age: float) -> OrphanCount:
    """Stream the backend's blocks (a fresh read txn per batch) and count those without a row,
    unmarked and past ``min_age``: what the orphan sweep would take."""
    from ..blocklife import grace_over

    c = OrphanCount()
    packs = packs_of(store.blocks)
    if packs is not None:  # located entries carry their stored length
        after = None
        while True:
            with store.index.read() as t:
                batch = []
                for bid, loc in t.iter_locs(KIND_DATA, after):
                    batch.append(bid)
                    c.blocks += 1
                    c.bytes += loc.length
                    if t.get_block(bid) is None and not is_marked(bid) and grace_over(loc.created, now, min_age):
                        c.orphans += 1
                        c.orphan_bytes += loc.length
                    if len(batch) >= BATCH:
                        break
            if len(batch) < BATCH:
                return c
            after = batch[-1]
    pending: list[tuple[bytes, float]] = []

    def flush() -> None:
        with store.index.read() as t:
            for bid, created in pending:
                if t.get_block(bid) is None and not is_marked(bid) and grace_over(created, now, min_age):
                    c.orphans += 1
        pending.clear()

    for bid, created in store.blocks.iter_ids():  # one object per block: sizes would cost a request each
        c.blocks += 1
        pending.append((bid, created))
        if len(pending) >= BATCH:
            flush()
    flush()
    return c


def check_orphans(store, *, is_marked, now: float, min_age: float, force: bool = False) -> OrphanCount:
    """Count the orphans (``count_orphans``); ``Refused`` when they are an implausible share of
    the backend and not ``force``."""
    c = count_orphans(store, is_marked=is_marked, now=now, min_age=min_age)
    if c.implausible() and not force:
        share = c.orphans / c.blocks if c.blocks else 1.0
        raise Refused(
            f"gc refuses to run: {c.orphans} of the backend's {c.blocks} blocks ({share:.0%}; "
            f"{human_size(c.orphan_bytes)} of {human_size(c.bytes)}) have no row in the index "
            f"{store.settings.index_where} and would be deleted as orphans. That many orphans means a damaged "
            f"or wrong index, not crashed uploads; nothing was deleted. Check with `cas verify`; rebuild a "
            f"damaged index with {identity.recover_command(store.settings.data_dir, store.settings.blocks.url)}; "
            f"only if these blocks really are nobody's, run gc again with --force-orphans")
    return c
