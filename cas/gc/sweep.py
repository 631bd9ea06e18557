"""Mark and sweep garbage collection that never loses data, even while uploads run (DESIGN §4).

One run (``collect``), holding the store's GC lock (``safety.gc_lock``):

1. Expire multipart uploads older than ``gc.upload_expiry``; forget writers whose
   lease expired, and their pins (a pin without a writer row is dead for good:
   the heartbeat only renews rows that exist).
2. Mark from one read-txn snapshot at commit sequence S: every object's
   manifest, every open upload part's manifest, then their blocks (``mark``).
3. Stream the ``blocks`` table in batches (a fresh read txn per batch). Per batch:
   - condemn txn: re-mark every manifest committed after what is marked so far
     (``refs`` after S), then condemn what ``blocklife.may_condemn`` allows and
     resurrect CONDEMNED rows that are marked again;
   - deleting txn: re-mark again, then DELETING for what ``blocklife.may_delete``
     allows; rows already DELETING (a run that crashed) are resumed;
   - delete those blocks from the BlockStore (outside any txn);
   - drop-row txn: ``blocklife.drop`` (which keeps the counters).
   A crash anywhere leaves garbage or DELETING rows, never a dangling reference.
4. Delete manifests no name or open upload refers to (same re-marking rule).
5. Orphans (block files without an index row) that ``blocklife.may_delete_orphan``
   allows → a guarding DELETING row → delete → drop the row. Old temp files of
   interrupted writes go too (``safety.temp_grace``). A run refuses before 1 when the index
   is not the backend's, and before 3 when orphans are an implausible share of the backend
   (``guard.py``).
6. Trim the ``refs`` log up to S.

**Departure (recorded here and in the report):** the design says "condemn in one
write txn"; this module condemns in one short write txn *per batch* of at most
``batch`` blocks, each of which first re-marks every manifest committed since
the previous re-mark. The guarantee is the same — at the moment a block is
condemned, every manifest committed so far is marked and the block is unpinned
— and writers never wait behind a write txn that walks the whole index.

Without ``delete`` the run is a dry run, and the *same* code runs (kopia's ``DryRun``):
every phase makes the same decisions through ``cas.blocklife``, but its txns are read
txns wrapped in ``_DryTxn``, which takes the writes into an overlay instead of the index
(block rows for the batch at hand, reaped writers for the whole run), and no file is
deleted. So a dry run counts exactly what a real run with the same ``min_age`` would do
now: pins of writers the real run reaps first protect nothing, and with ``min_age`` 0 a
block it condemns is counted as deleted too. A forgotten write fails on the read txn
rather than writing.

Memory: the two mark sets (8 bytes per referenced block and per referenced
manifest, see ``mark.MarkSet``) plus one batch of rows; everything else streams.
Cost is linear in blocks + manifest entries + names.

Thread-safety: a run uses the Store's index and BlockStore from the calling
thread only; it may run while other threads and processes write and read.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from .. import blocklife
from ..blocks import packs_of
from ..blocks.packs.store import drop_location
from ..config import testonly_crash_point
from ..errors import BlockNotFound, CasError, Conflict, IdentityMismatch, Refused
from ..ids import short
from ..index.schema import CONDEMNED, DELETING, KIND_DATA, KIND_MANIFEST, LIVE
from . import guard
from .mark import Marker
from .packs import DryDrops, PackSweep
from .progress import ProgressFactory, no_progress
from .report import GcReport, human_duration
from .runs import record_run
from .safety import gc_lock, temp_grace

log = logging.getLogger(__name__)

BATCH = 2048
DELETE_WORKERS = 4

Hook = Callable[[str], None]


class _DryTxn:
    """A read txn as a dry run's write txn: writes land in the overlay, reads see them.

    ``rows``: block id -> the row the real run would have written (None: dropped); the run
    clears it per batch, since a real run is done with a batch's rows when it moves on.
    ``writers``: writer rows the real run would have dropped. Every other read goes to the
    index; a write not taken here reaches the read-only txn and fails.
    """

    def __init__(self, t, rows: dict, writers: set[bytes]):
        self._t = t
        self._rows = rows
        self._writers = writers

    def __getattr__(self, name):
        return getattr(self._t, name)

    def get_block(self, block_id: bytes):
        return self._rows[block_id] if block_id in self._rows else self._t.get_block(block_id)

    def put_block(self, block_id: bytes, row) -> None:
        self._rows[block_id] = row

    def delete_block(self, block_id: bytes) -> bool:
        self._rows[block_id] = None
        return True

    def add_counter(self, name: str, delta: int) -> int:
        return self._t.counter(name)

    def writer_expiry(self, writer_id: bytes) -> float | None:
        return None if writer_id in self._writers else self._t.writer_expiry(writer_id)

    def delete_writer(self, writer_id: bytes) -> None:
        self._writers.add(writer_id)

    def drop_pin(self, block_id: bytes, writer_id: bytes) -> None:
        return None  # a pin without a writer row counts for nothing already

    def delete_manifest(self, manifest_id: bytes) -> bool:
        return self._t.get_manifest(manifest_id) is not None


class _Stopped(Exception):
    """The caller asked the run to stop (server shutdown)."""


def collect(store, *, delete: bool = False, min_age: float | None = None,
            progress: ProgressFactory | None = None, hook: Hook | None = None, batch: int = BATCH,
            lock_wait: float = 0.0, stop: threading.Event | None = None, force_orphans: bool = False) -> GcReport:
    """One GC run over ``store``; a dry run unless ``delete``.

    ``min_age`` defaults to ``gc.min_age``. ``hook(point)`` is called at the
    named points of the run (tests force interleavings with it); each point is
    also a ``CAS_TESTONLY_CRASH_AT=gc.<point>`` crash point. ``stop`` ends the
    run early at a batch boundary (the report says ``interrupted``). Raises
    ``Conflict`` when another GC or verify holds the lock after ``lock_wait``
    seconds, ``IdentityMismatch`` when the index is not the backend's, and ``Refused`` when
    orphans are an implausible share of the backend unless ``force_orphans`` (``guard.py``);
    either way before anything is deleted (a dry run refuses as the real run would).
    """
    run = _Run(store, delete, store.settings.gc.min_age if min_age is None else float(min_age),
               progress or no_progress, hook, max(1, batch), stop, force_orphans)
    with gc_lock(store.index, wait=lock_wait):
        run.point("after_lock")
        report = run.run()
        # findings of a GC run: blocks it freed (or, in a dry run, would free)
        record_run(store, "gc", report.freed_blocks, freed_bytes=report.freed_bytes, delete=delete)
        return report


class _Run:
    def __init__(self, store, delete: bool, min_age: float, progress: ProgressFactory, hook: Hook | None,
                 batch: int, stop: threading.Event | None, force_orphans: bool = False):
        self.store = store
        self.force_orphans = force_orphans
        self.index = store.index
        self.blocks = store.blocks
        self.clock = store.clock
        self.delete = delete
        self.min_age = min_age
        self.progress = progress
        self.hook = hook
        self.batch = batch
        self.stop = stop
        self.marker = Marker()
        self.report = GcReport(delete=delete, min_age=min_age)
        self._pool: ThreadPoolExecutor | None = None
        self._skip_uploads: list[str] = []
        self._dry_rows: dict = {}  # a dry run's overlay (see _DryTxn)
        self._dry_writers: set[bytes] = set()
        self.dry_drops = DryDrops()  # a dry run: the locations the real run's sweep would drop

    def point(self, name: str) -> None:
        testonly_crash_point(f"gc.{name}")
        if self.hook is not None:
            self.hook(name)

    def step(self, name: str) -> None:
        """A named point between the writes of a deleting run (a dry run writes nothing to break)."""
        if self.delete:
            self.point(name)

    def _check_stop(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise _Stopped

    @contextlib.contextmanager
    def _txn(self) -> Iterator:
        """The run's write txn; in a dry run a read txn whose writes go to the overlay."""
        if self.delete:
            with self.index.write() as t:
                yield t
        else:
            with self.index.read() as t:
                yield _DryTxn(t, self._dry_rows, self._dry_writers)

    @contextlib.contextmanager
    def _read(self) -> Iterator:
        """A read txn that sees what the run has written (in a dry run: its overlay)."""
        with self.index.read() as t:
            yield t if self.delete else _DryTxn(t, self._dry_rows, self._dry_writers)

    def run(self) -> GcReport:
        t0 = time.monotonic()
        try:
            guard.check_identity(self.store)  # before anything is deleted, even an expired upload
            self._expire_and_reap()
            self._mark()
            self.point("after_mark")
            guard.check_orphans(self.store, is_marked=self.marker.is_marked, now=self.clock(),
                                min_age=self.min_age, force=self.force_orphans)
            self._sweep_blocks()
            self._sweep_manifests()
            self._sweep_orphans()
            self._sweep_temp()
            self.point("before_packs")
            PackSweep(self)()
            if self.delete:
                self.point("before_trim")
                with self.index.write() as t:
                    self.report.refs_trimmed = t.trim_refs(self.marker.snapshot_seq)
        except _Stopped:
            self.report.interrupted = True
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            self.report.seconds = round(time.monotonic() - t0, 3)
        log.debug("%s", self.report.summary())
        return self.report

    # -- 1: uploads and dead writers -----------------------------------------------------------
    def _expire_and_reap(self) -> None:
        expiry = self.store.settings.gc.upload_expiry
        if self.delete:
            self.report.uploads_expired = self.store.expire_uploads(expiry)
        else:  # the real run aborts them first: marking skips their parts as if it had
            now = self.clock()
            with self.index.read() as t:
                self._skip_uploads = [u for u, r in t.iter_uploads() if r["initiated"] < now - expiry]
            self.report.uploads_expired = len(self._skip_uploads)
        self._reap_writers()

    def _reap_writers(self) -> None:
        """Forget writers whose lease expired or whose process died, then every pin without a
        writer row."""
        with self._txn() as t:
            dead = blocklife.reap_dead_writers(t, self.clock())
            # an open pack's lease is a writer row too: a dead one leaves an abandoned pack to repack
            packs = {w for w in dead if t.get_pack(w) is not None}
            self.report.dead_writers = len(dead - packs)
            self.report.abandoned_packs = len(packs)
        stale: list[tuple[bytes, bytes]] = []
        with self._read() as snapshot:
            for pin in blocklife.stale_pins(snapshot):
                stale.append(pin)
                if len(stale) >= self.batch:
                    self._drop_pins(stale)
                    stale = []
        if stale:
            self._drop_pins(stale)

    def _drop_pins(self, stale: list[tuple[bytes, bytes]]) -> None:
        with self._txn() as t:
            self.report.dead_pins += blocklife.drop_stale_pins(t, stale)

    # -- 2: mark ---------------------------------------------------------------------------------
    def _mark(self) -> None:
        bar = self.progress("gc: mark", None)
        try:
            with self.index.read() as t:
                self.marker.mark_snapshot(t, skip_uploads=self._skip_uploads, tick=bar.update)
        finally:
            bar.close()
        self.report.snapshot_seq = self.marker.snapshot_seq
        self.report.marked_manifests = len(self.marker.manifests)
        self.report.marked_blocks = len(self.marker.blocks)
        self.report.mark_memory = self.marker.blocks.nbytes() + self.marker.manifests.nbytes()
        log.debug("marked %d manifests and %d blocks at seq %d", self.report.marked_manifests,
                  self.report.marked_blocks, self.report.snapshot_seq)

    # -- 3: blocks -------------------------------------------------------------------------------
    def _sweep_blocks(self) -> None:
        with self.index.read() as t:
            total = blocklife.block_count(t)
        bar = self.progress("gc: sweep", total)
        start = b""
        try:
            while True:
                self._check_stop()
                rows = []
                with self.index.read() as t:
                    for bid, row in t.iter_blocks(start):
                        rows.append((bid, row))
                        if len(rows) >= self.batch:
                            break
                if not rows:
                    return
                start = rows[-1][0] + b"\x00"
                self.report.blocks_seen += len(rows)
                self._blocks_batch(rows, bar)
                if len(rows) < self.batch:
                    return
        finally:
            bar.close()

    def _classify(self, rows):
        condemn, resurrect, doomed, resume = [], [], [], []
        marked = self.marker.is_marked
        for bid, row in rows:
            if row.state == LIVE:
                if not marked(bid):
                    condemn.append(bid)
            elif row.state == CONDEMNED:
                (resurrect if marked(bid) else doomed).append(bid)
            elif row.state == DELETING:
                resume.append(bid)
        return condemn, resurrect, doomed, resume

    def _blocks_batch(self, rows, bar) -> None:
        """Condemn, then delete what waited out the grace; ``bar`` moves by each row as it is done
        (a deleted block once its file is gone: deleting files is the slow part)."""
        r = self.report
        self._dry_rows.clear()
        condemn, resurrect, doomed, resume = self._classify(rows)
        if condemn or resurrect:
            self.step("before_condemn")
            with self._txn() as t:
                now = self.clock()
                self.marker.remark(t)
                for bid in condemn:
                    row = t.get_block(bid)
                    if blocklife.may_condemn(t, bid, row, self.marker.is_marked(bid), now):
                        blocklife.condemn(t, bid, row, now)
                        r.condemned += 1
                        r.condemned_bytes += row.stored_size
                        doomed.append(bid)
                for bid in resurrect:
                    row = t.get_block(bid)
                    if row is not None and row.state == CONDEMNED and self.marker.is_marked(bid):
                        blocklife.resurrect(t, bid, row, now)
                        r.resurrected += 1
            self.step("after_condemn")
        victims = self._mark_deleting(doomed) + resume
        bar.update(len(rows) - len(victims))
        if victims:
            self._delete_files(victims, bar.update)
            self.step("after_block_delete")
            self._drop_rows(victims)

    def _mark_deleting(self, doomed: list[bytes]) -> list[bytes]:
        if not doomed:
            return []
        out = []
        with self._txn() as t:
            now = self.clock()
            self.marker.remark(t)
            for bid in doomed:
                row = t.get_block(bid)
                if blocklife.may_delete(t, bid, row, self.marker.is_marked(bid), now, self.min_age):
                    blocklife.mark_deleting(t, bid, row, now)
                    out.append(bid)
                elif row is not None and row.state == CONDEMNED:
                    self.report.pending += 1
                    self.report.pending_bytes += row.stored_size
        if out:
            self.step("after_deleting")
        return out

    def _delete_files(self, ids: list[bytes], tick: Callable[[int], object] | None = None) -> None:
        """Delete from the BlockStore (outside any txn; a dry run deletes nothing), calling
        ``tick(1)`` after each; the first failure ends the run."""
        if packs_of(self.blocks) is not None:  # locations: one index txn for all
            if self.delete:
                self.blocks.delete_many(ids)
            else:
                with self.index.read() as t:
                    self.dry_drops.note(t, KIND_DATA, ids)
            if tick is not None:
                for _ in ids:
                    tick(1)
            return
        if not self.delete or len(ids) < 8 or self.blocks.kind == "memory":
            for bid in ids:
                if self.delete:
                    self.blocks.delete(bid)
                if tick is not None:
                    tick(1)
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=DELETE_WORKERS, thread_name_prefix="cas-gc")
        for _ in self._pool.map(self.blocks.delete, ids):
            if tick is not None:
                tick(1)

    def _drop_rows(self, ids: list[bytes]) -> None:
        r = self.report
        with self._txn() as t:
            for bid in ids:
                row = t.get_block(bid)
                if row is None or row.state != DELETING:
                    continue
                if blocklife.drop(t, bid, row):
                    r.deleted += 1
                    r.deleted_bytes += row.stored_size
                else:
                    r.orphans += 1  # an orphan guard left by a run that crashed
                log.debug("deleted block %s", short(bid))

    # -- 4: manifests ----------------------------------------------------------------------------
    def _sweep_manifests(self) -> None:
        """Stream the manifests from one read txn; delete unmarked ones in short write txns."""
        cands: list[bytes] = []
        with self.index.read() as snapshot:
            for mid, _ in snapshot.iter_manifests():
                if mid not in self.marker.manifests:
                    cands.append(mid)
                    if len(cands) >= self.batch:
                        self._manifest_batch(cands)
                        cands = []
        if cands:
            self._manifest_batch(cands)

    def _manifest_batch(self, cands: list[bytes]) -> None:
        self._check_stop()
        with self._txn() as t:
            self.marker.remark(t)
            for mid in cands:
                if mid not in self.marker.manifests and t.delete_manifest(mid):
                    if self.delete:  # its copy in a pack is dead too
                        drop_location(t, KIND_MANIFEST, mid)
                    else:
                        self.dry_drops.note(t, KIND_MANIFEST, [mid])
                    self.report.manifests_deleted += 1

    # -- 5: orphans and temp files ---------------------------------------------------------------
    def _sweep_orphans(self) -> None:
        bar = self.progress("gc: orphans", None)
        pending: list[tuple[bytes, float]] = []
        now = self.clock()
        try:
            for bid, created in self.blocks.iter_ids():
                bar.update(1)
                if not blocklife.grace_over(created, now, self.min_age):
                    self.report.orphans_kept += 1
                    continue
                pending.append((bid, created))
                if len(pending) >= self.batch:
                    self._check_stop()
                    self._orphan_batch(pending)
                    pending = []
            if pending:
                self._orphan_batch(pending)
        finally:
            bar.close()

    def _orphan_batch(self, batch: list[tuple[bytes, float]]) -> None:
        r = self.report
        self._dry_rows.clear()
        with self.index.read() as t:
            cands = [(bid, created) for bid, created in batch if t.get_block(bid) is None]
        if not cands:
            return
        guarded = []
        with self._txn() as t:
            now = self.clock()
            self.marker.remark(t)
            for bid, created in cands:
                if blocklife.may_delete_orphan(t, bid, created, self.marker.is_marked(bid), now, self.min_age):
                    blocklife.guard_orphan(t, bid, created, now)
                    guarded.append(bid)
                else:
                    r.orphans_kept += 1
        if not guarded:
            return
        self.step("after_orphan_deleting")
        sizes = {bid: self._size(bid) for bid in guarded}
        self._delete_files(guarded)
        self.step("after_orphan_delete")
        with self._txn() as t:
            for bid in guarded:
                row = t.get_block(bid)
                if row is not None and row.state == DELETING and not blocklife.counted(row):
                    blocklife.drop(t, bid, row)
                    r.orphans += 1
                    r.orphan_bytes += sizes[bid]
                    log.debug("deleted orphan block %s", short(bid))

    def _size(self, bid: bytes) -> int:
        try:
            return self.blocks.stat(bid).size
        except BlockNotFound:
            return 0

    def _sweep_temp(self) -> None:
        now = self.clock()
        grace = temp_grace(self.min_age)
        for path, mtime in list(self.blocks.iter_temp()):
            if not blocklife.grace_over(mtime, now, grace):
                continue
            try:
                size = path.stat().st_size
                if self.delete:
                    path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("cannot remove temp file %s: %s", path, exc)
                continue
            self.report.temp_files += 1
            self.report.temp_bytes += size


def run_periodic(store, stopping: threading.Event) -> None:
    """``cas serve --gc-interval``: a deleting GC run every ``gc.interval`` seconds until ``stopping``."""
    interval = store.settings.gc.interval
    if not interval or interval <= 0:
        return
    log.info("gc runs every %s inside the server (min age %s)", human_duration(interval),
             human_duration(store.settings.gc.min_age))
    while not stopping.wait(interval):
        try:
            report = collect(store, delete=True, stop=stopping)
            log.info("%s", report.summary())
        except Conflict as exc:
            log.info("gc skipped: %s", exc)
        except (IdentityMismatch, Refused) as exc:  # never forced here: an operator must look
            log.error("gc refused, nothing deleted: %s", exc)
        except CasError as exc:  # logged; the next interval tries again
            log.warning("gc failed: %s", exc)
