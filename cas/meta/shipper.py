"""MetaShipper: moves metadata log records from the index to the backend, and keeps the backend's
log compacted with snapshots (docs/design.md "Metadata log").

**Shipping.** ``ship()`` reads the records after the index meta ``"mlog_shipped"`` (one read
txn), writes them as one segment ``log/<first>-<last>.seg`` (``objects.encode``) with
``PackFiles.put_meta`` (durable when it returns), then in one write txn raises
``"mlog_shipped"`` to ``last`` and trims the shipped rows from ``mlog``. A crash between the
two leaves the records in the index: the next ship writes them again (a segment with the same
name, or one that overlaps it). Records are never dropped before their segment is durable, so a
backend outage only grows the lag (``status()``): the background loop retries with backoff.

**One shipper at a time.** Every process that shares the index (the nodes of a cluster sharing
a PostgreSQL index, a CLI command beside a server) appends to the one ``mlog`` table, and one
shipping round at a time, in any process, moves records out of it: a round holds the index's lock
``"meta-ship"`` (``Index.lock``) from reading ``"mlog_shipped"`` until it has raised it, so no
two rounds ship the same records and none skips any. The background loop skips its round when
another process holds the lock (that one ships whatever is there). A crash between the segment
and the index txn still leaves a segment that the next round overlaps; readers replay records in
position order and skip positions they have applied (replaying a contiguous suffix of the log
onto a state that already contains it changes nothing, see ``records.apply``).

**When.** ``cas serve`` calls ``start()``: a thread ships every ``meta.interval`` seconds. With
``meta.interval`` 0 every commit that logged records waits in ``wait_shipped`` until they are in
the backend (group commit: one thread at a time ships, and everything unshipped goes into its
segment, so the commits that waited meanwhile find theirs shipped and return without I/O). When
another process is shipping, the commit waits for that round to end (its record may be in it:
``"mlog_shipped"`` in the index says) and then ships what is left itself. A commit that cannot be
shipped within ``SYNC_TIMEOUT`` raises ``TransientStoreError`` (its change is in the index and its
record stays queued: the client's retry is harmless). ``close()`` (at ``Store.close``) ships what
is left, waiting for another process's round if need be, so a CLI command ends with its records
in the backend.

**Snapshots.** The first time a store ships (its names may predate the log), then every
``meta.snapshot_every`` records (and at least every ``meta.snapshot_interval`` when anything
changed, in the server) ``snapshot()`` writes every bucket, object,
user (without secret) and logged kv entry as of one log position ``n`` — all read from ONE read
txn, so it is consistent (the txn lasts while the parts go up; LMDB keeps the pages it sees) — as
``snap/<n>/part-000000``... of ``PART_RECORDS`` records each
(streamed: memory does not grow with the store), then ``snap/<n>/done``. Then ``compact()``
deletes what no recovery needs: with the two newest complete snapshots kept, log segments whose
``last`` is at most the older one's ``n``, older snapshots, and incomplete snapshots older than
the newest complete one. A snapshot's ``done`` is deleted before its parts, so a snapshot is
never complete with parts missing. Snapshots and compaction hold the index's lock
``"meta-snapshot"`` (a node that finds it held skips: the holder writes the snapshot that was
due); a snapshot takes long, so it does not hold up shipping.

**Retention** (``retention()``, hourly in the background loop): journal events older than
``meta.events_keep``; and ``maintenance`` jobs others add (``cas serve`` adds GC's trim of the
commit references no GC or verify run needs: ``cas.gc.safety.trim_idle_refs``).

Thread-safety: ``ship`` is serialised by a lock (waiters of a synchronous store share one
segment) and, across processes, by the index lock; ``snapshot``/``compact``/``retention`` by
another.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator

from ..errors import CasError, Conflict, TransientStoreError
from . import objects, records

log = logging.getLogger(__name__)

SHIPPED = "mlog_shipped"  # index meta: the last log position in the backend
SNAPSHOT = "mlog_snapshot"  # index meta: {"n", "time"} of the last snapshot this store wrote
SHIP_LOCK = "meta-ship"  # index lock: one shipping round at a time, across processes and nodes
SNAPSHOT_LOCK = "meta-snapshot"  # index lock: one snapshot or compaction at a time
#: records per segment at most (a long backlog goes up in several segments)
SEGMENT_RECORDS = 50_000
#: records per snapshot part
PART_RECORDS = 50_000
#: how long a synchronous commit waits for its record to reach the backend
SYNC_TIMEOUT = 30.0
#: background retries back off up to this
MAX_BACKOFF = 60.0
#: how often the background loop applies retention
RETENTION_EVERY = 3600.0
#: journal events trimmed per write txn (txns stay short)
TRIM_BATCH = 10_000


class MetaShipper:
    """Ships one store's metadata log (see the module docstring)."""

    def __init__(self, index, files, settings, *, clock: Callable[[], float] = time.time):
        self.index = index  # a LoggedIndex
        self.files = files  # the store's PackFiles
        self.settings = settings  # MetaSettings
        self.clock = clock
        #: further hourly jobs of the background loop, each returning figures for the log
        self.maintenance: list[Callable[[], dict]] = []
        self._ship_lock = threading.Lock()
        self._maint_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._shipped = self._read_shipped()
        self.last_error: str | None = None
        self.failures = 0
        self._last_retention = 0.0
        #: ``meta.log`` off: nothing is logged or shipped; retention still runs
        self.logging = settings.log
        if settings.interval == 0 and self.logging:
            index.after_commit = self.wait_shipped

    # -- shipping ---------------------------------------------------------------------------------
    def _read_shipped(self) -> int:
        with self.index.read() as t:
            return t.get_meta(SHIPPED) or 0

    def ship(self, *, wait: float = 0.0) -> int:
        """Ship every unshipped record; returns the number shipped (raises ``StoreError``). When
        another process holds the ship lock for longer than ``wait`` seconds, ships nothing
        (returns 0): that process ships the records."""
        with self._ship_lock:
            return self._ship_round(wait) or 0

    def _ship_round(self, wait: float) -> int | None:
        """One shipping round under the index's ship lock (the caller holds ``_ship_lock``): the
        number shipped, or None when another process held the lock for ``wait`` seconds."""
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(self.index.lock(SHIP_LOCK, wait=wait))
            except Conflict:
                self._shipped = max(self._shipped, self._read_shipped())
                return None
            return self._ship_locked()

    def _ship_locked(self) -> int:
        total = 0
        while True:
            with self.index.read() as t:
                shipped = t.get_meta(SHIPPED) or 0
                batch = []
                for rec in t.iter_mlog(shipped):
                    batch.append(rec)
                    if len(batch) >= SEGMENT_RECORDS:
                        break
            self._shipped = max(self._shipped, shipped)
            if not batch:
                return total
            first, last = batch[0]["n"], batch[-1]["n"]
            self.files.put_meta(objects.log_name(first, last), objects.encode(batch))
            with self.index.write() as t:
                done = max(t.get_meta(SHIPPED) or 0, last)
                t.put_meta(SHIPPED, done)
                t.trim_mlog(done)
            self._shipped = max(self._shipped, done)
            total += len(batch)
            log.debug("shipped log records %d..%d", first, last)

    def wait_shipped(self, n: int, timeout: float = SYNC_TIMEOUT) -> None:
        """Return once log position ``n`` is in the backend (``meta.interval`` 0): shipped by this
        process, or by another one whose round this waits for (``"mlog_shipped"`` in the index)."""
        if self._shipped >= n:
            return
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self._ship_lock.acquire(timeout=left):
                break
            try:
                if self._shipped >= n:
                    return
                # waits out another process's round, then ships what that one left
                self._ship_round(max(0.0, deadline - time.monotonic()))
                if self._shipped >= n:
                    self._ok()
                    return
            except CasError as exc:
                self._failed(exc)
            finally:
                self._ship_lock.release()
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 2.0)
        raise TransientStoreError(f"the change is in the index but its metadata log record {n} could not be "
                                  f"written to the backend within {timeout:.0f}s ({self.last_error}); "
                                  "it stays queued and is shipped once the backend answers")

    def _ok(self) -> None:
        if self.failures:
            log.info("metadata log shipping works again after %d failures", self.failures)
        self.failures = 0
        self.last_error = None

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        self.last_error = str(exc)
        if self.failures == 1 or self.failures % 10 == 0:
            log.warning("cannot ship the metadata log to the backend (attempt %d, records stay queued): %s",
                        self.failures, exc)

    # -- status -------------------------------------------------------------------------------------
    def status(self) -> dict:
        """Lag figures: unshipped records and the age of the oldest one (0 when none)."""
        with self.index.read() as t:
            shipped = t.get_meta(SHIPPED) or 0
            head = t.counter("mlog")
            oldest = next(t.iter_mlog(shipped), None)
        lag = max(0.0, self.clock() - oldest.get("time", self.clock())) if oldest else 0.0
        out = {"lag_seconds": round(lag, 3), "unshipped_records": max(0, head - shipped), "position": head,
               "shipped": shipped, "interval": self.settings.interval, "enabled": self.logging}
        if self.last_error:
            out["error"] = self.last_error
        return out

    # -- snapshots ----------------------------------------------------------------------------------
    def snapshot_due(self, *, by_time: bool = True) -> bool:
        """Whether a snapshot is due: none was ever written (a store whose names predate its log
        has them nowhere else), ``snapshot_every`` records since the last, or (``by_time``)
        ``snapshot_interval`` since the last and anything changed."""
        with self.index.read() as t:
            head = t.counter("mlog")
            snap = t.get_meta(SNAPSHOT)
            if snap is None:
                return head > 0 or next(t.iter_buckets(), None) is not None or next(t.iter_users(), None) is not None
        if head <= snap["n"]:
            return False
        return (head - snap["n"] >= self.settings.snapshot_every
                or (by_time and self.clock() - snap["time"] >= self.settings.snapshot_interval))

    def snapshot(self) -> int | None:
        """Write a complete snapshot as of the current log position; returns that position (None:
        another process is writing one, or compacting)."""
        with self._maint_lock, contextlib.ExitStack() as stack:
            if not self._snapshot_lock(stack):
                return None
            with self.index.read() as t:
                n = t.counter("mlog")
                parts, count = 0, 0
                batch: list[dict] = []
                for rec in _snapshot_records(t, n):
                    batch.append(rec)
                    if len(batch) >= PART_RECORDS:
                        self.files.put_meta(objects.snap_part_name(n, parts), objects.encode(batch))
                        parts, count, batch = parts + 1, count + len(batch), []
                if batch or parts == 0:
                    self.files.put_meta(objects.snap_part_name(n, parts), objects.encode(batch))
                    parts, count = parts + 1, count + len(batch)
            # another process's compaction deletes incomplete snapshots older than its newest
            # complete one: never mark complete a snapshot that lost parts meanwhile
            there = set(self.files.list_meta(f"{objects.SNAP_PREFIX}{n:016x}/"))
            if len(there) < parts:
                log.info("metadata snapshot at %d was superseded while it was written; dropped", n)
                return n
            now = self.clock()
            self.files.put_meta(objects.snap_done_name(n), objects.encode(
                [{"n": n, "parts": parts, "records": count, "time": now}]))
            with self.index.write() as t:
                t.put_meta(SNAPSHOT, {"n": n, "time": now})
            log.debug("metadata snapshot at log position %d: %d records in %d parts", n, count, parts)
            self._compact_locked()
            return n

    def compact(self) -> dict:
        """Delete the snapshots and segments no recovery needs (nothing when another process is
        writing a snapshot or compacting)."""
        with self._maint_lock, contextlib.ExitStack() as stack:
            if not self._snapshot_lock(stack):
                return {"segments": 0, "snapshots": 0}
            return self._compact_locked()

    def _snapshot_lock(self, stack: contextlib.ExitStack) -> bool:
        """Take the index's snapshot lock into ``stack``; False when another process holds it."""
        try:
            stack.enter_context(self.index.lock(SNAPSHOT_LOCK))
        except Conflict:
            log.debug("another process is writing a metadata snapshot or compacting: skipped")
            return False
        return True

    def _compact_locked(self) -> dict:
        snaps = objects.snapshots(self.files)
        complete = sorted(n for n, rest in snaps.items() if "done" in rest)
        out = {"segments": 0, "snapshots": 0}
        if not complete:
            return out
        newest = complete[-1]
        floor = complete[-2] if len(complete) >= 2 else 0  # a log from the start backs a lone snapshot
        doomed = [n for n in complete if n < floor] + [n for n in snaps if n not in complete and n < newest]
        for n in sorted(doomed):
            if "done" in snaps[n]:
                self.files.delete_meta(objects.snap_done_name(n))  # first: never complete with parts missing
            for rest in sorted(snaps[n] - {"done"}):
                self.files.delete_meta(f"{objects.SNAP_PREFIX}{n:016x}/{rest}")
            out["snapshots"] += 1
        if floor:
            old = [name for _, last, name in objects.log_segments(self.files) if last <= floor]
            for name in old:
                self.files.delete_meta(name)
            out["segments"] = len(old)
        if out["segments"] or out["snapshots"]:
            log.debug("metadata log compacted: %d segments and %d snapshots deleted", out["segments"],
                     out["snapshots"])
        return out

    # -- retention ----------------------------------------------------------------------------------
    def retention(self) -> dict:
        """Trim journal events older than ``meta.events_keep``, then run the ``maintenance`` jobs
        (``cas serve`` adds GC's: trim the commit references no GC run needs)."""
        with self._maint_lock:
            out = {"events": self._trim_events()}
            for job in self.maintenance:
                out.update(job())
            return out

    def _trim_events(self) -> int:
        keep = self.settings.events_keep
        if not keep:
            return 0
        cutoff = self.clock() - keep
        total = 0
        while True:
            upto = 0
            with self.index.read() as t:
                for i, ev in enumerate(t.iter_events(0)):
                    if ev.get("time", 0) >= cutoff or i >= TRIM_BATCH:
                        break
                    upto = ev["seq"]
            if not upto:
                return total
            with self.index.write() as t:
                total += t.trim_events(upto)

    # -- the background loop ------------------------------------------------------------------------
    def start(self) -> None:
        """Ship (and snapshot, and apply retention) in a background thread until ``close``."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="cas-meta", daemon=True)
        self._thread.start()
        log.info("metadata log: shipping every %ss, a snapshot every %d records",
                 self.settings.interval or "commit (synchronous)", self.settings.snapshot_every)

    def _run(self) -> None:
        # with interval 0 commits ship their own records; the loop still ships what other
        # processes logged, and takes snapshots
        interval = self.settings.interval or 5.0
        wait = interval
        while not self._stop.wait(wait):
            wait = self.run_once(interval)

    def run_once(self, interval: float) -> float:
        """One round of the background loop; returns how long to wait before the next one."""
        try:
            if self.logging:
                self.ship()
            self._ok()
        except CasError as exc:
            self._failed(exc)
            return min(interval * 2 ** min(self.failures, 10), MAX_BACKOFF)
        try:
            if self.logging and self.snapshot_due():
                n = self.snapshot()
                if n is not None:
                    log.info("metadata snapshot written at log position %d", n)
            if self.clock() - self._last_retention >= RETENTION_EVERY:
                self._last_retention = self.clock()
                self.retention()
        except CasError as exc:
            log.warning("metadata snapshot or retention failed (tried again later): %s", exc)
        return interval

    def close(self) -> None:
        """Stop the loop and ship what is left (a failure is logged: the records stay queued)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.index.after_commit = None
        if not self.logging:
            return
        try:
            self.ship(wait=SYNC_TIMEOUT)  # after another process's round: what it left is ours to ship
            if self.snapshot_due(by_time=False):  # the daily one is the server's
                self.snapshot()
        except CasError as exc:
            log.warning("the metadata log could not be shipped to the backend: %s; its records stay in the "
                        "index and the next cas command or server ships them", exc)


def _snapshot_records(t, n: int) -> Iterator[dict]:
    """Every durable name in read txn ``t`` as records at position ``n`` (buckets first), each
    with the commit sequence as of the snapshot (``seq``: recover restarts sequence numbers above it)."""
    seq = t.last_seq()

    def at(rec: dict) -> dict:
        rec["seq"] = seq
        return rec

    for name, rec in t.iter_buckets():
        yield at(records.put_bucket(n, name, rec))
    for bucket, key, rec in t.iter_objects():
        yield at(records.put_object(n, bucket, key, rec))
    for name, rec in t.iter_users():
        yield at(records.put_user(n, name, rec))
    for ns in sorted(records.LOGGED_KV):
        for key, value in t.kv_scan(ns):
            yield at(records.kv_put(n, ns, key, value))
