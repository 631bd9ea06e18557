"""Mark and sweep garbage collection that never loses data, even while uploads run (DESIGN §4).

One run (``collect``), holding the store's GC lock (``safety.GcLock``):

1. Expire multipart uploads older than ``gc.upload_expiry``; forget writers whose
   lease expired, and their pins (a pin without a writer row is dead for good:
   the heartbeat only renews rows that exist).
2. Mark from one read-txn snapshot at commit sequence S: every object's
   manifest, every open upload part's manifest, then their blocks (``mark``).
3. Stream the ``blocks`` table in batches (a fresh read txn per batch). Per batch:
   - condemn txn: re-mark every manifest committed after what is marked so far
     (``refs`` after S), then LIVE + unmarked + not pinned by a live writer →
     CONDEMNED (state time = now); CONDEMNED + marked → LIVE again;
   - deleting txn: re-mark again, then CONDEMNED for at least ``min_age``,
     unmarked, unpinned → DELETING; rows already DELETING (a run that crashed)
     are resumed;
   - delete those blocks from the BlockStore (outside any txn);
   - drop-row txn: drop the DELETING rows and adjust ``unique_blocks``,
     ``stored_bytes`` and ``raw_bytes``.
   A crash anywhere leaves garbage or DELETING rows, never a dangling reference.
4. Delete manifests no name or open upload refers to (same re-marking rule).
5. Orphans (block files without an index row): older than ``min_age``,
   unreferenced and unpinned → a guarding DELETING row (so a writer that pins
   the id meanwhile waits and writes it again) → delete → drop the row. Old temp
   files of interrupted writes go too (``safety.temp_grace``).
6. Trim the ``refs`` log up to S.

**Departure (recorded here and in the report):** the design says "condemn in one
write txn"; this module condemns in one short write txn *per batch* of at most
``batch`` blocks, each of which first re-marks every manifest committed since
the previous re-mark. The guarantee is the same — at the moment a block is
condemned, every manifest committed so far is marked and the block is unpinned
— and writers never wait behind a write txn that walks the whole index.

Without ``delete`` the run is a dry run: nothing is written, and the report says
what a run with the same ``min_age`` would condemn and delete now. It counts
exactly as the real run would: pins of writers the real run would reap first
(``safety.ReapedView``) protect nothing, and a block the run would condemn is counted
as deleted too when ``min_age`` is 0 (the real run condemns and deletes it at once).

Memory: the two mark sets (8 bytes per referenced block and per referenced
manifest, see ``mark.MarkSet``) plus one batch of rows; everything else streams.
Cost is linear in blocks + manifest entries + names.

Thread-safety: a run uses the Store's index and BlockStore from the calling
thread only; it may run while other threads and processes write and read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace

from ..config import testonly_crash_point
from ..errors import BlockNotFound, CasError, Conflict
from ..ids import short
from ..index.schema import CONDEMNED, DELETING, LIVE
from .mark import Marker
from .progress import ProgressFactory, no_progress
from .runs import record_run
from .safety import (
    GcLock,
    ReapedView,
    counted,
    grace_over,
    may_condemn,
    may_delete,
    may_delete_orphan,
    orphan_row,
    temp_grace,
    writer_alive,
)

log = logging.getLogger(__name__)

BATCH = 2048
DELETE_WORKERS = 4

Hook = Callable[[str], None]


@dataclass
class GcReport:
    """What one run did (or, in a dry run, would do). Sizes are stored (encoded) bytes."""

    delete: bool
    min_age: float
    snapshot_seq: int = 0
    marked_manifests: int = 0
    marked_blocks: int = 0
    mark_memory: int = 0
    blocks_seen: int = 0
    condemned: int = 0
    condemned_bytes: int = 0
    resurrected: int = 0
    deleted: int = 0
    deleted_bytes: int = 0
    pending: int = 0
    pending_bytes: int = 0
    orphans: int = 0
    orphan_bytes: int = 0
    orphans_kept: int = 0
    temp_files: int = 0
    temp_bytes: int = 0
    manifests_deleted: int = 0
    uploads_expired: int = 0
    dead_writers: int = 0
    dead_pins: int = 0
    refs_trimmed: int = 0
    interrupted: bool = False
    seconds: float = 0.0

    @property
    def freed_blocks(self) -> int:
        return self.deleted + self.orphans

    @property
    def freed_bytes(self) -> int:
        return self.deleted_bytes + self.orphan_bytes + self.temp_bytes

    def to_dict(self) -> dict:
        d = asdict(self)
        d["dry_run"] = not self.delete
        d["freed_blocks"] = self.freed_blocks
        d["freed_bytes"] = self.freed_bytes
        return d

    def summary(self) -> str:
        """One line that leads with both phases: what is condemned now and what is deleted now."""
        would = "" if self.delete else "would "
        cond, dele, free = ("condemned", "deleted", "freed") if self.delete else ("condemn", "delete", "free")
        return (f"gc{'' if self.delete else ' (dry run)'}: {would}{cond} {self.condemned} blocks "
                f"({_human(self.condemned_bytes)}), {would}{dele} {self.deleted} blocks "
                f"({_human(self.deleted_bytes)}); {self.pending} condemned blocks ({_human(self.pending_bytes)}) "
                f"{'wait' if self.delete else 'would wait'} out the {_duration(self.min_age)} grace; "
                f"{would}{free} {self.freed_blocks} blocks ({_human(self.freed_bytes)}: {self.deleted} unreferenced, "
                f"{self.orphans} orphans, {self.temp_files} temp files); "
                f"{self.manifests_deleted} manifests, {self.uploads_expired} expired uploads, "
                f"{self.dead_writers} dead writers; {self.marked_blocks} blocks in use; {self.seconds:.1f}s"
                + (" (interrupted)" if self.interrupted else ""))


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _duration(seconds: float) -> str:
    if seconds and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    return f"{seconds:g}s"


class _Stopped(Exception):
    """The caller asked the run to stop (server shutdown)."""


def collect(store, *, delete: bool = False, min_age: float | None = None,
            progress: ProgressFactory | None = None, hook: Hook | None = None, batch: int = BATCH,
            lock_wait: float = 0.0, stop: threading.Event | None = None) -> GcReport:
    """One GC run over ``store``; a dry run unless ``delete``.

    ``min_age`` defaults to ``gc.min_age``. ``hook(point)`` is called at the
    named points of the run (tests force interleavings with it); each point is
    also a ``CAS_TESTONLY_CRASH_AT=gc.<point>`` crash point. ``stop`` ends the
    run early at a batch boundary (the report says ``interrupted``). Raises
    ``Conflict`` when another GC or verify holds the lock after ``lock_wait``
    seconds.
    """
    run = _Run(store, delete, store.settings.gc.min_age if min_age is None else float(min_age),
               progress or no_progress, hook, max(1, batch), stop)
    with GcLock(store.settings.data_dir, wait=lock_wait):
        run.point("after_lock")
        report = run.run()
        # findings of a GC run: blocks it freed (or, in a dry run, would free)
        record_run(store, "gc", report.freed_blocks, freed_bytes=report.freed_bytes, delete=delete)
        return report


class _Run:
    def __init__(self, store, delete: bool, min_age: float, progress: ProgressFactory, hook: Hook | None,
                 batch: int, stop: threading.Event | None):
        self.store = store
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

    def point(self, name: str) -> None:
        testonly_crash_point(f"gc.{name}")
        if self.hook is not None:
            self.hook(name)

    def _check_stop(self) -> None:
        if self.stop is not None and self.stop.is_set():
            raise _Stopped

    def run(self) -> GcReport:
        t0 = time.monotonic()
        try:
            self._expire_and_reap()
            self._mark()
            self.point("after_mark")
            self._sweep_blocks()
            self._sweep_manifests()
            self._sweep_orphans()
            self._sweep_temp()
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
        self._skip_uploads: list[str] = []
        self._dead: set[bytes] = set()
        if self.delete:
            self.report.uploads_expired = self.store.expire_uploads(expiry)
            self._reap_writers()
            return
        now = self.clock()
        with self.index.read() as t:
            self._skip_uploads = [u for u, r in t.iter_uploads() if r["initiated"] < now - expiry]
            dead = {w for w, exp, owner in t.iter_writer_owners() if not writer_alive(exp, owner, now)}
            self.report.dead_writers = len(dead)
            self._dead = dead
            self.report.dead_pins = sum(1 for _, w in t.iter_pins()
                                        if w in dead or t.writer_expiry(w) is None)
        self.report.uploads_expired = len(self._skip_uploads)

    def _reap_writers(self) -> None:
        """Drop rows of writers whose lease expired or whose process died, then every pin
        without a writer row."""
        with self.index.write() as t:
            now = self.clock()
            dead = [w for w, exp, owner in t.iter_writer_owners() if not writer_alive(exp, owner, now)]
            for w in dead:
                t.delete_writer(w)
        self.report.dead_writers = len(dead)
        stale: list[tuple[bytes, bytes]] = []
        with self.index.read() as snapshot:
            for bid, w in snapshot.iter_pins():
                if snapshot.writer_expiry(w) is None:
                    stale.append((bid, w))
                    if len(stale) >= self.batch:
                        self._drop_pins(stale)
                        stale = []
        if stale:
            self._drop_pins(stale)

    def _drop_pins(self, stale: list[tuple[bytes, bytes]]) -> None:
        with self.index.write() as t:
            for bid, w in stale:
                if t.writer_expiry(w) is None:  # a writer row never comes back once dropped
                    t.drop_pin(bid, w)
                    self.report.dead_pins += 1

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
            total = t.counter("unique_blocks")
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
                if self.delete:
                    self._blocks_batch(rows, bar)
                else:
                    self._blocks_batch_dry(rows)
                    bar.update(len(rows))
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

    def _blocks_batch_dry(self, rows) -> None:
        r = self.report
        by_id = dict(rows)
        condemn, resurrect, doomed, resume = self._classify(rows)
        now = self.clock()
        with self.index.read() as txn:
            t = ReapedView(txn, self._dead)
            for bid in condemn:
                row = by_id[bid]
                if may_condemn(t, bid, row, False, now):
                    r.condemned += 1
                    r.condemned_bytes += row.stored_size
                    if self.min_age <= 0:
                        r.deleted += 1
                        r.deleted_bytes += row.stored_size
                    else:
                        r.pending += 1
                        r.pending_bytes += row.stored_size
            for bid in doomed:
                row = by_id[bid]
                if may_delete(t, bid, row, False, now, self.min_age):
                    r.deleted += 1
                    r.deleted_bytes += row.stored_size
                else:
                    r.pending += 1
                    r.pending_bytes += row.stored_size
        r.resurrected += len(resurrect)
        for bid in resume:
            row = by_id[bid]
            if counted(row):
                r.deleted += 1
                r.deleted_bytes += row.stored_size
            else:
                r.orphans += 1  # as _drop_rows counts an orphan guard left by a run that crashed

    def _blocks_batch(self, rows, bar) -> None:
        """Condemn, then delete what waited out the grace; ``bar`` moves by each row as it is done
        (a deleted block once its file is gone: deleting files is the slow part)."""
        r = self.report
        condemn, resurrect, doomed, resume = self._classify(rows)
        if condemn or resurrect:
            self.point("before_condemn")
            with self.index.write() as t:
                now = self.clock()
                self.marker.remark(t)
                for bid in condemn:
                    row = t.get_block(bid)
                    if may_condemn(t, bid, row, self.marker.is_marked(bid), now):
                        t.put_block(bid, replace(row, state=CONDEMNED, state_time=now))
                        r.condemned += 1
                        r.condemned_bytes += row.stored_size
                        doomed.append(bid)
                for bid in resurrect:
                    row = t.get_block(bid)
                    if row is not None and row.state == CONDEMNED and self.marker.is_marked(bid):
                        t.put_block(bid, replace(row, state=LIVE, state_time=now))
                        r.resurrected += 1
            self.point("after_condemn")
        victims = self._mark_deleting(doomed) + resume
        bar.update(len(rows) - len(victims))
        if victims:
            self._delete_files(victims, bar.update)
            self.point("after_block_delete")
            self._drop_rows(victims)

    def _mark_deleting(self, doomed: list[bytes]) -> list[bytes]:
        if not doomed:
            return []
        out = []
        with self.index.write() as t:
            now = self.clock()
            self.marker.remark(t)
            for bid in doomed:
                row = t.get_block(bid)
                if may_delete(t, bid, row, self.marker.is_marked(bid), now, self.min_age):
                    t.put_block(bid, replace(row, state=DELETING, state_time=now))
                    out.append(bid)
                elif row is not None and row.state == CONDEMNED:
                    self.report.pending += 1
                    self.report.pending_bytes += row.stored_size
        if out:
            self.point("after_deleting")
        return out

    def _delete_files(self, ids: list[bytes], tick: Callable[[int], object] | None = None) -> None:
        """Delete from the BlockStore (outside any txn), calling ``tick(1)`` after each; the first
        failure ends the run."""
        if len(ids) < 8 or self.blocks.kind == "memory":
            for bid in ids:
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
        with self.index.write() as t:
            for bid in ids:
                row = t.get_block(bid)
                if row is None or row.state != DELETING:
                    continue
                t.delete_block(bid)
                if counted(row):
                    t.add_counter("unique_blocks", -1)
                    t.add_counter("stored_bytes", -row.stored_size)
                    t.add_counter("raw_bytes", -row.raw_len)
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
        if not self.delete:
            self.report.manifests_deleted += len(cands)
            return
        with self.index.write() as t:
            self.marker.remark(t)
            for mid in cands:
                if mid not in self.marker.manifests and t.delete_manifest(mid):
                    self.report.manifests_deleted += 1

    # -- 5: orphans and temp files ---------------------------------------------------------------
    def _sweep_orphans(self) -> None:
        bar = self.progress("gc: orphans", None)
        pending: list[tuple[bytes, float]] = []
        now = self.clock()
        try:
            for bid, created in self.blocks.iter_ids():
                bar.update(1)
                if not grace_over(created, now, self.min_age):
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
        with self.index.read() as t:
            cands = [(bid, created) for bid, created in batch if t.get_block(bid) is None]
        if not cands:
            return
        if not self.delete:
            now = self.clock()
            with self.index.read() as txn:
                t = ReapedView(txn, self._dead)
                for bid, created in cands:
                    if may_delete_orphan(t, bid, created, self.marker.is_marked(bid), now, self.min_age):
                        r.orphans += 1
                        r.orphan_bytes += self._size(bid)
                    else:
                        r.orphans_kept += 1
            return
        guarded = []
        with self.index.write() as t:
            now = self.clock()
            self.marker.remark(t)
            for bid, created in cands:
                if may_delete_orphan(t, bid, created, self.marker.is_marked(bid), now, self.min_age):
                    t.put_block(bid, orphan_row(created, now))
                    guarded.append(bid)
                else:
                    r.orphans_kept += 1
        if not guarded:
            return
        self.point("after_orphan_deleting")
        sizes = {bid: self._size(bid) for bid in guarded}
        self._delete_files(guarded)
        self.point("after_orphan_delete")
        with self.index.write() as t:
            for bid in guarded:
                row = t.get_block(bid)
                if row is not None and row.state == DELETING and not counted(row):
                    t.delete_block(bid)
                    r.orphans += 1
                    r.orphan_bytes += sizes[bid]
                    log.debug("deleted orphan block %s", short(bid))

    def _size(self, bid: bytes) -> int:
        try:
            return self.blocks.stat(bid).size
        except BlockNotFound:
            return 0

    def _sweep_temp(self) -> None:
        iter_temp = getattr(self.blocks, "iter_temp", None)
        if iter_temp is None:
            return
        now = self.clock()
        grace = temp_grace(self.min_age)
        for path, mtime in list(iter_temp()):
            if not grace_over(mtime, now, grace):
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
    log.info("gc runs every %s inside the server (min age %s)", _duration(interval),
             _duration(store.settings.gc.min_age))
    while not stopping.wait(interval):
        try:
            report = collect(store, delete=True, stop=stopping)
            log.info("%s", report.summary())
        except Conflict as exc:
            log.info("gc skipped: %s", exc)
        except CasError as exc:  # logged; the next interval tries again
            log.warning("gc failed: %s", exc)
