"""PackedBlockStore: the BlockStore over packs (DESIGN §3, §8).

Blocks (and manifests) are appended to the process's open pack; the index's ``locs`` table
maps each (kind, id) to (pack, offset, stored length), and its ``packs`` table keeps one row
per pack with its live bytes. What a caller of the BlockStore contract (``base.py``) sees:

- ``put`` appends to the open pack (in the backend's page cache or upload buffer) and is
  readable at once by this process; ``sync(ids)`` returns once the packs holding those ids
  are durable (local: one ``fdatasync`` of the open pack; S3: the pack object completed) and
  their locations are in the index; other processes see a block from then on.
- Group commit: writers that appended before a flush started share it. A flush takes
  everything appended so far, so concurrent small commits cost one ``fdatasync`` (local) or
  one pack object (S3) between them; no writer waits for a timer.
- ``delete(id)`` drops the location (the pack's live bytes shrink); space comes back when GC
  repacks or deletes the pack (``maintenance.py``), after the reader grace.
- A location is replaced when the same id is put again (a damaged block written again, two
  writers racing on one id): the older entry becomes dead bytes.

Pack lifecycle: a pack gets its row (``OPEN``) and a writer lease before its first byte, so
GC can tell an open pack of a live process from one a crashed process left (lease gone: GC
repacks its located entries), and a pack without a row is never one of ours (GC leaves it
alone: with a lost or foreign index, that would be every pack). It is sealed (footer,
``fsync``, row ``SEALED``) when it reaches ``target_size``, after ``seal_idle`` seconds
without writes, or at ``close``. An S3 pack cannot be read before it is complete, so it is
sealed whenever a writer needs its blocks durable. A location is only ever committed into a
pack whose row is ``OPEN`` or ``SEALED``: a writer whose open pack was retired by GC (its lease
lapsed) fails with a transient error instead of pointing names at a pack about to be deleted.

Reads: ``get_many`` looks up a run of ids in one txn and coalesces neighbours in the same pack
into one ranged read of up to ``MAX_RANGE`` bytes; a small cache keeps recent ranges of a
remote backend. The codec verifies every block (BLAKE3) on the caller's side.

Thread-safe: one lock per open pack orders its appends; one flusher per pack at a time.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from ... import blocklife
from ...errors import BlockNotFound, TransientStoreError
from ...ids import short
from ...index.schema import KIND_DATA, KIND_MANIFEST, PACK_OPEN, PACK_RETIRED, PACK_SEALED, Loc, PackRow
from ..base import BlockStat, BlockStore
from . import format as fmt
from .files import PackFiles, pack_name

log = logging.getLogger(__name__)

TARGET_SIZE = 32 << 20
SEAL_IDLE = 10.0
MAX_RANGE = 8 << 20  # one coalesced ranged read at most
MAX_GAP = 256 << 10  # dead bytes a coalesced read may skip over (cheaper than another request)
CACHE_BYTES = 32 << 20  # recently read ranges kept for a remote backend
CACHE_RANGE = 4 << 20  # larger ranges are not cached
LIST_BATCH = 1000
MANIFEST_LOCS = 10_000
_RAW_LEN = struct.Struct(">I")


def _raw_len(encoded: bytes) -> int:
    """The raw length a codec-encoded block declares (its header's last field)."""
    return _RAW_LEN.unpack_from(encoded, 4)[0] if len(encoded) >= 8 else 0


class _OpenPack:
    """A pack this process appends to."""

    def __init__(self, pack_id: bytes, sink, created: float):
        self.id = pack_id
        self.sink = sink
        self.created = created
        self.size = 0
        self.entries: list[fmt.Entry] = []
        self.located = 0  # entries[:located] have locations in the index (more may be bound)
        self.bound: set[int] = set()  # entries a writer's commit txn located (``bind``): never located again
        self.flushed = 0  # bytes made durable by a flush
        self.closed = False  # no more appends (being sealed)
        self.sealed: Future | None = None
        self.failed: BaseException | None = None
        self.last_write = time.monotonic()
        self.lock = threading.Lock()  # appends
        self.flush_lock = threading.Lock()  # one flusher at a time: the others ride along


class PackedBlockStore(BlockStore):
    """Blocks and manifests in packs; locations in the index (module docstring)."""

    def __init__(self, files: PackFiles, index, *, target_size: int = TARGET_SIZE,
                 seal_idle: float = SEAL_IDLE, lease: float = 600.0, clock=time.time,
                 cache_bytes: int | None = None, owner: bytes = blocklife.PROCESS_OWNER):
        self.files = files
        self.index = index
        self.kind = files.kind
        self.target_size = target_size
        self.seal_idle = seal_idle
        self.clock = clock
        self._lease = lease
        self._current: _OpenPack | None = None
        self._alloc = threading.Lock()
        self._pending: dict[tuple[int, bytes], tuple[_OpenPack, int]] = {}
        self._pending_lock = threading.Lock()
        self._manifest_locs: dict[bytes, Loc] = {}  # located manifests a commit may still bind
        self._sealer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cas-seal")
        # the leases of this process's open packs (``owner``: see blocklife.Heartbeat)
        self._heartbeat = blocklife.Heartbeat(index, lambda: self.clock(), lambda: self._lease, owner)
        self._appending: set[bytes] = set()  # local packs this process has open (their leases beat)
        self._cache: OrderedDict[tuple[bytes, int, int], bytes] = OrderedDict()
        self._cache_bytes = 0
        self._cache_max = (0 if files.can_flush else CACHE_BYTES) if cache_bytes is None else cache_bytes
        self._cache_lock = threading.Lock()
        self._stop = threading.Event()
        self._idle_thread: threading.Thread | None = None
        self._closed = False

    # -- writing ----------------------------------------------------------------------------
    def put(self, block_id: bytes, data: bytes) -> tuple[_OpenPack, int]:
        """Append a block; returns its entry (a token for ``flush`` and ``bind``)."""
        return self._append(KIND_DATA, block_id, data, _raw_len(data))

    def put_manifest(self, manifest_id: bytes, encoded: bytes) -> tuple[_OpenPack, int]:
        """Store an encoded manifest in a pack too (kind manifest), so the backend holds it."""
        return self._append(KIND_MANIFEST, manifest_id, encoded, len(encoded))

    def _open_pack(self) -> _OpenPack:
        pack_id = os.urandom(fmt.PACK_ID_LEN)
        now = self.clock()
        # the row (and a lease) first: GC must know the file/object is ours before it exists, so
        # that a pack without a row is never ours to delete (with a lost index, that is every pack)
        with self.index.write(durable=False) as t:
            t.put_pack(pack_id, PackRow(PACK_OPEN, 0, 0, 0, 0, now, now))
            blocklife.register_writer(t, pack_id, now + self._lease, self._heartbeat.owner)
        self._heartbeat.add(pack_id)
        self._appending.add(pack_id)
        sink = self.files.create(pack_id)
        p = _OpenPack(pack_id, sink, now)
        header = fmt.header(pack_id)
        sink.write(header)
        p.size = len(header)
        self._start_idle_sealer()
        return p

    def _writable(self) -> _OpenPack:
        with self._alloc:
            p = self._current
            if p is None or p.closed:
                p = self._current = self._open_pack()
            return p

    def _append(self, kind: int, entry_id: bytes, data: bytes, raw_len: int) -> tuple[_OpenPack, int]:
        while True:
            p = self._writable()
            with p.lock:
                if p.closed:
                    continue
                offset = p.size + fmt.ENTRY_HEADER_LEN  # an entry's bytes follow its entry header
                try:
                    p.sink.write(fmt.entry_header(kind, entry_id, len(data), raw_len))
                    p.sink.write(data)
                except BaseException as exc:
                    p.failed = exc
                    p.closed = True
                    failed = True
                else:
                    failed = False
                if not failed:
                    p.size = offset + len(data)
                if not failed:
                    p.entries.append(fmt.Entry(kind, entry_id, offset, len(data), raw_len))
                    index = len(p.entries) - 1
                    p.last_write = time.monotonic()
                    full = p.size >= self.target_size
            if failed:  # this pack is lost: the next write starts another; its writers fail at sync
                self._abandon(p)
                raise p.failed
            with self._pending_lock:
                self._pending[(kind, entry_id)] = (p, index)
            if full:
                self._rotate(p)
            return p, index

    def _abandon(self, p: _OpenPack) -> None:
        """A pack whose writes failed: no one appends to it again; its partial bytes are dropped
        (a local pack's located entries stay: they were made durable before the failure)."""
        with self._alloc:
            if self._current is p:
                self._current = None
        if not self.files.can_flush:
            try:
                p.sink.abort()
            except Exception as exc:  # the backend is failing; GC aborts stale uploads later
                log.debug("cannot abort pack %s: %s", pack_name(p.id), exc)
        self._heartbeat.discard(p.id)
        self._appending.discard(p.id)

    def _rotate(self, p: _OpenPack) -> Future:
        """Stop appending to ``p`` and seal it on the sealer thread (the future of that)."""
        with self._alloc:
            if self._current is p:
                self._current = None
            with p.lock:
                if not p.closed:
                    # sealed before closed: ``_durable`` reads ``closed`` without the lock, and a
                    # closed pack must already have the future its writers wait on
                    p.sealed = self._sealer.submit(self._seal, p)
                    p.closed = True
            return p.sealed

    def _seal(self, p: _OpenPack) -> None:
        with p.flush_lock:
            try:
                with p.lock:
                    entries = list(p.entries)
                    table_offset = p.size
                if entries or not self.files.can_flush:
                    p.sink.write(fmt.footer(entries, table_offset))
                    p.sink.finish()
                    size = table_offset + fmt.footer_len(len(entries))
                    self._locate(p, len(entries), size, seal=True)
                else:  # never used: forget it
                    p.sink.abort()
                    self._drop_pack_row(p)
            except BaseException as exc:
                p.failed = exc
                log.error("cannot seal pack %s: %s", pack_name(p.id), exc)
                raise
            finally:
                self._heartbeat.discard(p.id)
                self._appending.discard(p.id)

    def appending_to(self, pack_id: bytes) -> bool:
        """Whether ``pack_id`` is an open pack of this process: never abandoned, even when its
        lease row lapsed (a clock jump, a stall) and GC reaped it."""
        return pack_id in self._appending

    def _drop_pack_row(self, p: _OpenPack) -> None:
        with self.index.write(durable=False) as t:
            t.delete_pack(p.id)
            blocklife.release_writer(t, p.id, ())

    def _locate(self, p: _OpenPack, upto: int, size: int, *, seal: bool = False) -> None:
        """Commit the locations of ``p.entries[p.located:upto]`` (one index txn)."""
        now = self.clock()
        new = p.entries[p.located:upto]
        with self.index.write(durable=False) as t:
            t.prefetch(packs=[p.id], writers=[p.id] if seal else [],
                       locs=[(e.kind, e.id) for i, e in enumerate(new, start=p.located) if i not in p.bound])
            row = t.get_pack(p.id)
            if row is None or row.state not in (PACK_OPEN, PACK_SEALED):
                p.closed = True
                raise TransientStoreError(f"pack {pack_name(p.id)} was retired while it was written "
                                          "(its writer stalled past its lease); try again")
            rows = {p.id: row}
            for i, e in enumerate(new, start=p.located):
                if i in p.bound:  # its writer located it; GC may have dropped it since: not back
                    continue
                _point(t, rows, e.kind, e.id, Loc(p.id, e.offset, e.length, e.raw_len, now))
            mine = rows.pop(p.id)
            for pid, orow in rows.items():
                t.put_pack(pid, orow)
            state = PACK_SEALED if seal else row.state
            t.put_pack(p.id, PackRow(state, size, upto, mine.live_bytes, mine.live_entries, row.created,
                                     now if state != row.state else row.state_time))
            if seal:
                blocklife.release_writer(t, p.id, ())
        p.located = upto
        with self._pending_lock:
            for i, e in enumerate(new, start=upto - len(new)):
                if self._pending.get((e.kind, e.id)) == (p, i):
                    del self._pending[(e.kind, e.id)]
                if e.kind == KIND_MANIFEST:
                    if len(self._manifest_locs) >= MANIFEST_LOCS:
                        self._manifest_locs.clear()  # commits that never came; bind_manifest copes
                    self._manifest_locs[e.id] = Loc(p.id, e.offset, e.length, e.raw_len, now)

    def bind_manifest(self, t, manifest_id: bytes) -> None:
        """Inside the txn that commits a name to ``manifest_id``: keep its pack entry located.

        GC drops the location of a manifest no name uses; a writer that stored the same manifest
        and commits after that drop puts its own entry's location back here, in its commit txn.
        """
        with self._pending_lock:
            loc = self._manifest_locs.pop(manifest_id, None)
        if loc is None or t.get_loc(KIND_MANIFEST, manifest_id) is not None:
            return
        row = t.get_pack(loc.pack)
        if row is not None and row.state in (PACK_OPEN, PACK_SEALED):
            t.put_loc(KIND_MANIFEST, manifest_id, loc)
            t.put_pack(loc.pack, _with_live(row, loc.length, 1))

    def sync(self, block_ids: Iterable[bytes]) -> None:
        """Make the packs holding ``block_ids`` (data or manifest ids) durable and their
        locations committed."""
        need: dict[_OpenPack, int] = {}
        with self._pending_lock:
            for bid in block_ids:
                for kind in (KIND_DATA, KIND_MANIFEST):
                    hit = self._pending.get((kind, bid))
                    if hit is not None:
                        p, i = hit
                        need[p] = max(need.get(p, 0), i + 1)
        for p, upto in need.items():
            self._durable(p, upto, True)

    def flush(self, tokens: Iterable[tuple[_OpenPack, int]]) -> None:
        """Make the entries ``put`` returned durable, without locating them: a writer ``bind``s
        them in its own commit txn (one index txn fewer per commit). An entry whose writer never
        commits is located when its pack is sealed (an orphan for GC), or dies with the pack."""
        need: dict[_OpenPack, int] = {}
        for p, i in tokens:
            need[p] = max(need.get(p, 0), i + 1)
        for p, upto in need.items():
            self._durable(p, upto, not self.files.can_flush)

    def _done(self, p: _OpenPack, upto: int, locate: bool) -> bool:
        if p.located >= upto:
            return True
        return not locate and p.flushed >= p.entries[upto - 1].offset + p.entries[upto - 1].length

    def _durable(self, p: _OpenPack, upto: int, locate: bool = True) -> None:
        if self._done(p, upto, locate):
            return
        if not self.files.can_flush:
            self._rotate(p).result()
        elif p.closed:
            if p.sealed is not None:
                p.sealed.result()
        else:
            with p.flush_lock:  # group commit: a leader's flush covers whoever appended before it
                if not self._done(p, upto, locate) and not p.closed:
                    with p.lock:
                        n, size = len(p.entries), p.size
                    if p.flushed < size:
                        try:
                            p.sink.flush()
                        except BaseException as exc:  # what was not flushed may be lost: stop using it
                            with p.lock:
                                p.failed, p.closed = exc, True
                            self._abandon(p)
                            raise
                        p.flushed = size
                    if locate:
                        self._locate(p, n, size)
            if not self._done(p, upto, locate) and p.sealed is not None:
                p.sealed.result()
        if p.failed is not None:
            raise TransientStoreError(f"pack {pack_name(p.id)} could not be written: {p.failed}") from p.failed
        if not self._done(p, upto, locate):
            raise TransientStoreError(f"pack {pack_name(p.id)} was closed before its blocks were located; try again")

    def bind_rows(self, tokens: Iterable[tuple[_OpenPack, int]]) -> dict:
        tokens = list(tokens)
        return {"packs": {p.id for p, _ in tokens},
                "locs": [(p.entries[i].kind, p.entries[i].id) for p, i in tokens]}

    def bind(self, t, tokens: Iterable[tuple[_OpenPack, int]]) -> None:
        """Inside a writer's commit txn: point each flushed entry's id at that entry (any durable
        copy is right; this one is the writer's own, so a damaged copy is replaced). Idempotent;
        the pack's later seal skips what is bound here."""
        now = self.clock()
        rows: dict[bytes, PackRow] = {}
        for p, i in tokens:
            e = p.entries[i]
            row = rows.get(p.id) or t.get_pack(p.id)
            if (row is None or row.state not in (PACK_OPEN, PACK_SEALED)) and e.kind == KIND_MANIFEST:
                # GC dropped this manifest (no name used it yet) and retired its small pack: the
                # index keeps the manifest; only the backend's copy is missing until it is stored
                # again (the next commit of it, or a repack of the index's manifests)
                log.info("manifest %s: its pack was retired before the commit; kept in the index only",
                         short(e.id))
                continue
            if row is None or row.state not in (PACK_OPEN, PACK_SEALED):
                raise TransientStoreError(f"pack {pack_name(p.id)} was retired while it was written "
                                          "(its writer stalled past its lease); try again")
            rows.setdefault(p.id, row)
            _point(t, rows, e.kind, e.id, Loc(p.id, e.offset, e.length, e.raw_len, now))
            p.bound.add(i)
            cur = rows[p.id]
            rows[p.id] = PackRow(cur.state, max(cur.size, e.offset + e.length), max(cur.entries, i + 1),
                                 cur.live_bytes, cur.live_entries, cur.created, cur.state_time)
        for pid, row in rows.items():
            t.put_pack(pid, row)

    # -- idle sealing ------------------------------------------------------------------------
    def _start_idle_sealer(self) -> None:
        if self._idle_thread is None and self.seal_idle > 0:
            self._idle_thread = threading.Thread(target=self._idle_loop, name="cas-seal-idle", daemon=True)
            self._idle_thread.start()

    def _idle_loop(self) -> None:
        while not self._stop.wait(min(1.0, self.seal_idle)):
            p = self._current
            if p is not None and not p.closed and time.monotonic() - p.last_write >= self.seal_idle:
                try:
                    self._rotate(p).result()
                except Exception:  # logged by _seal; the writers that need it see the failure
                    pass

    # -- reading -----------------------------------------------------------------------------
    def _pending_entry(self, kind: int, entry_id: bytes) -> tuple[_OpenPack, fmt.Entry] | None:
        with self._pending_lock:
            hit = self._pending.get((kind, entry_id))
        if hit is None:
            return None
        p, i = hit
        return p, p.entries[i]

    def location(self, entry_id: bytes, kind: int = KIND_DATA) -> Loc | None:
        with self.index.read() as t:
            return t.get_loc(kind, entry_id)

    def _read_entry(self, kind: int, entry_id: bytes) -> bytes:
        hit = self._pending_entry(kind, entry_id)
        if hit is not None:
            p, e = hit
            if not self.files.can_flush:
                self.sync([entry_id])
            elif p.failed is None:
                try:
                    return self.files.read(p.id, e.offset, e.length)
                except BlockNotFound:
                    # this process stalled past its pack's lease and another process's GC copied
                    # the pack out and deleted it: the index knows where the entry lives now
                    pass
        loc = self.location(entry_id, kind)
        if loc is None:
            raise BlockNotFound(f"block {short(entry_id)} is not in any pack of {self.kind}")
        return self._read(loc.pack, loc.offset, loc.length)

    def get(self, block_id: bytes) -> bytes:
        return self._read_entry(KIND_DATA, block_id)

    def get_manifest(self, manifest_id: bytes) -> bytes:
        return self._read_entry(KIND_MANIFEST, manifest_id)

    def _read(self, pack_id: bytes, offset: int, length: int) -> bytes:
        if self._cache_max and length <= CACHE_RANGE:
            key = (pack_id, offset, length)
            with self._cache_lock:
                hit = self._cache.get(key)
                if hit is not None:
                    self._cache.move_to_end(key)
                    return hit
            data = self.files.read(pack_id, offset, length)
            with self._cache_lock:
                if key not in self._cache:
                    self._cache[key] = data
                    self._cache_bytes += len(data)
                    while self._cache_bytes > self._cache_max:
                        _, old = self._cache.popitem(last=False)
                        self._cache_bytes -= len(old)
            return data
        return self.files.read(pack_id, offset, length)

    def get_many(self, block_ids: list[bytes]) -> Iterator[bytes]:
        """The stored bytes of ``block_ids`` in order. Entries close to each other in one pack
        come in one ranged read, whatever their order in the list (a writer's blocks land in
        its pack in the order its encoding threads finish). The caller bounds the list: the
        whole window is held."""
        locs: list[Loc | None] = []
        with self.index.read() as t:
            for bid in block_ids:
                locs.append(t.get_loc(KIND_DATA, bid) if self._pending_entry(KIND_DATA, bid) is None else None)
        out: list[bytes | None] = [None] * len(block_ids)
        located = sorted((k for k, loc in enumerate(locs) if loc is not None),
                         key=lambda k: (locs[k].pack, locs[k].offset))
        i = 0
        while i < len(located):
            first = locs[located[i]]
            end = first.offset + first.length
            j = i + 1
            while j < len(located):
                nxt = locs[located[j]]
                if (nxt.pack != first.pack or nxt.offset - end > MAX_GAP
                        or nxt.offset + nxt.length - first.offset > MAX_RANGE):
                    break
                end = max(end, nxt.offset + nxt.length)
                j += 1
            data = self._read(first.pack, first.offset, end - first.offset)
            view = memoryview(data)
            for k in located[i:j]:
                loc = locs[k]
                out[k] = data if j == i + 1 else bytes(view[loc.offset - first.offset:
                                                            loc.offset - first.offset + loc.length])
            i = j
        for k, bid in enumerate(block_ids):
            yield out[k] if out[k] is not None else self.get(bid)

    def has(self, block_id: bytes) -> bool:
        return self._pending_entry(KIND_DATA, block_id) is not None or self.location(block_id) is not None

    def stat(self, block_id: bytes) -> BlockStat:
        hit = self._pending_entry(KIND_DATA, block_id)
        if hit is not None:
            return BlockStat(hit[1].length, hit[0].created)
        loc = self.location(block_id)
        if loc is None:
            raise BlockNotFound(f"block {short(block_id)} is not in any pack of {self.kind}")
        return BlockStat(loc.length, loc.created)

    def iter_ids(self, start_after: bytes | None = None) -> Iterator[tuple[bytes, float]]:
        """Located data blocks in id order (a fresh read txn per batch: nothing held long)."""
        after = start_after
        while True:
            with self.index.read() as t:
                batch = []
                for bid, loc in t.iter_locs(KIND_DATA, after):
                    batch.append((bid, loc.created))
                    if len(batch) >= LIST_BATCH:
                        break
            yield from batch
            if len(batch) < LIST_BATCH:
                return
            after = batch[-1][0]

    # -- dropping ----------------------------------------------------------------------------
    def delete(self, block_id: bytes) -> None:
        self._drop(KIND_DATA, block_id)

    def delete_many(self, block_ids: list[bytes]) -> None:
        """``delete`` of each id, in one index txn."""
        with self._pending_lock:
            for bid in block_ids:
                self._pending.pop((KIND_DATA, bid), None)
        with self.index.write(durable=False) as t:
            for bid in block_ids:
                drop_location(t, KIND_DATA, bid)

    def delete_manifest(self, manifest_id: bytes) -> None:
        self._drop(KIND_MANIFEST, manifest_id)

    def _drop(self, kind: int, entry_id: bytes) -> None:
        with self._pending_lock:  # an unsynced copy is dead too: it must not be located later
            self._pending.pop((kind, entry_id), None)
        with self.index.write(durable=False) as t:
            drop_location(t, kind, entry_id)

    # -- the rest of the contract -------------------------------------------------------------
    def check(self) -> None:
        self.files.check()

    def prepare(self) -> None:
        self.files.prepare()

    def flush_all(self) -> None:
        """Seal the open pack now (tests, ``close``)."""
        with self._alloc:
            p = self._current
        if p is not None and p.entries:
            self._rotate(p).result()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        try:
            self.flush_all()
        except Exception as exc:  # the blocks of an unsealed pack are still located (local) or garbage
            log.error("cannot seal the open pack at close: %s", exc)
        with self._alloc:
            p = self._current
            self._current = None
        if p is not None and not p.entries and not p.closed:
            try:
                p.sink.abort()
                self._drop_pack_row(p)
            except Exception as exc:
                log.debug("cannot drop an empty pack: %s", exc)
        self._sealer.shutdown(wait=True)
        self._heartbeat.stop()
        self.files.close()


def _with_live(row: PackRow, dbytes: int, dentries: int) -> PackRow:
    return PackRow(row.state, row.size, row.entries, max(0, row.live_bytes + dbytes),
                   max(0, row.live_entries + dentries), row.created, row.state_time)


def _point(t, rows: dict[bytes, PackRow], kind: int, entry_id: bytes, loc: Loc) -> None:
    """Inside a write txn: ``entry_id`` lives at ``loc`` now (a no-op when it already does). The
    live figures of the pack it leaves and of ``loc``'s pack move in ``rows`` (pack id -> row as
    this txn will write it; the caller writes them)."""
    old = t.get_loc(kind, entry_id)
    if old is not None and old.pack == loc.pack and old.offset == loc.offset:
        return
    if old is not None:
        orow = rows.get(old.pack) or t.get_pack(old.pack)
        if orow is not None:
            rows[old.pack] = _with_live(orow, -old.length, -1)
    t.put_loc(kind, entry_id, loc)
    rows[loc.pack] = _with_live(rows.get(loc.pack) or t.get_pack(loc.pack), loc.length, 1)


def drop_location(t, kind: int, entry_id: bytes) -> Loc | None:
    """Inside a write txn: forget where ``entry_id`` lives; its pack's live bytes shrink."""
    loc = t.get_loc(kind, entry_id)
    if loc is None:
        return None
    t.delete_loc(kind, entry_id)
    row = t.get_pack(loc.pack)
    if row is not None:
        t.put_pack(loc.pack, _with_live(row, -loc.length, -1))
    return loc


def pack_totals(t) -> dict[str, int]:
    """Packs, their bytes and their dead bytes (``cas stats``)."""
    packs = pack_bytes = dead = retired = 0
    for _, row in t.iter_packs():
        if row.state == PACK_RETIRED:
            retired += 1
            continue
        packs += 1
        pack_bytes += row.size
        dead += row.dead_bytes
    return {"packs": packs, "pack_bytes": pack_bytes, "dead_bytes": dead, "retired_packs": retired}
