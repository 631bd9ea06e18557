"""The streaming write path shared by every protocol (DESIGN §3, §4).

A ``BlockWriter`` turns one body into pinned blocks and a manifest, without
binding any name: the ``Store`` commits the result (name, part) in one short
write txn through ``commit_into``. Order of operations:

1. Chunk the body; BLAKE3 each chunk; feed MD5 and the protocol's hashers.
2. Per batch (bytes still in hand), one write txn registers the writer's lease
   (first batch) and pins every chunk; ``blocklife.pin`` says what to do with
   it: rely on it (a condemned row is resurrected), write it (absent or
   damaged), or wait until GC drops its ``deleting`` row and then write it.
   Encoding runs on a small thread pool outside any txn; the encoded blocks are put in
   body order on the writer's thread (neighbours in a body are neighbours in a pack).
3. ``finish`` waits for the puts and flushes them (``BlockStore.sync``); the
   caller's commit txn then calls ``commit_into``: ``blocklife`` records the
   blocks written (a damaged row written again becomes live), a block relied on
   that was marked damaged meanwhile fails the commit, then the manifest is
   stored and the pins and lease dropped.
4. ``abort`` drops the pins; blocks already written are garbage for GC.

Block rows, pins, leases and counters are ``blocklife``'s: this module only
decides when to call it. Memory is bounded by one batch plus the blocks in
flight, whatever the size of the body. A writer is used by one thread; the
Store's pool and the hashing threads are shared.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from . import blocklife
from .chunker import Chunker
from .codec import Codec
from .config import testonly_crash_point
from .errors import BadDigest, IncompleteBody, TransientStoreError
from .ids import block_id, short
from .manifest import Manifest

log = logging.getLogger(__name__)

BATCH_CHUNKS = 512
BATCH_BYTES = 16 << 20
MAX_INFLIGHT = 64  # block puts queued on the pool at most (with their bytes: bounds memory)
DELETING_WAIT = 120.0
HASH_PIECE = 16  # chunks handed to the hashing threads at a time
HASH_BACKLOG = 8  # pieces queued at most per body (bounds memory)
INLINE_HASH_BYTES = 4 << 20  # bodies up to this size are hashed on the writing thread
HASH_THREADS = max(2, os.cpu_count() or 2)

_hash_pool: ThreadPoolExecutor | None = None
_hash_pool_lock = threading.Lock()


def _hash_executor() -> ThreadPoolExecutor:
    """The process's hashing threads, shared by every writer (started once, not per body)."""
    global _hash_pool
    with _hash_pool_lock:
        if _hash_pool is None:
            _hash_pool = ThreadPoolExecutor(max_workers=HASH_THREADS, thread_name_prefix="cas-hash")
        return _hash_pool


def _forget_hash_pool() -> None:  # a forked child has none of its parent's threads
    global _hash_pool, _hash_pool_lock
    _hash_pool, _hash_pool_lock = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_hash_pool)


class _BodyHasher:
    """MD5 and the protocol's hashers, each fed every byte once, in order; off the writing thread for large bodies.

    MD5 is the slowest thing on the write path (~700 MB/s) and hashlib releases
    the GIL, so for a large body hashing in parallel with chunking, BLAKE3 and
    block writes keeps both cores busy. Small bodies are hashed inline: a hand-over
    would cost more than it saves. Pieces of a few chunks bound the hand-over cost.

    The hashing threads are shared by all writers (a thread per body cost a thread
    start per part, under ``concurrent.futures``' process-wide lock that every
    block put's submit also takes). At most one step of a body is scheduled at a
    time, which keeps its pieces in order; each step hashes one piece and queues
    the next behind other bodies' steps, so concurrent uploads share the threads.
    """

    def __init__(self, hashers: list):
        self._hashers = hashers
        self._inline = INLINE_HASH_BYTES
        self._slots = threading.Semaphore(HASH_BACKLOG)
        self._piece: list[bytes] = []
        self._queue: deque[list[bytes]] = deque()
        self._lock = threading.Lock()
        self._idle = threading.Event()  # no step scheduled
        self._idle.set()
        self._error: BaseException | None = None

    def _hash(self, piece: list[bytes]) -> None:
        for data in piece:
            for h in self._hashers:
                h.update(data)

    def _step(self) -> None:
        with self._lock:
            piece = self._queue.popleft()
        try:
            if self._error is None:
                self._hash(piece)
        except BaseException as exc:  # handed to the writer by finish()
            self._error = exc
        finally:
            self._slots.release()
        with self._lock:
            more = bool(self._queue)
            if not more:
                self._idle.set()
        if more:
            self._schedule()

    def _schedule(self) -> None:
        try:
            _hash_executor().submit(self._step)
        except BaseException as exc:  # interpreter shutting down: nothing will run the queue
            with self._lock:
                self._error = self._error or exc
                for _ in self._queue:
                    self._slots.release()
                self._queue.clear()
                self._idle.set()
            raise

    def _submit(self) -> None:
        self._slots.acquire()
        with self._lock:
            self._queue.append(self._piece)
            start = self._idle.is_set()
            self._idle.clear()
        self._piece = []
        if start:
            self._schedule()

    def update(self, data: bytes) -> None:
        if self._inline > 0:
            self._inline -= len(data)
            self._hash([data])
            return
        self._piece.append(data)
        if len(self._piece) >= HASH_PIECE:
            self._submit()

    def finish(self) -> None:
        """Wait until every byte given is hashed."""
        if self._piece:
            self._submit()
        self._idle.wait()
        if self._error is not None:
            raise self._error


@dataclass
class WriteResult:
    """What a finished body turned into (not yet bound to a name)."""

    manifest: Manifest
    size: int
    md5: bytes
    digests: dict[str, bytes] = field(default_factory=dict)

    @property
    def etag(self) -> str:
        return self.md5.hex()


class BlockWriter:
    """Writes one body as blocks; see the module docstring for the protocol."""

    def __init__(self, store, hashers: Mapping[str, object] | None = None):
        self._store = store
        self._index = store.index
        self._blocks = store.blocks
        self._codec: Codec = store.codec
        self._chunker: Chunker = store.chunker
        self._pool: ThreadPoolExecutor = store.pool
        self._clock: Callable[[], float] = store.clock
        self._hashers = dict(hashers or {})
        self.writer_id = os.urandom(16)
        self._pinned: set[bytes] = set()
        self._new: dict[bytes, tuple[int, int]] = {}  # block id -> (stored size, raw length)
        self._inflight: list[Future] = []
        self._registered = False
        self._damage_marks = 0  # blocklife's counter when this writer first pinned
        self._tokens: list = []  # the pack entries of what this writer put (``bind`` locates them)

    # -- 1-2: body to pinned blocks -------------------------------------------------------
    def write(self, body, *, expected_size: int | None = None, expected_md5: bytes | None = None) -> WriteResult:
        return self.write_chunks(self._chunker.chunks(body), expected_size=expected_size, expected_md5=expected_md5)

    def write_chunks(self, chunks: Iterable[bytes | memoryview], *, expected_size: int | None = None,
                     expected_md5: bytes | None = None) -> WriteResult:
        """Like ``write``, for chunks the caller cut with the store's chunker (``cas.recut``
        re-cuts a multipart upload's part boundaries; its chunks are stored like a body's)."""
        md5 = hashlib.md5()
        body_hasher = _BodyHasher([md5, *self._hashers.values()])
        try:
            return self._write(chunks, body_hasher, md5, expected_size, expected_md5)
        finally:
            body_hasher.finish()

    def _write(self, chunks: Iterable[bytes | memoryview], body_hasher: _BodyHasher, md5, expected_size,
               expected_md5) -> WriteResult:
        ids: list[bytes] = []
        lengths: list[int] = []
        batch: list[tuple[bytes, bytes]] = []
        batch_bytes = 0
        size = 0
        for view in chunks:
            data = bytes(view)
            body_hasher.update(data)
            bid = block_id(data)
            ids.append(bid)
            lengths.append(len(data))
            size += len(data)
            if bid in self._pinned:
                continue
            self._pinned.add(bid)
            batch.append((bid, data))
            batch_bytes += len(data)
            if len(batch) >= BATCH_CHUNKS or batch_bytes >= BATCH_BYTES:
                self._flush(batch)
                batch = []
                batch_bytes = 0
        self._flush(batch)
        body_hasher.finish()
        if expected_size is not None and size != expected_size:
            raise IncompleteBody(f"the body has {size} bytes, {expected_size} were announced")
        digest = md5.digest()
        if expected_md5 is not None and digest != expected_md5:
            raise BadDigest("the Content-MD5 you specified did not match what we received")
        return WriteResult(Manifest(tuple(ids), tuple(lengths)), size, digest,
                           {name: h.digest() for name, h in self._hashers.items()})

    def _flush(self, batch: list[tuple[bytes, bytes]]) -> None:
        if not batch:
            return
        now = self._clock()
        to_write: list[tuple[bytes, bytes]] = []
        to_wait: list[tuple[bytes, bytes]] = []
        with self._index.write(durable=False) as t:  # pins need not survive a crash: their writer won't
            t.prefetch(counters=not self._registered, blocks=[bid for bid, _ in batch])
            if not self._registered:
                blocklife.register_writer(t, self.writer_id, now + self._store.settings.gc.pin_lease,
                                          self._store.heartbeat.owner)
                self._damage_marks = blocklife.damage_marks(t)
            for bid, data in batch:
                action = blocklife.pin(t, bid, self.writer_id, now)
                if action == blocklife.WRITE:
                    to_write.append((bid, data))
                elif action == blocklife.WAIT:
                    to_wait.append((bid, data))
        if not self._registered:
            self._registered = True
            self._store.heartbeat.add(self.writer_id)
        testonly_crash_point("writer.after_pin")
        for bid, data in to_wait:
            self._wait_deleted(bid)
            to_write.append((bid, data))
        for bid, data in to_write:
            if len(self._inflight) >= MAX_INFLIGHT:
                self._drain(len(self._inflight) - MAX_INFLIGHT + 1)
            self._inflight.append(self._pool.submit(self._encode, bid, data))

    def _encode(self, bid: bytes, data: bytes) -> tuple[bytes, bytes, int]:
        return bid, self._codec.encode(data), len(data)

    def _drain(self, count: int | None = None) -> None:
        """Put the oldest ``count`` encoded blocks (all by default), in body order: a body's
        blocks lie in its pack in the order a reader wants them (one ranged read for many)."""
        n = len(self._inflight) if count is None else count
        done, self._inflight = self._inflight[:n], self._inflight[n:]
        error = None
        for fut in done:
            try:
                bid, encoded, raw = fut.result()
                if error is None:
                    token = self._blocks.put(bid, encoded)
                    if token is not None:
                        self._tokens.append(token)
                    self._new[bid] = (len(encoded), raw)
            except Exception as exc:  # first error wins; the rest are awaited so nothing runs on
                error = error or exc
        if error is not None:
            raise error

    def _wait_deleted(self, bid: bytes) -> None:
        deadline = time.monotonic() + DELETING_WAIT
        while time.monotonic() < deadline:
            with self._index.read() as t:
                if not blocklife.being_deleted(t, bid):
                    return
            time.sleep(0.05)
        raise TransientStoreError(f"block {short(bid)} is still being deleted; try again")

    # -- 3: make durable, then commit inside the caller's txn ----------------------------
    def finish(self, manifest: Manifest | None = None) -> None:
        """Wait for every block put and make them durable (before the commit txn), with the
        manifest, which the backend keeps too (packs: everything but the name is in the backend)."""
        self._drain()
        ids = list(self._new.keys())
        if manifest is not None:
            token = self._blocks.put_manifest(manifest.id, manifest.encode())
            if token is not None:
                self._tokens.append(token)
            ids.append(manifest.id)
        if self._tokens:  # packs: durable now, located by ``bind`` in the commit txn
            self._blocks.flush(self._tokens)
        else:
            self._blocks.sync(ids)
        testonly_crash_point("writer.before_commit")

    def commit_rows(self, manifest: Manifest) -> dict:
        """The index rows ``commit_into`` reads, as ``IndexTxn.prefetch`` keywords."""
        rows = self._blocks.bind_rows(self._tokens)
        rows.update(counters=True, blocks=list(self._new), manifests=[manifest.id],
                    writers=[self.writer_id] if self._registered else [],
                    pins=[(bid, self.writer_id) for bid in self._pinned])
        return rows

    def commit_into(self, t, manifest: Manifest, now: float) -> None:
        """Inside the commit txn: record new blocks, store the manifest, drop the pins."""
        expired = self._expired(t, now)
        if expired and self._new:
            # unpinned, the blocks we wrote were orphans to GC, and may be gone
            raise TransientStoreError("the upload stalled past its pin lease and blocks it wrote "
                                      "may have been reclaimed; try again")
        for bid, (stored, raw) in self._new.items():
            blocklife.record_written(t, bid, stored, raw, now)
        if blocklife.damage_marks(t) != self._damage_marks:
            # a block we relied on (without its bytes in hand any more) may have been found damaged
            damaged = blocklife.damaged_since(t, manifest.ids, self._new)
            if damaged:
                raise TransientStoreError(f"block {short(damaged[0])} was found damaged during the upload; "
                                          "try again (the retry writes it)")
        if expired:  # our lease lapsed (process stalled): every block must still be there
            blocklife.revalidate(t, manifest.ids, now)
        t.put_manifest(manifest.id, manifest.encode())
        self._blocks.bind(t, self._tokens)
        self._unpin(t)

    def _expired(self, t, now: float) -> bool:
        return self._registered and blocklife.lease_expired(t, self.writer_id, now)

    def _unpin(self, t) -> None:
        blocklife.release_writer(t, self.writer_id, self._pinned)

    def close(self) -> None:
        """Forget this writer in the process's heartbeat set."""
        if self._registered:
            self._store.heartbeat.discard(self.writer_id)

    # -- 4: abort -------------------------------------------------------------------------
    def abort(self) -> None:
        """Drop the pins after an error; written blocks are left for GC."""
        for fut in self._inflight:
            fut.cancel()
        for fut in self._inflight:
            if not fut.cancelled():
                try:
                    fut.result()
                except Exception as exc:  # already failing; the first error was raised by the caller
                    log.debug("block put failed during abort: %s", exc)
        self._inflight = []
        if self._registered:
            try:
                with self._index.write() as t:
                    self._unpin(t)
            finally:
                self.close()
