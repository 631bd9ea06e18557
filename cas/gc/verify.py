"""Verify: prove that every name's bytes are there, and say exactly what is not (DESIGN §4).

Checks, from one read-txn snapshot of the index (the BlockStore is checked live,
while holding the GC lock so no block disappears under the snapshot):

- every object and every open upload part → its manifest is in the index and
  decodes (``--deep``: hashes to its id);
- every block a referenced manifest names has an index row, in state ``live``,
  with the raw length the manifest says;
- every index row's block is in the BlockStore with the stored size the row
  says (``--deep``, and always for a row marked ``damaged``: it is read, decoded
  and re-hashed);
- over packs (``packcheck.py``): every sealed pack is there with its row's size
  and a footer that parses, every location points at an entry of its pack's
  footer and into a pack that is not retired, every pack's live figures match
  the locations; sizes come from the locations, and ``--deep`` reads packs in
  offset order (coalesced ranged reads) instead of one random read per block;
- the counters (objects, logical bytes, unique blocks, stored and raw bytes)
  agree with the rows.

Findings are data (``Finding``: kind, block, objects, detail), collected rather
than raised; damaged blocks are traced back to every name that uses them. A
``live`` or ``condemned`` row whose block was found missing or corrupt is marked
``damaged`` (``blocklife``), with or without ``repair``: the mark changes nothing
a reader sees and makes the next upload of those bytes write the block again.
Orphans (block files or locations without a row: garbage for GC), unreferenced
rows, open, abandoned and retired packs are counted, not findings; a pack file
without a row is a finding (``unknown_pack``) and is never deleted.

``repair`` does only fixes that need no guessing, after the findings are
reported: a referenced ``condemned`` row goes back to ``live``; a row whose
block is missing or corrupt is dropped (the corrupt file deleted first, behind
a ``deleting`` row, as GC does), so the next upload of those bytes writes the
block again and heals every name that uses it; a row whose stored size is
wrong but whose block decodes is corrected; a missing row of a block that is
present and decodes is recreated; a ``damaged`` row whose block reads back
correctly is ``live`` again; a referenced ``deleting`` row (left by a repair
that was killed) is finished: back to ``live`` if its block decodes, otherwise
the file is deleted and the row dropped; counters (and a pack's live figures)
are set right by adding the difference; a location outside its pack's footer or
in a retired pack is moved by writing the block (verified) again, and every
entry of a missing, cut or damaged pack is moved out the same way (manifests
from the index's copy), so gc retires and deletes the pack. Names whose bytes are
gone are listed in ``damaged_objects``.

Memory: one ``MarkSet`` of referenced manifests and one of referenced blocks
(8 bytes each), one batch of rows (over packs: one record per pack), plus the findings. Cost is linear in names +
manifest entries + blocks (+ bytes stored with ``deep``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor

from .. import blocklife
from ..blocks import packs_of
from ..errors import BlockNotFound, IntegrityError
from ..ids import block_id
from ..index.schema import CONDEMNED, DAMAGED, DELETING, BlockRow
from ..manifest import iter_entries
from .mark import MarkSet, manifest_ids_of
from .packcheck import KINDS as PACK_KINDS
from .packcheck import PackCheck
from .progress import NullBar, ProgressFactory, no_progress
from .repair import Repair
from .report import Finding, VerifyReport
from .runs import record_run
from .safety import gc_lock

log = logging.getLogger(__name__)

BATCH = 512
WORKERS = 4
LOCK_WAIT = 3600.0

#: kind -> what it means (also the order findings are listed in)
KINDS = {
    "missing_manifest": "a name's manifest is not in the index",
    "damaged_manifest": "a manifest does not decode or does not hash to its id",
    "missing_block_row": "a manifest names a block the index has no row for",
    "referenced_deleting": "a block in use is being deleted",
    "referenced_condemned": "a block in use is condemned",
    "length_mismatch": "a manifest and the block's row disagree on its length",
    "missing_block": "the BlockStore does not have a block the index lists",
    "size_mismatch": "a stored block's size differs from its index row",
    "corrupt_block": "a stored block does not decode or does not hash to its id",
    "stale_damage_mark": "a block marked damaged reads back correctly",
    "counter_mismatch": "a store counter disagrees with the rows",
    **PACK_KINDS,
}
# findings whose block's names cannot be read back
_DATA_LOSS = {"missing_manifest", "damaged_manifest", "missing_block_row", "referenced_deleting",
              "length_mismatch", "missing_block", "corrupt_block"}


class _RateLimit:
    """At most ``rate`` bytes per second on average (``None``: unlimited); thread-safe."""

    def __init__(self, rate: float | None):
        self.rate = rate
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._bytes = 0

    def take(self, n: int) -> None:
        if not self.rate:
            return
        with self._lock:
            self._bytes += n
            due = self._start + self._bytes / self.rate
        delay = due - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def verify(store, *, deep: bool = False, repair: bool = False, rate_limit: float | None = None,
           progress: ProgressFactory | None = None, lock_wait: float = LOCK_WAIT,
           workers: int = WORKERS) -> VerifyReport:
    """Check ``store`` (see the module docstring); ``rate_limit`` caps deep reads in bytes/s."""
    v = _Verify(store, deep, rate_limit, progress or no_progress, workers)
    with gc_lock(store.index, wait=lock_wait):
        v.run()
        fixer = Repair(store, v.report, v._by_block, v._rows, v._counter_delta,
                       v.packcheck.fixes if v.packcheck is not None else None)
        fixer.mark_damaged()
        if repair and v.report.findings:
            fixer.repair()
        record_run(store, "verify", len(v.report.findings), deep=deep)
    v.report.seconds = round(time.monotonic() - v.t0, 3)
    log.debug("%s", v.report.summary())
    return v.report


class _Verify:
    def __init__(self, store, deep: bool, rate_limit: float | None, progress: ProgressFactory, workers: int):
        self.store = store
        self.index = store.index
        self.blocks = store.blocks
        self.codec = store.codec
        self.deep = deep
        self.limit = _RateLimit(rate_limit)
        self.progress = progress
        self.workers = max(1, workers)
        self.report = VerifyReport(deep=deep)
        self.manifests = MarkSet()
        self.marked = MarkSet()
        self.t0 = time.monotonic()
        # block id -> findings about it (damage is rare: this stays small)
        self._by_block: dict[bytes, list[Finding]] = {}
        self._rows: dict[bytes, BlockRow] = {}  # rows of damaged blocks, for repair
        self._tick = NullBar().update
        packs = packs_of(store.blocks)
        self.packcheck = PackCheck(self, packs) if packs is not None else None

    def _add(self, finding: Finding, bid: bytes | None = None) -> Finding:
        self.report.findings.append(finding)
        if bid is not None:
            self._by_block.setdefault(bid, []).append(finding)
        log.debug("%s", finding)
        return finding

    # -- the checks ------------------------------------------------------------------------------
    def run(self) -> None:
        pc = self.packcheck
        with self.index.read() as t:
            self._names(t)
            self._manifests(t)
            if pc is None:  # one object per block (a backend handed in by tests, S3 until packs)
                totals = self._blocks(t)
            else:
                pc.scan_packs(t)
                tally = blocklife.Tally()
                pc.scan_locations(t, tally)
                pc.read_blocks(t)
                pc.finish()
                totals = tally.totals
            self._counters(t, totals)
            if pc is None:
                self._orphans()
            if self._by_block:
                self._trace(t)
            if pc is not None:
                pc.name_objects()
        if pc is not None:
            pc.unknown_packs()
        self.report.mark_memory = self.manifests.nbytes() + self.marked.nbytes()

    def _names(self, t) -> None:
        r = self.report
        bar = self.progress("verify: names", t.counter("objects"))
        try:
            self._logical = 0
            for bucket, key, rec in t.iter_objects():
                r.objects += 1
                self._logical += rec.get("size", 0)
                self._check_name(t, f"{bucket}/{key}", rec)
                bar.update(1)
            uploads = {u: rec for u, rec in t.iter_uploads()}
            for upload_id, number, rec in t.iter_parts():
                r.parts += 1
                up = uploads.get(upload_id, {})
                self._check_name(t, _part_name(upload_id, number, up), rec)
        finally:
            bar.close()
        self.manifests.freeze()

    def _check_name(self, t, name: str, rec: dict) -> None:
        mid = manifest_ids_of(rec)
        if mid is None:
            self._add(Finding("missing_manifest", "", (name,), "the record names no manifest"))
            return
        if t.get_manifest(mid) is None:
            self._add(Finding("missing_manifest", "", (name,), f"manifest {mid.hex()} is not in the index"))
            return
        self.manifests.add(mid)

    def _manifests(self, t) -> None:
        r = self.report
        bar = self.progress("verify: manifests", None)
        try:
            for mid, raw in t.iter_manifests():
                r.manifests += 1
                if mid not in self.manifests:
                    r.manifests_unreferenced += 1
                    continue
                entries = _decode(raw)
                if entries is None or (self.deep and block_id(raw) != mid):
                    why = "does not decode" if entries is None else "does not hash to its id"
                    f = self._add(Finding("damaged_manifest", "", (), f"manifest {mid.hex()} {why}"))
                    self._damaged_manifest(t, mid, f)
                    continue
                for bid, length in entries:
                    self.marked.add(bid)
                    self._check_entry(t, bid, length)
                bar.update(len(entries))
        finally:
            bar.close()
        self.marked.freeze()

    def _damaged_manifest(self, t, mid: bytes, finding: Finding) -> None:
        names = [n for n, m in _names_of(t) if m == mid]
        finding.objects = tuple(names)

    def _check_entry(self, t, bid: bytes, length: int) -> None:
        if bid in self._by_block:
            return  # already reported once; its names are traced at the end
        row = t.get_block(bid)
        if row is None:
            self._add(Finding("missing_block_row", bid.hex(), (), "no index row"), bid)
            return
        if row.state == DELETING:
            self._add(Finding("referenced_deleting", bid.hex(), (), "the row is in state deleting"), bid)
        elif row.state == CONDEMNED:
            self._add(Finding("referenced_condemned", bid.hex(), (), "the row is in state condemned"), bid)
        if row.raw_len != length:
            self._add(Finding("length_mismatch", bid.hex(), (),
                              f"the manifest says {length} bytes, the row {row.raw_len}"), bid)
        if bid in self._by_block:
            self._rows[bid] = row

    def _blocks(self, t) -> dict[str, int]:
        """Block rows against a store of one object per block: stat each (``deep``: read it)."""
        tally = blocklife.Tally()
        bar = self.progress("verify: blocks" + (" (deep)" if self.deep else ""), blocklife.block_count(t))
        self._tick = bar.update  # the workers move it block by block
        pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="cas-verify")
        inflight: list[Future] = []
        try:
            batch: list[tuple[bytes, BlockRow]] = []
            for bid, row in t.iter_blocks():
                self._count_row(bid, row, tally)
                if row.state == DELETING:
                    continue  # on its way out: its file may be gone already
                batch.append((bid, row))
                if len(batch) >= BATCH:
                    inflight.append(pool.submit(self._check_files, batch))
                    batch = []
                    if len(inflight) > 2 * self.workers:
                        self._collect(inflight.pop(0).result(), bar)
            if batch:
                inflight.append(pool.submit(self._check_files, batch))
            for fut in inflight:
                self._collect(fut.result(), bar)
        finally:
            for fut in inflight:
                fut.cancel()
            pool.shutdown(wait=True)
            bar.close()
        return tally.totals

    def _count_row(self, bid: bytes, row: BlockRow, tally: blocklife.Tally) -> None:
        """The report's figures of one block row."""
        r = self.report
        r.blocks += 1
        tally.add(row)
        if bid in self.marked:
            r.blocks_referenced += 1
        else:
            r.blocks_unreferenced += 1
        if row.state == CONDEMNED:
            r.blocks_condemned += 1
        if row.state == DAMAGED:
            r.blocks_damaged += 1
        if row.state == DELETING:
            r.blocks_deleting += 1

    def _check_files(self, batch: list[tuple[bytes, BlockRow]]) -> tuple[int, list]:
        """In a worker: (rows checked, [(id, row, kind, detail, bytes read)])."""
        out = []
        for bid, row in batch:
            try:
                if self.deep or row.state == DAMAGED:
                    stored = self.blocks.get(bid)
                    self.limit.take(len(stored))
                    size = len(stored)
                    problem = self._size_problem(row, size)
                    if problem is None:
                        try:
                            self.codec.decode(bid, stored)
                        except IntegrityError as exc:
                            problem = ("corrupt_block", str(exc))
                    if problem is None and row.state == DAMAGED:
                        problem = ("stale_damage_mark", "marked damaged, but it reads back correctly")
                    out.append((bid, row, *(problem or (None, None)), size))
                else:
                    size = self.blocks.stat(bid).size
                    problem = self._size_problem(row, size)
                    if problem is not None:
                        out.append((bid, row, *problem, 0))
            except BlockNotFound:
                out.append((bid, row, "missing_block", "not in the BlockStore", 0))
            self._tick(1)
        return len(batch), out

    @staticmethod
    def _size_problem(row: BlockRow, size: int) -> tuple[str, str] | None:
        if size != row.stored_size:
            return "size_mismatch", f"stored {size} bytes, the row says {row.stored_size}"
        return None

    def _collect(self, result: tuple[int, list], bar) -> None:
        _, problems = result
        for bid, row, kind, detail, nread in problems:
            self.report.bytes_read += nread
            if kind is None:
                continue
            if (self.deep or row.state == DAMAGED) and kind == "size_mismatch":
                kind, detail = "corrupt_block", detail + " (truncated or overwritten)"
            referenced = bid in self.marked
            self._add(Finding(kind, bid.hex(), (), detail + ("" if referenced else " (unreferenced)")), bid)
            self._rows[bid] = row

    def _counters(self, t, totals: dict[str, int]) -> None:
        actual = dict(totals, objects=self.report.objects, logical_bytes=self._logical)
        self._counter_delta = {}
        for name, value in actual.items():
            kept = t.counter(name)
            if kept != value:
                self._counter_delta[name] = value - kept
                self._add(Finding("counter_mismatch", "", (), f"{name} is {kept}, the rows say {value}"))

    def _orphans(self) -> None:
        bar = self.progress("verify: orphans", None)
        pending: list[bytes] = []
        try:
            for bid, _ in self.blocks.iter_ids():
                pending.append(bid)
                bar.update(1)
                if len(pending) >= BATCH:
                    self._orphan_batch(pending)
                    pending = []
            self._orphan_batch(pending)
        finally:
            bar.close()
        self.report.temp_files = sum(1 for _ in self.blocks.iter_temp())

    def _orphan_batch(self, ids: list[bytes]) -> None:
        with self.index.read() as t:  # fresh: rows committed since the snapshot are not orphans
            self.report.orphans += sum(1 for bid in ids if t.get_block(bid) is None)

    def _trace(self, t) -> None:
        """Attach to each block finding the names whose manifests use that block."""
        damaged = set(self._by_block)
        hit: dict[bytes, set[bytes]] = {}  # manifest id -> damaged blocks in it
        for mid, raw in t.iter_manifests():
            if mid not in self.manifests:
                continue
            entries = _decode(raw)
            if entries is None:
                continue
            found = {bid for bid, _ in entries if bid in damaged}
            if found:
                hit[mid] = found
        names: dict[bytes, list[str]] = {}
        for name, mid in _names_of(t):
            for bid in hit.get(mid, ()):
                names.setdefault(bid, []).append(name)
        for bid, findings in self._by_block.items():
            for f in findings:
                f.objects = tuple(sorted(names.get(bid, ())))
        lost = set()
        for f in self.report.findings:
            if f.kind in _DATA_LOSS:
                lost.update(f.objects)
        self.report.damaged_objects = sorted(lost)


def _decode(raw: bytes) -> list[tuple[bytes, int]] | None:
    """The entries of an encoded manifest, or None when it is damaged (a finding, not an error)."""
    try:
        return list(iter_entries(raw))
    except IntegrityError:
        return None


def _part_name(upload_id: str, number: int, upload: dict) -> str:
    target = f"{upload.get('bucket', '?')}/{upload.get('key', '?')}"
    return f"{target} (upload {upload_id} part {number})"


def _names_of(t) -> Iterable[tuple[str, bytes]]:
    """(name, manifest id) for every object and open upload part."""
    for bucket, key, rec in t.iter_objects():
        mid = manifest_ids_of(rec)
        if mid is not None:
            yield f"{bucket}/{key}", mid
    uploads = {u: rec for u, rec in t.iter_uploads()}
    for upload_id, number, rec in t.iter_parts():
        mid = manifest_ids_of(rec)
        if mid is not None:
            yield _part_name(upload_id, number, uploads.get(upload_id, {})), mid

