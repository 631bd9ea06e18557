"""Pack maintenance: the last phase of a GC run (DESIGN §8).

Block deletion (``sweep.py``) only drops locations; the bytes stay in their packs until this
phase reclaims them:

1. **Retire** sealed packs with no live entry, and abandoned open packs (their writer's lease
   row was reaped in phase 1: the process died or stalled) once their located entries are
   copied out: row → ``RETIRED`` (one txn). Nothing reads a retired pack but readers that
   looked a location up before it moved.
2. **Count** packs in the backend that have no row (``unknown_packs``), and leave them alone:
   every pack gets its row before its first byte, so such a pack is not this index's to judge
   (another store's on the same prefix, or this store's with its index lost).
3. **Delete** retired packs whose reader grace (``gc.min_age``, as for blocks) is over: the
   pack file/object goes, then its row (a crash in between deletes it again next run).
4. **Repack** sealed packs whose live bytes fell under ``REPACK_BELOW`` of their entries'
   bytes (``payload_bytes``: header and footer do not count), and small packs (a store over
   S3 writes one small pack per group of small commits) when there are at least
   ``SMALL_MIN`` of them: their live entries are read (verified: a block must
   decode to its id), appended to this process's open pack like any write, synced once per
   ``target_size`` of copies (on S3 a sync seals the pack: small packs merge into one) — which
   moves their locations in one txn per pack flush, so a copy never points anywhere but at
   verified bytes — and the emptied packs are retired as in 1. An open pack of this very
   process is never taken for abandoned, even when its lease lapsed. A writer that re-puts a block
   being copied simply moves its location once more (same bytes: content-addressed); a block
   GC deleted meanwhile gets a location without a row — an orphan the next run collects.

A crash at any step leaves dead copies (entries no location points at: dead bytes in their
pack) or a pack retired late or deleted twice, never a location without its bytes.

A dry run counts what a real run would retire, delete and repack, and writes nothing: its
sweep notes the locations the real run would have dropped by now (``DryDrops``), and this
phase counts as if they were gone (and the writers the real run reaps, dead).
Incomplete S3 multipart uploads of packs (a process killed mid-pack) older than the grace are
aborted too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..blocks import packs_of
from ..blocks.packs import format as fmt
from ..blocks.packs.store import drop_location
from ..errors import BlockNotFound, IntegrityError
from ..ids import short
from ..index.schema import KIND_DATA, KIND_MANIFEST, PACK_OPEN, PACK_RETIRED, PACK_SEALED, PackRow
from .mark import MarkSet

log = logging.getLogger(__name__)

REPACK_BELOW = 0.5  # rewrite a sealed pack once less than half of it is live
SMALL_FRACTION = 8  # a pack under target/8 is small
SMALL_MIN = 8  # small packs are merged once there are this many
READ_RANGE = 8 << 20


class DryDrops:
    """The locations a dry run's sweep would have dropped: per pack the dead bytes and entries
    they add, per id a ``MarkSet`` (8 bytes an id). Each id is noted once (the sweep meets a
    block row, an orphan or a manifest once per run)."""

    def __init__(self) -> None:
        self._ids = {KIND_DATA: MarkSet(), KIND_MANIFEST: MarkSet()}
        self._packs: dict[bytes, tuple[int, int]] = {}

    def note(self, t, kind: int, ids) -> None:
        """Inside a read txn: the real run drops the locations of ``ids`` here."""
        for eid in ids:
            loc = t.get_loc(kind, eid)
            if loc is not None:
                self._ids[kind].add(eid)
                nbytes, count = self._packs.get(loc.pack, (0, 0))
                self._packs[loc.pack] = (nbytes + loc.length, count + 1)

    def dropped(self, kind: int, eid: bytes) -> bool:
        return eid in self._ids[kind]

    def row(self, pid: bytes, row: PackRow) -> PackRow:
        """``row`` as the real run would see it once those locations are gone."""
        nbytes, count = self._packs.get(pid, (0, 0))
        if not count:
            return row
        return PackRow(row.state, row.size, row.entries, max(0, row.live_bytes - nbytes),
                       max(0, row.live_entries - count), row.created, row.state_time)


class PackSweep:
    """Phase 6 of a GC run over the run's store (see the module docstring)."""

    def __init__(self, run):
        self.run = run
        self.store = run.store
        self.index = run.index
        self.packs = packs_of(run.blocks)
        self.report = run.report
        self.delete = run.delete
        self.min_age = run.min_age
        self._stale: list = []  # (pack, entry) of located manifests no index row has

    def __call__(self) -> None:
        if self.packs is None:
            return
        now = self.run.clock()
        live_writers = set()
        retire, repack, small, expired = [], [], [], []
        adopted = self._adopt_unknown(now)
        drops = self.run.dry_drops
        with self.index.read() as t:
            # a dry run: the writers the real run reaped first are dead here too
            live_writers = {w for w, _ in t.iter_writers()} - self.run._dry_writers
            for pid, row in t.iter_packs():
                if not self.delete:
                    row = drops.row(pid, row)
                if row.state == PACK_RETIRED:
                    if now - row.state_time >= self.min_age:
                        expired.append((pid, row))
                elif row.state == PACK_OPEN:
                    # its writer is gone (a GC inside the writing process never copies its own
                    # open pack into itself, whatever that pack's lease says): copy out what it located
                    if pid not in live_writers and not self.packs.appending_to(pid):
                        repack.append((pid, row))
                elif row.live_entries == 0:
                    retire.append((pid, row))
                elif row.live_bytes < payload_bytes(row) * REPACK_BELOW:
                    repack.append((pid, row))
                elif row.size < self.packs.target_size // SMALL_FRACTION:
                    small.append((pid, row))
        if len(small) >= SMALL_MIN:
            repack.extend(small)
        self._retire(retire)
        self._repack_all(repack)
        self.run.step("after_pack_retire")
        if self.min_age <= 0:  # what this run retired is past a zero grace at once
            if self.delete:
                with self.index.read() as t:
                    expired = [(pid, row) for pid, row in t.iter_packs() if row.state == PACK_RETIRED]
            else:  # what the real run would have retired by now
                expired = expired + retire + repack + adopted
        self._delete(expired)
        self._abort_stale_uploads()

    # -- packs the index does not know --------------------------------------------------------
    def _adopt_unknown(self, now: float) -> list:
        """Packs in the backend without a row are counted, never deleted: every pack gets its row
        before its first byte, so an unknown pack is not one of this index's (another store's on
        the same prefix, or this store's with its index lost: recovery's, not GC's, to judge)."""
        with self.index.read() as t:
            known = {pid for pid, _ in t.iter_packs()}
        self.report.unknown_packs += sum(1 for pid, _, _ in self.packs.files.iter_packs() if pid not in known)
        return []

    # -- retire ------------------------------------------------------------------------------
    def _retire(self, packs: list) -> None:
        if not packs:
            return
        if not self.delete:
            self.report.packs_retired += len(packs)
            return
        with self.index.write() as t:
            now = self.run.clock()
            for pid, _ in packs:
                row = t.get_pack(pid)
                # re-checked: a writer may have located a copy into it since (only open packs)
                if row is not None and row.state in (PACK_SEALED, PACK_OPEN) and row.live_entries == 0:
                    t.put_pack(pid, _state(row, PACK_RETIRED, now))
                    self.report.packs_retired += 1

    # -- delete ------------------------------------------------------------------------------
    def _delete(self, packs: list) -> None:
        for pid, row in packs:
            self.run._check_stop()
            self.report.packs_deleted += 1
            self.report.pack_bytes_freed += row.size
            if not self.delete:
                continue
            self.packs.files.delete(pid)
            self.run.step("after_pack_delete")
            with self.index.write() as t:
                cur = t.get_pack(pid)
                if cur is not None and cur.state == PACK_RETIRED:
                    t.delete_pack(pid)

    # -- repack ------------------------------------------------------------------------------
    def _live_entries(self, pid: bytes, row) -> list[fmt.Entry]:
        """The entries of ``pid`` that a location still points at (in a dry run: that the real
        run's sweep has not dropped)."""
        entries = self._located_entries(pid, row)
        if self.delete:
            return entries
        return [e for e in entries if not self.run.dry_drops.dropped(e.kind, e.id)]

    def _located_entries(self, pid: bytes, row) -> list[fmt.Entry]:
        if row.state == PACK_SEALED:
            try:
                entries = fmt.read_footer(lambda off, n: self.packs.files.read(pid, off, n), row.size,
                                          f"pack {pid.hex()}")
            except (BlockNotFound, IntegrityError) as exc:
                log.warning("cannot repack pack %s: %s", pid.hex(), exc)
                self.report.packs_unreadable += 1
                return []
            with self.index.read() as t:
                return [e for e in entries if _points_at(t.get_loc(e.kind, e.id), pid, e.offset)]
        out = []  # an open pack has no footer yet: its located entries are in the locations table
        with self.index.read() as t:
            for kind in (KIND_DATA, KIND_MANIFEST):
                for eid, loc in t.iter_locs(kind):
                    if loc.pack == pid:
                        out.append(fmt.Entry(kind, eid, loc.offset, loc.length, loc.raw_len))
        out.sort(key=lambda e: e.offset)
        return out

    def _repack_all(self, packs: list) -> None:
        """Copy the live entries of ``packs`` out, a batch of about ``target_size`` copied bytes
        per sync: a sync seals the pack on S3, so small packs merge instead of being copied one
        to one (a run stopped early still switches what it copied)."""
        batch: list[bytes] = []
        moved: list[bytes] = []
        copied = 0
        for pid, row in packs:
            if self.run.stop is not None and self.run.stop.is_set():
                break
            copied += self._copy(pid, row, moved)
            batch.append(pid)
            if copied >= self.packs.target_size:
                self._switch(batch, moved)
                batch, moved, copied = [], [], 0
        if batch:
            self._switch(batch, moved)
        self.run._check_stop()

    def _copy(self, pid: bytes, row, moved: list[bytes]) -> int:
        """Append the live entries of ``pid`` to this process's open pack (ids added to ``moved``);
        the bytes copied (a dry run only counts)."""
        located = self._live_entries(pid, row)
        with self.index.read() as t:  # a located manifest no index row has is dead (its writer gave up)
            stale = [e for e in located if e.kind == KIND_MANIFEST and t.get_manifest(e.id) is None]
        entries = [e for e in located if e not in stale]
        self._stale.extend((pid, e) for e in stale)
        self.report.packs_repacked += 1
        self.report.repacked_bytes += sum(e.length for e in entries)
        if not self.delete:
            self.report.repacked_entries += len(entries)
            self.report.packs_retired += 1
            return 0
        copied = 0
        for group in _ranges(entries):
            start = group[0].offset
            data = self.packs.files.read(pid, start, group[-1].offset + group[-1].length - start)
            for e in group:
                raw = data[e.offset - start:e.offset - start + e.length]
                if e.kind == KIND_DATA:
                    try:
                        self.store.codec.decode(e.id, raw)
                    except IntegrityError as exc:  # left where it is: verify reports it, a writer heals it
                        log.warning("repack of pack %s skips block %s: %s", pid.hex(), short(e.id), exc)
                        self.report.repack_skipped += 1
                        continue
                    self.packs.put(e.id, raw)
                else:
                    self.packs.put_manifest(e.id, raw)
                moved.append(e.id)
                copied += e.length
                self.report.repacked_entries += 1
            self.run.step("after_repack_copy")
        return copied

    def _switch(self, packs: list[bytes], moved: list[bytes]) -> None:
        """Make the copies durable (which moves their locations), then retire the emptied packs."""
        if not self.delete:
            return
        self.packs.sync(moved)
        self.run.step("after_repack_sync")
        with self.index.write() as t:
            now = self.run.clock()
            for spid, e in self._stale:
                if _points_at(t.get_loc(e.kind, e.id), spid, e.offset) and t.get_manifest(e.id) is None:
                    drop_location(t, e.kind, e.id)
            self._stale = []
            for pid in packs:
                cur = t.get_pack(pid)
                if cur is not None and cur.state in (PACK_SEALED, PACK_OPEN) and cur.live_entries == 0:
                    t.put_pack(pid, _state(cur, PACK_RETIRED, now))
                    self.report.packs_retired += 1

    def _abort_stale_uploads(self) -> None:
        abort: Callable | None = getattr(self.packs.files, "abort_stale_uploads", None)
        if abort is not None and self.delete:
            try:
                self.report.pack_uploads_aborted += abort(max(self.min_age, 3600.0))
            except Exception as exc:  # best effort: the backend's lifecycle rules may do it too
                log.warning("cannot abort stale pack uploads: %s", exc)


def payload_bytes(row: PackRow) -> int:
    """The bytes of a pack's entries, live or dead: its size without header, entry headers and
    footer (the live fraction is measured against these: a pack of one tiny object is all header
    and footer, and rewriting it would give the same pack again, run after run). A version 1 pack
    (no entry headers) comes out ``ENTRY_HEADER_LEN`` per entry smaller than it is: it is repacked a
    little later, which is harmless."""
    return max(0, row.size - fmt.HEADER_LEN - fmt.footer_len(row.entries) - row.entries * fmt.ENTRY_HEADER_LEN)


def _points_at(loc, pid: bytes, offset: int) -> bool:
    return loc is not None and loc.pack == pid and loc.offset == offset


def _state(row, state: int, now: float):
    from ..index.schema import PackRow

    return PackRow(state, row.size, row.entries, row.live_bytes, row.live_entries, row.created, now)


def _ranges(entries: list[fmt.Entry]) -> list[list[fmt.Entry]]:
    """Entries in offset order, grouped into reads of at most ``READ_RANGE`` bytes."""
    groups: list[list[fmt.Entry]] = []
    for e in entries:
        if groups and e.offset + e.length - groups[-1][0].offset <= READ_RANGE:
            groups[-1].append(e)
        else:
            groups.append([e])
    return groups
