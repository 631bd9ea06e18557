"""The block lifecycle: the one owner of block rows, pins, writer leases and block counters.

This module is DESIGN §4's safety contract in one file. Writers (``writer``), the
Store's heartbeat, GC (``gc.sweep``) and verify's repair (``gc.repair``) change block
rows, pins, writer rows and the counters ``unique_blocks``, ``stored_bytes`` and
``raw_bytes`` only through the functions below; they decide *when*, this module decides
*what is allowed* and keeps the rows and counters consistent.

**States** of a block row (``index.schema``) and who moves a row between them:

- absent → ``live``: a writer's commit records a block it wrote (``record_written``);
  repair recreates the row of a present, decodable block (``restore``).
- ``live`` → ``condemned``: GC, only if unreferenced (after re-marking every manifest
  committed since its snapshot) and not pinned by a live writer (``may_condemn``,
  ``condemn``).
- ``condemned`` → ``live``: a writer that pins it, or commits it, resurrects it in the
  same txn (its bytes are still there); GC and repair when it is referenced again
  (``resurrect``).
- ``condemned`` → ``deleting``: GC, once condemned for ``min_age`` (readers in flight
  finish in that time), still unreferenced and unpinned (``may_delete``,
  ``mark_deleting``); repair for a corrupt block that nobody pins. Only a ``deleting``
  row makes a writer wait for the row to go and write the block again (``pin``).
- ``deleting`` → absent: after the block's file is deleted (``drop``). A crash in
  between leaves the ``deleting`` row, which the next run resumes.
- absent file without row (an orphan of a crashed or running writer): GC inserts a
  guarding ``deleting`` row first (``may_delete_orphan``, ``guard_orphan``), so a writer
  that pins the id meanwhile waits and writes it again. Guard rows have sizes 0 and
  are not counted (``counted``).
- ``live``/``condemned`` → ``damaged``: a read or verify found the stored bytes missing
  or corrupt (``mark_damaged``). GC never condemns or deletes a ``damaged`` row (still
  referenced: condemning it would let a writer resurrect bad bytes without rewriting
  them). A writer that pins it writes the block again and its commit heals it
  (``heal``); a writer that relied on a block marked since its first pin refuses to
  commit (``damaged_since``): it no longer holds the bytes, and a retry writes them.
  Repair turns a ``damaged`` row whose block reads back correctly ``live`` again
  (``undamage``) and drops rows of missing or corrupt blocks.

**Order of deletion.** Condemn (write txn) → after the grace, ``deleting`` (write txn,
re-checking pins and references) → delete from the BlockStore (outside any txn) →
``drop`` (write txn). A crash anywhere leaves garbage, never a dangling reference.

**Pins and leases.** A writer registers a row in ``writers`` (lease expiry and its
process identity) in its first pin txn and pins each block before relying on it
(``pin``), while the bytes are still in hand. A pin counts only while its writer's
lease lies in the future (``is_pinned``); ``Heartbeat`` renews the leases of this
process's writers. GC forgets writers whose lease expired or whose process is
certainly dead (``reap_dead_writers``) and then every pin without a writer row
(``stale_pins``, ``drop_stale_pins``); a writer row never comes back once dropped. A
writer whose own lease lapsed refuses to commit blocks it wrote (they were orphans to
GC) and re-checks every block it relies on (``revalidate``).

**Counters.** ``unique_blocks``, ``stored_bytes`` and ``raw_bytes`` are the sums over
counted rows; every row change goes through ``_set``, which adjusts them in the same txn.
``Tally`` sums rows the same way for verify.

**Grace.** ``grace_over(since, now, min_age)``: the one comparison for condemned rows and
orphan files.

Functions take the caller's txn and run inside it (each operation is one short txn of
the caller), except ``mark_damaged`` and ``Heartbeat``, which open their own. Thread-safe.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path

from .errors import TransientStoreError
from .ids import short
from .index.schema import CONDEMNED, DAMAGED, DELETING, LIVE, BlockRow

log = logging.getLogger(__name__)

MARKS = "damage_marks"  # counter: how many times a block row was marked damaged
BLOCK_COUNTERS = ("unique_blocks", "stored_bytes", "raw_bytes")

# what a writer does with a block it pinned (``pin``)
RELY, WRITE, WAIT = "rely", "write", "wait"


# -- process identity and leases ------------------------------------------------------------
_OWNER = struct.Struct(">IQ16s")  # pid, pid namespace inode, boot id


def _process_identity() -> bytes:
    """Who writes: pid, pid namespace and boot id, so GC can tell a writer whose process died.

    Empty when the platform cannot say (then only the lease tells a dead writer).
    """
    try:
        boot = uuid.UUID(Path("/proc/sys/kernel/random/boot_id").read_text().strip()).bytes
        pidns = os.stat("/proc/self/ns/pid").st_ino
    except (OSError, ValueError):
        return b""
    return _OWNER.pack(os.getpid(), pidns, boot)


def owner_is_dead(owner: bytes) -> bool:
    """Whether ``owner`` names a process of this boot and pid namespace that no longer exists.

    Only a certain death counts: another boot, another namespace, an unknown owner or a pid
    that exists (perhaps reused) all leave the decision to the lease.
    """
    if len(owner) != _OWNER.size:
        return False
    pid, pidns, boot = _OWNER.unpack(owner)
    mine = _process_identity()
    if not mine or _OWNER.unpack(mine)[1:] != (pidns, boot):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by someone else
        return False
    return False


PROCESS_OWNER = _process_identity()


def lease_alive(expiry: float | None, now: float) -> bool:
    """A writer's pins count while its lease has not expired."""
    return expiry is not None and expiry > now


def writer_alive(expiry: float | None, owner: bytes, now: float) -> bool:
    """A writer counts while its lease runs, unless its process is certainly gone
    (killed: the same boot and pid namespace, and no such pid)."""
    return lease_alive(expiry, now) and not owner_is_dead(owner)


def register_writer(t, writer_id: bytes, expiry: float, owner: bytes = PROCESS_OWNER) -> None:
    """A writer's lease row, owned by ``owner`` (this process; in the writer's first pin txn)."""
    t.put_writer(writer_id, expiry, owner)


def lease_expired(t, writer_id: bytes, now: float) -> bool:
    """Whether ``writer_id``'s lease is over (or its row was reaped)."""
    return not lease_alive(t.writer_expiry(writer_id), now)


def release_writer(t, writer_id: bytes, pinned: Iterable[bytes]) -> None:
    """Drop a writer's pins and its lease row (commit or abort)."""
    for bid in pinned:
        t.drop_pin(bid, writer_id)
    t.delete_writer(writer_id)


def renew_leases(t, writer_ids: Iterable[bytes], expiry: float, owner: bytes = PROCESS_OWNER) -> None:
    """Heartbeat: extend the leases of writers whose rows still exist (a reaped row stays gone)."""
    for w in writer_ids:
        if t.writer_expiry(w) is not None:
            t.put_writer(w, expiry, owner)


def dead_writers(t, now: float) -> set[bytes]:
    """Writers whose lease is over or whose process is certainly dead."""
    return {w for w, expiry, owner in t.iter_writer_owners() if not writer_alive(expiry, owner, now)}


def reap_dead_writers(t, now: float) -> set[bytes]:
    """Forget the dead writers' rows (their pins die with them: see ``stale_pins``)."""
    dead = dead_writers(t, now)
    for w in dead:
        t.delete_writer(w)
    return dead


def stale_pins(t) -> Iterator[tuple[bytes, bytes]]:
    """(block id, writer id) of every pin whose writer has no row."""
    for bid, w in t.iter_pins():
        if t.writer_expiry(w) is None:
            yield bid, w


def drop_stale_pins(t, pins: Iterable[tuple[bytes, bytes]]) -> int:
    """Drop the pins whose writer row is gone (re-checked: it never comes back); how many."""
    n = 0
    for bid, w in pins:
        if t.writer_expiry(w) is None:
            t.drop_pin(bid, w)
            n += 1
    return n


class Heartbeat:
    """Renews the leases of this process's writers every ``lease / 3`` (at most every minute).

    ``clock`` and ``lease`` are read at each beat (tests swap the Store's clock). The thread
    starts with the first writer and stops with ``stop``. ``owner`` is the identity the leases
    of these writers carry (``PROCESS_OWNER``; tests that play several nodes in one process give
    each its own).
    """

    def __init__(self, index, clock: Callable[[], float], lease: Callable[[], float],
                 owner: bytes = PROCESS_OWNER):
        self.owner = owner
        self._index = index
        self._clock = clock
        self._lease = lease
        self._writers: set[bytes] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def add(self, writer_id: bytes) -> None:
        with self._lock:
            self._writers.add(writer_id)
            if self._thread is None:
                self._thread = threading.Thread(target=self._beat, name="cas-heartbeat", daemon=True)
                self._thread.start()

    def discard(self, writer_id: bytes) -> None:
        with self._lock:
            self._writers.discard(writer_id)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _beat(self) -> None:
        lease = self._lease()
        while not self._stop.wait(min(60.0, lease / 3)):
            with self._lock:
                writers = list(self._writers)
            if not writers:
                continue
            try:
                with self._index.write() as t:
                    renew_leases(t, writers, self._clock() + lease, self.owner)
            except Exception:  # logged and retried on the next beat; a missed beat is not fatal
                log.exception("writer heartbeat failed")


# -- pins and the GC rules --------------------------------------------------------------------
def pin(t, block_id: bytes, writer_id: bytes, now: float) -> str:
    """Pin ``block_id`` for ``writer_id`` and say what the writer does: ``RELY`` on the row
    (a ``condemned`` row is resurrected here), ``WRITE`` the block (absent or ``damaged``),
    or ``WAIT`` until the ``deleting`` row is gone and then write it."""
    t.add_pin(block_id, writer_id)
    row = t.get_block(block_id)
    if row is None or row.state == DAMAGED:
        return WRITE
    if row.state == CONDEMNED:
        resurrect(t, block_id, row, now)
    elif row.state == DELETING:
        return WAIT
    return RELY


def being_deleted(t, block_id: bytes) -> bool:
    row = t.get_block(block_id)
    return row is not None and row.state == DELETING


def is_pinned(t, block_id: bytes, now: float) -> bool:
    """Whether a writer with a running lease pins ``block_id``."""
    return any(lease_alive(t.writer_expiry(w), now) for w in t.pin_writers(block_id))


def grace_over(since: float, now: float, min_age: float) -> bool:
    """Whether something dated ``since`` has waited out a grace of ``min_age`` seconds at ``now``."""
    return now - since >= min_age


def may_condemn(t, block_id: bytes, row: BlockRow | None, marked: bool, now: float) -> bool:
    """Inside the condemn txn (after re-marking): live, unreferenced and not pinned by a live writer."""
    return row is not None and row.state == LIVE and not marked and not is_pinned(t, block_id, now)


def may_delete(t, block_id: bytes, row: BlockRow | None, marked: bool, now: float, min_age: float) -> bool:
    """Inside the ``deleting`` txn (after re-marking): condemned long enough, unreferenced, unpinned."""
    return (row is not None and row.state == CONDEMNED and not marked
            and grace_over(row.state_time, now, min_age) and not is_pinned(t, block_id, now))


def may_delete_orphan(t, block_id: bytes, created: float, marked: bool, now: float, min_age: float) -> bool:
    """Inside the orphan txn: still no row, old enough, unreferenced by any manifest, unpinned."""
    return (t.get_block(block_id) is None and not marked and grace_over(created, now, min_age)
            and not is_pinned(t, block_id, now))


# -- rows and counters ------------------------------------------------------------------------
def counted(row: BlockRow) -> bool:
    """Whether a row is in the store's counters (every row a writer made; not orphan guards)."""
    return row.raw_len > 0


def _weights(row: BlockRow | None) -> tuple[int, int, int]:
    return (1, row.stored_size, row.raw_len) if row is not None and counted(row) else (0, 0, 0)


def _set(t, block_id: bytes, old: BlockRow | None, new: BlockRow | None) -> None:
    """Replace ``old`` (the row as read in this txn) by ``new`` (None: drop it), keeping the counters."""
    if new is None:
        t.delete_block(block_id)
    else:
        t.put_block(block_id, new)
    for name, before, after in zip(BLOCK_COUNTERS, _weights(old), _weights(new)):
        if after != before:
            t.add_counter(name, after - before)


class Tally:
    """Sums rows as the counters count them (verify compares the two)."""

    def __init__(self) -> None:
        self.totals = dict.fromkeys(BLOCK_COUNTERS, 0)

    def add(self, row: BlockRow) -> None:
        for name, w in zip(BLOCK_COUNTERS, _weights(row)):
            self.totals[name] += w


def block_count(t) -> int:
    return t.counter("unique_blocks")


def record_recovered(t, block_id: bytes, stored: int, raw: int, created: float, now: float) -> None:
    """``cas recover``: a block found in one of the backend's packs is ``live`` (replacing any row
    an earlier pack gave it), counted."""
    _set(t, block_id, t.get_block(block_id), BlockRow(LIVE, stored, raw, created, now))


def record_written(t, block_id: bytes, stored: int, raw: int, now: float) -> None:
    """Inside a writer's commit txn: the writer put this block, pinned, so its row is ``live``."""
    row = t.get_block(block_id)
    if row is None:
        _set(t, block_id, None, BlockRow(LIVE, stored, raw, now, now))
    elif row.state == CONDEMNED:
        resurrect(t, block_id, row, now)
    elif row.state == DAMAGED:
        heal(t, block_id, row, stored, now)
    elif row.state == DELETING:  # cannot happen while pinned; refuse rather than dangle
        raise TransientStoreError(f"block {short(block_id)} was deleted under a pin; try again")


def revalidate(t, block_ids: Iterable[bytes], now: float) -> None:
    """A writer whose lease lapsed: every block it relies on must still be there (condemned ones
    are resurrected), or the commit fails."""
    for bid in set(block_ids):
        row = t.get_block(bid)
        if row is None or row.state == DELETING:
            raise TransientStoreError("the upload stalled and its blocks were reclaimed; try again")
        if row.state == CONDEMNED:
            resurrect(t, bid, row, now)


def restore(t, block_id: bytes, stored: int, raw: int, now: float) -> bool:
    """Repair: recreate the missing row of a block that is present and decodes; False if a row exists."""
    if t.get_block(block_id) is not None:
        return False
    _set(t, block_id, None, BlockRow(LIVE, stored, raw, now, now))
    return True


def resurrect(t, block_id: bytes, row: BlockRow, now: float) -> None:
    """``condemned`` → ``live`` (its bytes are still there)."""
    _set(t, block_id, row, replace(row, state=LIVE, state_time=now))


def condemn(t, block_id: bytes, row: BlockRow, now: float) -> None:
    """``live`` → ``condemned`` (the caller checked ``may_condemn``)."""
    _set(t, block_id, row, replace(row, state=CONDEMNED, state_time=now))


def mark_deleting(t, block_id: bytes, row: BlockRow, now: float) -> None:
    """→ ``deleting``: the file may be deleted once this txn commits."""
    _set(t, block_id, row, replace(row, state=DELETING, state_time=now))


def guard_orphan(t, block_id: bytes, created: float, now: float) -> None:
    """The uncounted ``deleting`` row that guards an orphan's file while it is deleted."""
    _set(t, block_id, None, BlockRow(DELETING, 0, 0, created, now))


def drop(t, block_id: bytes, row: BlockRow) -> bool:
    """Drop a row (its file is gone); whether it was counted (False: an orphan guard)."""
    _set(t, block_id, row, None)
    return counted(row)


def set_stored_size(t, block_id: bytes, row: BlockRow, stored: int) -> None:
    """Repair: the row's stored size was wrong; the block decodes."""
    _set(t, block_id, row, replace(row, stored_size=stored))


def revive(t, block_id: bytes, row: BlockRow, stored: int, raw: int, now: float) -> None:
    """Repair: a referenced ``deleting`` row whose block is still there and decodes is ``live``
    again, with the sizes it has now (an orphan guard row enters the counters)."""
    _set(t, block_id, row, BlockRow(LIVE, stored, raw, row.created, now))


# -- damage -------------------------------------------------------------------------------------
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
        _set(t, block_id, row, replace(row, state=DAMAGED, state_time=clock()))
        t.add_counter(MARKS, 1)
    log.warning("block %s is %s: marked damaged (the next upload of its bytes rewrites it)", short(block_id), why)
    return True


def damage_marks(t) -> int:
    return t.counter(MARKS)


def heal(t, block_id: bytes, row: BlockRow, stored_size: int, now: float) -> None:
    """Inside the writer's commit txn: the block was written again, so its row is live."""
    _set(t, block_id, row, BlockRow(LIVE, stored_size, row.raw_len, row.created, now))
    log.info("block %s was written again: healed", short(block_id))


def undamage(t, block_id: bytes, row: BlockRow, now: float) -> None:
    """Repair: a ``damaged`` row whose block reads back correctly (a stale mark) is ``live``."""
    _set(t, block_id, row, replace(row, state=LIVE, state_time=now))


def damaged_since(t, ids: Iterable[bytes], written: set[bytes] | dict) -> list[bytes]:
    """Blocks in ``ids`` that are damaged now and that the writer did not write itself."""
    return [bid for bid in set(ids) if bid not in written
            and (row := t.get_block(bid)) is not None and row.state == DAMAGED]
