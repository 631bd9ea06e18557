"""Block damage: when a block row becomes ``damaged`` and how it becomes ``live`` again.

A block whose stored bytes are missing or corrupt stays referenced: the names that use it
are damaged, not gone. Marking the row ``damaged`` (instead of trusting it) is what lets
the next upload of the same bytes heal every one of those names at once:

- **Mark.** A read that fails its hash or finds the block gone (``Store`` read path), or
  ``cas verify`` finding it missing or corrupt, turns a ``live`` or ``condemned`` row into
  ``damaged`` (``mark_damaged``). ``deleting`` rows are on their way out and absent rows have
  nothing to mark. Verify passes the row it saw, so a row that changed since (a writer
  healed it meanwhile) is left alone. Every mark bumps the ``damage_marks`` counter.
- **Heal.** A writer that pins a ``damaged`` block does not rely on it: it writes the block
  again (it holds the bytes) and its commit turns the row ``live`` with the new stored size
  (``heal``). A writer that relied on a block which was marked while it was uploading
  refuses to commit (``damaged_since``): it no longer holds the bytes, and a retry writes them.
- **GC.** ``damaged`` is neither ``live`` nor ``condemned``, so GC never condemns or deletes
  such a row (it is still referenced, and condemning it would let a writer resurrect the bad
  bytes without rewriting them). ``cas verify --repair`` drops rows of damaged blocks, as it
  does for any missing or corrupt block; a ``damaged`` row whose block reads back correctly
  is turned ``live`` again by repair.

The rows stay counted in the store's counters (they keep their sizes). Functions run inside
the caller's write txn, except ``mark_damaged``, which opens its own; thread-safe.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import replace

from .ids import short
from .index.schema import CONDEMNED, DAMAGED, LIVE, BlockRow

log = logging.getLogger(__name__)

MARKS = "damage_marks"  # counter: how many times a block row was marked damaged


def mark_damaged(index, block_id: bytes, clock: Callable[[], float], why: str,
                 seen: BlockRow | None = None) -> bool:
    """Mark ``block_id``'s row damaged (one write txn); whether this call changed it.

    ``seen``: the row as the caller saw it when it found the damage; a row that changed
    since is not marked (a writer may have rewritten the block in between).
    """
    with index.write() as t:
        row = t.get_block(block_id)
        if row is None or row.state not in (LIVE, CONDEMNED):
            return False
        if seen is not None and row != seen:
            return False
        t.put_block(block_id, replace(row, state=DAMAGED, state_time=clock()))
        t.add_counter(MARKS, 1)
    log.warning("block %s is %s: marked damaged (the next upload of its bytes rewrites it)", short(block_id), why)
    return True


def damage_marks(t) -> int:
    return t.counter(MARKS)


def heal(t, block_id: bytes, row: BlockRow, stored_size: int, now: float) -> None:
    """Inside the writer's commit txn: the block was written again, so its row is live."""
    t.put_block(block_id, BlockRow(LIVE, stored_size, row.raw_len, row.created, now))
    t.add_counter("stored_bytes", stored_size - row.stored_size)
    log.info("block %s was written again: healed", short(block_id))


def damaged_since(t, ids: Iterable[bytes], written: set[bytes] | dict) -> list[bytes]:
    """Blocks in ``ids`` that are damaged now and that the writer did not write itself."""
    return [bid for bid in set(ids) if bid not in written
            and (row := t.get_block(bid)) is not None and row.state == DAMAGED]
