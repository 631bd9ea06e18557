"""Repair: what ``cas verify`` does about its findings (DESIGN §4), after reporting them.

``Repair.mark_damaged`` runs on every verify: rows of blocks found missing or corrupt are
marked ``damaged`` (``blocklife``), unless the row changed since verify saw it.
``Repair.repair`` (``--repair``) applies only fixes that need no guessing; the list is in
``cas.gc.verify``'s docstring. Each fix is its own short write txn, re-checking the row (and
pins) it acts on; block deletions follow GC's order (``deleting`` row, delete the file, drop
the row), with crash points between the steps, and a referenced ``deleting`` row left by a
killed repair is finished by the next one. Runs under the GC lock that verify holds.

Over packs (``PackFixes`` from ``packcheck.py``), "deleting a block" drops its location (the bytes
become dead in their pack), and three more fixes apply, each one verified write at a time:

- a pack's live figures are corrected first (by the difference verify saw), before any other fix
  moves them;
- a location outside its pack's footer, or in a retired pack, is moved by writing the block's
  bytes again once they decode to its id (a manifest: the index's copy, once it hashes to its
  id); a manifest copy that is damaged or lost is put again the same way;
- a pack that is missing, cut short or has a damaged footer is evacuated: after the block fixes
  dropped the rows of blocks whose bytes are gone, every remaining located entry with a row (or
  an index manifest) is moved out as above. Its row is then left with nothing live, so gc
  retires it and deletes it after the grace. Locations without a row (orphans) are gc's: a
  writer may be about to commit them.
A crash between writing a copy and the sync that moves its location leaves dead bytes, never a
location without bytes.
"""

from __future__ import annotations

import logging

from .. import blocklife
from ..config import testonly_crash_point
from ..blocks import packs_of
from ..errors import BlockNotFound, IntegrityError, StoreError
from ..ids import block_id, short
from ..index.schema import CONDEMNED, DAMAGED, DELETING, KIND_DATA, KIND_MANIFEST, LIVE, BlockRow, PackRow

log = logging.getLogger(__name__)


class Repair:
    """Fixes for one verify run's findings (``by_block``: block id -> its findings; ``rows``: the
    rows verify saw for those blocks; ``counter_delta``: counter name -> correction; ``pack_fixes``:
    ``packcheck.PackFixes`` over packs, else None)."""

    def __init__(self, store, report, by_block: dict, rows: dict[bytes, BlockRow], counter_delta: dict[str, int],
                 pack_fixes=None):
        self.store = store
        self.index = store.index
        self.blocks = store.blocks
        self.codec = store.codec
        self.report = report
        self._by_block = by_block
        self._rows = rows
        self._counter_delta = counter_delta
        self._pack_fixes = pack_fixes
        self._packs = packs_of(store.blocks)

    # -- damage marks ----------------------------------------------------------------------------
    def mark_damaged(self) -> None:
        """Mark the rows of blocks found missing or corrupt ``damaged`` (unless changed since)."""
        for bid, findings in self._by_block.items():
            if not {"missing_block", "corrupt_block"} & {f.kind for f in findings}:
                continue
            row = self._rows.get(bid)
            if row is None or row.state not in (LIVE, CONDEMNED):
                continue
            kind = next(f.kind for f in findings if f.kind in ("missing_block", "corrupt_block"))
            if blocklife.mark_damaged(self.index, bid, self.store.clock, kind.split("_")[0], seen=row):
                self.report.marked_damaged += 1
                self.report.blocks_damaged += 1
        if self.report.marked_damaged:
            testonly_crash_point("verify.after_mark")

    # -- repair ----------------------------------------------------------------------------------
    def repair(self) -> None:
        """Safe fixes only (see the module docstring); damaged names stay listed."""
        if self._pack_fixes is not None:
            self._fix_live_figures()
        for bid, findings in self._by_block.items():
            kinds = {f.kind for f in findings}
            fixed: set[str] = set()
            if "referenced_condemned" in kinds and self._resurrect(bid):
                fixed.add("referenced_condemned")
            if "missing_block_row" in kinds and self._restore_row(bid):
                fixed.add("missing_block_row")
            if "size_mismatch" in kinds:
                fixed |= self._fix_size(bid)
            if "missing_block" in kinds and self._drop_missing(bid):
                fixed.add("missing_block")
            if "corrupt_block" in kinds and self._drop_corrupt(bid):
                fixed.add("corrupt_block")
            if "stale_damage_mark" in kinds and self._undamage(bid):
                fixed.add("stale_damage_mark")
            if "referenced_deleting" in kinds and self._finish_deleting(bid):
                fixed.add("referenced_deleting")
            for f in findings:
                if f.kind in fixed:
                    f.repaired = True
        if self._counter_delta:
            self._fix_counters()
        if self._pack_fixes is not None:
            self._fix_packs()
        self.report.repaired = sum(1 for f in self.report.findings if f.repaired)

    def _resurrect(self, bid: bytes) -> bool:
        with self.index.write() as t:
            row = t.get_block(bid)
            if row is None or row.state != CONDEMNED:
                return row is not None and row.state == LIVE
            blocklife.resurrect(t, bid, row, self.store.clock())
        return True

    def _restore_row(self, bid: bytes) -> bool:
        try:
            stored = self.blocks.get(bid)
            data = self.codec.decode(bid, stored)
        except (BlockNotFound, IntegrityError):
            return False
        with self.index.write() as t:
            blocklife.restore(t, bid, len(stored), len(data), self.store.clock())
        return True

    def _fix_size(self, bid: bytes) -> set[str]:
        try:
            stored = self.blocks.get(bid)
            self.codec.decode(bid, stored)
        except BlockNotFound:
            return set()
        except IntegrityError:
            return {"size_mismatch"} if self._drop_corrupt(bid) else set()
        with self.index.write() as t:
            row = t.get_block(bid)
            if row is None or row.state == DELETING:
                return set()
            blocklife.set_stored_size(t, bid, row, len(stored))
        return {"size_mismatch"}

    def _pinned(self, t, bid: bytes) -> bool:
        return blocklife.is_pinned(t, bid, self.store.clock())

    def _drop_missing(self, bid: bytes) -> bool:
        """The block is gone: drop its row so the next upload of these bytes writes it again."""
        if self.blocks.has(bid):  # it came back (a writer rewrote it), or is located where its bytes are gone
            try:
                self.codec.decode(bid, self.blocks.get(bid))
                return False  # nothing to drop
            except (BlockNotFound, IntegrityError):
                return self._drop_corrupt(bid)  # its location goes too, behind a deleting row
        with self.index.write() as t:
            row = t.get_block(bid)
            if row is None:
                return True
            if row.state == DELETING or self._pinned(t, bid):
                return False
            blocklife.drop(t, bid, row)
        log.info("dropped the index row of missing block %s", short(bid))
        return True

    def _drop_corrupt(self, bid: bytes) -> bool:
        """Delete a corrupt block behind a ``deleting`` row, then drop the row (GC's order)."""
        with self.index.write() as t:
            row = t.get_block(bid)
            if row is None or row.state == DELETING or self._pinned(t, bid):
                return False
            blocklife.mark_deleting(t, bid, row, self.store.clock())
        testonly_crash_point("verify.repair.after_deleting")
        try:
            self.blocks.sync([bid])  # an entry of this process's open pack: located first, so its seal
            self.blocks.delete(bid)  # does not locate it again
        except StoreError as exc:
            log.warning("cannot delete corrupt block %s: %s (gc will retry)", short(bid), exc)
            return False
        testonly_crash_point("verify.repair.after_block_delete")
        with self.index.write() as t:
            row = t.get_block(bid)
            if row is not None and row.state == DELETING:
                blocklife.drop(t, bid, row)
        log.info("deleted corrupt block %s and dropped its row", short(bid))
        return True

    def _undamage(self, bid: bytes) -> bool:
        """A ``damaged`` row whose block read back correctly (a stale mark) is ``live`` again."""
        with self.index.write() as t:
            row = t.get_block(bid)
            if row is None or row != self._rows.get(bid) or row.state != DAMAGED:
                return row is not None and row.state == LIVE
            blocklife.undamage(t, bid, row, self.store.clock())
        return True

    def _finish_deleting(self, bid: bytes) -> bool:
        """A referenced ``deleting`` row (a repair or gc killed half-way; no gc runs now, we hold
        its lock): back to ``live`` if the block decodes, otherwise finish deleting it."""
        try:
            stored = self.blocks.get(bid)
            data = self.codec.decode(bid, stored)
        except (BlockNotFound, IntegrityError):
            stored = data = None
        with self.index.write() as t:
            row = t.get_block(bid)
            if row is None or row.state != DELETING:
                return row is None or row.state == LIVE
            if data is not None:
                blocklife.revive(t, bid, row, len(stored), len(data), self.store.clock())
                log.info("block %s was being deleted but is referenced and decodes: live again", short(bid))
                return True
        try:
            self.blocks.sync([bid])
            self.blocks.delete(bid)
        except BlockNotFound:
            pass
        except StoreError as exc:
            log.warning("cannot delete block %s: %s (gc will retry)", short(bid), exc)
            return False
        with self.index.write() as t:
            row = t.get_block(bid)
            if row is not None and row.state == DELETING:
                blocklife.drop(t, bid, row)
        log.info("finished deleting damaged block %s and dropped its row", short(bid))
        return True

    def _fix_counters(self) -> None:
        with self.index.write() as t:
            for name, delta in self._counter_delta.items():
                t.add_counter(name, delta)
        for f in self.report.findings:
            if f.kind == "counter_mismatch":
                f.repaired = True

    # -- packs -----------------------------------------------------------------------------------
    def _fix_live_figures(self) -> None:
        """Add to each pack's live figures what verify counted they lacked (before anything moves them)."""
        for pid, (dentries, dbytes, finding) in self._pack_fixes.live_delta.items():
            with self.index.write() as t:
                row = t.get_pack(pid)
                if row is None:
                    continue
                t.put_pack(pid, PackRow(row.state, row.size, row.entries, max(0, row.live_bytes + dbytes),
                                        max(0, row.live_entries + dentries), row.created, row.state_time))
            finding.repaired = True

    def _fix_packs(self) -> None:
        fixes = self._pack_fixes
        for kind, eid, pid, finding in fixes.relocate:
            if self._relocate(kind, eid, pid):
                finding.repaired = True
        for mid, findings in fixes.manifests.items():
            if self._put_manifest(mid):
                for f in findings:
                    f.repaired = True
        for pid, finding in fixes.evacuate.items():
            if self._evacuate(pid):
                finding.repaired = True

    def _relocate(self, kind: int, eid: bytes, pid: bytes) -> bool:
        """Move ``eid``'s location out of pack ``pid`` by writing its verified bytes again."""
        if kind == KIND_MANIFEST:
            return self._put_manifest(eid, pid)
        loc = self._packs.location(eid)
        if loc is None or loc.pack != pid:
            return True  # moved or dropped since
        try:
            stored = self.blocks.get(eid)
            self.codec.decode(eid, stored)
        except (BlockNotFound, IntegrityError) as exc:
            log.warning("cannot move block %s out of pack %s: %s", short(eid), pid.hex(), exc)
            return False
        self.blocks.put(eid, stored)
        self.blocks.sync([eid])
        log.info("moved block %s out of pack %s", short(eid), pid.hex())
        return True

    def _put_manifest(self, mid: bytes, pid: bytes | None = None) -> bool:
        """Put the index's copy of manifest ``mid`` into a pack again (if it is still in ``pid``, when given)."""
        with self.index.read() as t:
            raw = t.get_manifest(mid)
            loc = t.get_loc(KIND_MANIFEST, mid)
        if pid is not None and (loc is None or loc.pack != pid):
            return True
        if raw is None or block_id(raw) != mid:
            return False  # no sound copy to put (verify reports the index's copy on its own)
        self.blocks.put_manifest(mid, raw)
        self.blocks.sync([mid])
        log.info("put manifest %s into a pack again", short(mid))
        return True

    def _evacuate(self, pid: bytes) -> bool:
        """Move every located entry with a row (or an index manifest) out of pack ``pid``."""
        with self.index.read() as t:
            entries = [(kind, eid) for kind in (KIND_DATA, KIND_MANIFEST)
                       for eid, loc in t.iter_locs(kind) if loc.pack == pid]
            rows = {eid: t.get_block(eid) for kind, eid in entries if kind == KIND_DATA}
            indexed = {eid for kind, eid in entries if kind == KIND_MANIFEST and t.get_manifest(eid) is not None}
        done = True
        for kind, eid in entries:
            if kind == KIND_DATA and (rows[eid] is None or rows[eid].state == DELETING):
                continue  # an orphan or a block on its way out: gc's
            if kind == KIND_MANIFEST and eid not in indexed:
                continue  # a copy no name can use yet (its writer may be committing): gc's
            done = self._relocate(kind, eid, pid) and done
        return done
