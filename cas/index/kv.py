"""KvTxn: the domain operations of an index transaction, written once over byte primitives.

Every index stores the same rows: one key/value table per name in ``schema.DB_NAMES``, keys and
values packed by ``schema.py``, keys ordered by their bytes. ``KvTxn`` turns the ``IndexTxn``
methods of ``base.py`` into operations on those tables; an implementation (``LmdbTxn``,
``PgTxn``) only moves bytes, through five primitives:

- ``_get(db, key)`` the value, or None;
- ``_put(db, key, value, overwrite=)`` stores it (without ``overwrite`` only when absent) and
  returns whether it was stored;
- ``_delete(db, key)`` returns whether a row went;
- ``_scan(db, prefix, start)`` the rows whose key starts with ``prefix``, in key order, from
  ``start`` (``>= prefix``; inclusive) on. It streams and stays valid while the same transaction
  deletes rows (those not yet reached are skipped);
- ``_trim(db, upto)`` drops the rows of a table keyed by a big-endian u64 up to ``upto``.

A subclass may override a domain method where its store does better than the primitives (LMDB
walks listings with one cursor). A transaction object belongs to one thread.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from . import schema as s
from .schema import BlockRow, Loc, PackRow


class KvTxn:
    """Domain operations inside one transaction, over the primitives a subclass implements."""

    __slots__ = ()

    # -- primitives ------------------------------------------------------------------------
    def _get(self, db: str, key: bytes) -> bytes | None:
        raise NotImplementedError

    def _put(self, db: str, key: bytes, value: bytes, *, overwrite: bool = True) -> bool:
        raise NotImplementedError

    def _delete(self, db: str, key: bytes) -> bool:
        raise NotImplementedError

    def _scan(self, db: str, prefix: bytes = b"", start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        raise NotImplementedError

    def _trim(self, db: str, upto: int) -> int:
        raise NotImplementedError

    def _prefetch(self, rows: list[tuple[str, bytes]], counters: bool) -> None:
        """Read ``rows`` ((table, key)) and, with ``counters``, every counter, ahead (``prefetch``);
        an index that reads from memory has nothing to gain and does nothing."""

    # -- read-ahead ------------------------------------------------------------------------
    def prefetch(self, *, counters: bool = False, buckets: Iterable[str] = (),
                 objects: Iterable[tuple[str, str]] = (), blocks: Iterable[bytes] = (),
                 manifests: Iterable[bytes] = (), writers: Iterable[bytes] = (),
                 locs: Iterable[tuple[int, bytes]] = (), packs: Iterable[bytes] = (),
                 pins: Iterable[tuple[bytes, bytes]] = ()) -> None:
        """Say which rows this transaction is about to read, so that an index whose reads are round
        trips (PostgreSQL) fetches them together; a hint only (what is not named is read as usual,
        and naming a row not read costs nothing but its bytes). Inside a write transaction the rows
        are read under its write lock, as any read."""
        rows = [("buckets", b.encode()) for b in buckets]
        rows += [("objects", s.object_key(b, k)) for b, k in objects]
        rows += [("blocks", bid) for bid in blocks]
        rows += [("manifests", mid) for mid in manifests]
        rows += [("writers", w) for w in writers]
        rows += [("locs", bytes((kind,)) + eid) for kind, eid in locs]
        rows += [("packs", pid) for pid in packs]
        rows += [("pins", s.pin_key(bid, w)) for bid, w in pins]
        if rows or counters:
            self._prefetch(rows, counters)

    # -- meta and counters -----------------------------------------------------------------
    def get_meta(self, name: str):
        raw = self._get("meta", name.encode())
        return None if raw is None else s.loads(raw)

    def put_meta(self, name: str, value) -> None:
        self._put("meta", name.encode(), s.dumps(value))

    def counter(self, name: str) -> int:
        raw = self._get("meta", b"n:" + name.encode())
        return 0 if raw is None else s.from_u64(raw)

    def add_counter(self, name: str, delta: int) -> int:
        value = self.counter(name) + delta
        self._put("meta", b"n:" + name.encode(), s.u64(max(value, 0)))
        return value

    def next_seq(self) -> int:
        return self.add_counter("seq", 1)

    # -- buckets ---------------------------------------------------------------------------
    def get_bucket(self, name: str) -> dict | None:
        raw = self._get("buckets", name.encode())
        return None if raw is None else s.loads(raw)

    def put_bucket(self, name: str, record: dict) -> None:
        self._put("buckets", name.encode(), s.dumps(record))

    def delete_bucket(self, name: str) -> bool:
        return self._delete("buckets", name.encode())

    def iter_buckets(self) -> Iterator[tuple[str, dict]]:
        for k, v in self._scan("buckets"):
            yield k.decode(), s.loads(v)

    def bucket_is_empty(self, name: str) -> bool:
        return next(self._scan("objects", name.encode() + s.SEP), None) is None

    # -- objects ---------------------------------------------------------------------------
    def get_object(self, bucket: str, key: str) -> dict | None:
        raw = self._get("objects", s.object_key(bucket, key))
        return None if raw is None else s.loads(raw)

    def put_object(self, bucket: str, key: str, record: dict) -> None:
        self._put("objects", s.object_key(bucket, key), s.dumps(record))

    def delete_object(self, bucket: str, key: str) -> bool:
        return self._delete("objects", s.object_key(bucket, key))

    def iter_objects(self, bucket: str | None = None, prefix: str = "") -> Iterator[tuple[str, str, dict]]:
        """(bucket, key, record) for every object (of one bucket, under a prefix)."""
        p = b"" if bucket is None else s.object_key(bucket, prefix)
        for k, v in self._scan("objects", p):
            b, key = s.split_object_key(k)
            yield b, key, s.loads(v)

    def list_objects(
        self, bucket: str, prefix: str, delimiter: str, start_after: str, limit: int
    ) -> tuple[list[tuple[str, dict]], list[str], bool]:
        """One page of a listing: (entries, common prefixes, truncated), in key order.

        Keys and common prefixes together number at most ``limit``. A common prefix
        is reported once and its keys are skipped by scanning on past them.
        """
        base, full_prefix, start = listing_start(bucket, prefix, delimiter, start_after)
        delim = delimiter.encode()
        entries: list[tuple[str, dict]] = []
        prefixes: list[str] = []
        while True:
            for k, v in self._scan("objects", full_prefix, start):
                if len(entries) + len(prefixes) >= limit:
                    return entries, prefixes, True
                cut = k.find(delim, len(full_prefix)) if delim else -1
                if cut >= 0:
                    group = k[: cut + len(delim)]
                    prefixes.append(group[len(base):].decode())
                    start = group + b"\xff"  # past every key of the group (UTF-8 has no 0xff byte)
                    break
                entries.append((k[len(base):].decode(), s.loads(v)))
            else:
                return entries, prefixes, False

    # -- manifests -------------------------------------------------------------------------
    def get_manifest(self, manifest_id: bytes) -> bytes | None:
        return self._get("manifests", manifest_id)

    def put_manifest(self, manifest_id: bytes, encoded: bytes) -> bool:
        """Store a manifest unless present; returns whether it was new."""
        return self._put("manifests", manifest_id, encoded, overwrite=False)

    def delete_manifest(self, manifest_id: bytes) -> bool:
        return self._delete("manifests", manifest_id)

    def iter_manifests(self) -> Iterator[tuple[bytes, bytes]]:
        yield from self._scan("manifests")

    # -- blocks ----------------------------------------------------------------------------
    def get_block(self, block_id: bytes) -> BlockRow | None:
        raw = self._get("blocks", block_id)
        return None if raw is None else BlockRow.unpack(raw)

    def put_block(self, block_id: bytes, row: BlockRow) -> None:
        self._put("blocks", block_id, row.pack())

    def delete_block(self, block_id: bytes) -> bool:
        return self._delete("blocks", block_id)

    def iter_blocks(self, start: bytes = b"") -> Iterator[tuple[bytes, BlockRow]]:
        for k, v in self._scan("blocks", b"", start):
            yield k, BlockRow.unpack(v)

    # -- pack locations and packs (cas.blocks.packs) ----------------------------------------
    def get_loc(self, kind: int, entry_id: bytes) -> Loc | None:
        raw = self._get("locs", bytes((kind,)) + entry_id)
        return None if raw is None else Loc.unpack(raw)

    def put_loc(self, kind: int, entry_id: bytes, loc: Loc) -> None:
        self._put("locs", bytes((kind,)) + entry_id, loc.pack_row())

    def delete_loc(self, kind: int, entry_id: bytes) -> bool:
        return self._delete("locs", bytes((kind,)) + entry_id)

    def iter_locs(self, kind: int, start_after: bytes | None = None) -> Iterator[tuple[bytes, Loc]]:
        prefix = bytes((kind,))
        for k, v in self._scan("locs", prefix, prefix + start_after if start_after is not None else None):
            if start_after is not None and k[1:] == start_after:
                continue
            yield k[1:], Loc.unpack(v)

    def get_pack(self, pack_id: bytes) -> PackRow | None:
        raw = self._get("packs", pack_id)
        return None if raw is None else PackRow.unpack(raw)

    def put_pack(self, pack_id: bytes, row: PackRow) -> None:
        self._put("packs", pack_id, row.pack_row())

    def delete_pack(self, pack_id: bytes) -> bool:
        return self._delete("packs", pack_id)

    def iter_packs(self) -> Iterator[tuple[bytes, PackRow]]:
        for k, v in self._scan("packs"):
            yield k, PackRow.unpack(v)

    # -- pins and writers ------------------------------------------------------------------
    def add_pin(self, block_id: bytes, writer_id: bytes) -> None:
        self._put("pins", s.pin_key(block_id, writer_id), b"")

    def drop_pin(self, block_id: bytes, writer_id: bytes) -> None:
        self._delete("pins", s.pin_key(block_id, writer_id))

    def pin_writers(self, block_id: bytes) -> list[bytes]:
        return [k[len(block_id):] for k, _ in self._scan("pins", block_id)]

    def iter_pins(self) -> Iterator[tuple[bytes, bytes]]:
        for k, _ in self._scan("pins"):
            yield k[:32], k[32:]

    def put_writer(self, writer_id: bytes, expiry: float, owner: bytes = b"") -> None:
        """A writer's lease; ``owner`` is an opaque identity of its process (see cas.blocklife)."""
        self._put("writers", writer_id, s.f64(expiry) + owner)

    def delete_writer(self, writer_id: bytes) -> None:
        self._delete("writers", writer_id)

    def writer_expiry(self, writer_id: bytes) -> float | None:
        raw = self._get("writers", writer_id)
        return None if raw is None else s.from_f64(raw[:8])

    def iter_writers(self) -> Iterator[tuple[bytes, float]]:
        for k, v in self._scan("writers"):
            yield k, s.from_f64(v[:8])

    def iter_writer_owners(self) -> Iterator[tuple[bytes, float, bytes]]:
        """(writer id, lease expiry, owner identity) of every writer."""
        for k, v in self._scan("writers"):
            yield k, s.from_f64(v[:8]), bytes(v[8:])

    # -- refs: manifests bound per commit, for GC re-marking --------------------------------
    def add_ref(self, seq: int, manifest_id: bytes) -> None:
        self._put("refs", s.u64(seq) + manifest_id, b"")

    def iter_refs(self, after_seq: int) -> Iterator[tuple[int, bytes]]:
        for k, _ in self._scan("refs", b"", s.u64(after_seq + 1)):
            yield s.from_u64(k[:8]), k[8:]

    def trim_refs(self, upto_seq: int) -> int:
        """Drop refs of commits up to ``upto_seq``."""
        return self._trim("refs", upto_seq)

    # -- the metadata log (cas.meta.log): records not yet shipped to the backend ---------------
    def put_mlog(self, n: int, record: dict) -> None:
        self._put("mlog", s.u64(n), s.dumps(record))

    def iter_mlog(self, after: int) -> Iterator[dict]:
        for _, v in self._scan("mlog", b"", s.u64(after + 1)):
            yield s.loads(v)

    def trim_mlog(self, upto: int) -> int:
        return self._trim("mlog", upto)

    # -- multipart uploads -----------------------------------------------------------------
    def get_upload(self, upload_id: str) -> dict | None:
        raw = self._get("uploads", upload_id.encode())
        return None if raw is None else s.loads(raw)

    def put_upload(self, upload_id: str, record: dict) -> None:
        self._put("uploads", upload_id.encode(), s.dumps(record))

    def delete_upload(self, upload_id: str) -> None:
        self._delete("uploads", upload_id.encode())
        for k, _ in list(self._scan("parts", upload_id.encode() + s.SEP)):
            self._delete("parts", k)

    def iter_uploads(self) -> Iterator[tuple[str, dict]]:
        for k, v in self._scan("uploads"):
            yield k.decode(), s.loads(v)

    def put_part(self, upload_id: str, number: int, record: dict) -> None:
        self._put("parts", s.part_key(upload_id, number), s.dumps(record))

    def get_part(self, upload_id: str, number: int) -> dict | None:
        raw = self._get("parts", s.part_key(upload_id, number))
        return None if raw is None else s.loads(raw)

    def iter_parts(self, upload_id: str | None = None) -> Iterator[tuple[str, int, dict]]:
        prefix = b"" if upload_id is None else upload_id.encode() + s.SEP
        for k, v in self._scan("parts", prefix):
            yield k[:-5].decode(), s.part_number(k), s.loads(v)

    # -- users -----------------------------------------------------------------------------
    def get_user(self, name: str) -> dict | None:
        raw = self._get("users", name.encode())
        return None if raw is None else s.loads(raw)

    def put_user(self, name: str, record: dict) -> None:
        self._put("users", name.encode(), s.dumps(record))

    def delete_user(self, name: str) -> bool:
        return self._delete("users", name.encode())

    def iter_users(self) -> Iterator[tuple[str, dict]]:
        for k, v in self._scan("users"):
            yield k.decode(), s.loads(v)

    # -- kv --------------------------------------------------------------------------------
    def kv_get(self, ns: str, key: str) -> bytes | None:
        return self._get("kv", s.kv_key(ns, key))

    def kv_put(self, ns: str, key: str, value: bytes) -> None:
        self._put("kv", s.kv_key(ns, key), value)

    def kv_delete(self, ns: str, key: str) -> bool:
        return self._delete("kv", s.kv_key(ns, key))

    def kv_scan(self, ns: str, prefix: str = "") -> Iterator[tuple[str, bytes]]:
        base = len(ns.encode()) + 1
        for k, v in self._scan("kv", s.kv_key(ns, prefix)):
            yield k[base:].decode(), bytes(v)

    # -- events ----------------------------------------------------------------------------
    def add_event(self, seq: int, record: dict) -> None:
        self._put("events", s.u64(seq), s.dumps(record))

    def iter_events(self, after: int = 0) -> Iterator[dict]:
        for _, v in self._scan("events", b"", s.u64(after + 1)):
            yield s.loads(v)

    def trim_events(self, upto_seq: int) -> int:
        return self._trim("events", upto_seq)

    def last_seq(self) -> int:
        return self.counter("seq")


def listing_start(bucket: str, prefix: str, delimiter: str, start_after: str) -> tuple[bytes, bytes, bytes]:
    """(bucket key prefix, bucket + listing prefix, first key to look at) of a listing page."""
    base = bucket.encode() + s.SEP
    full_prefix = base + prefix.encode()
    start = full_prefix
    if start_after:
        after = base + start_after.encode()
        if after >= start:
            start = after + b"\x00"
            rest = start_after[len(prefix):] if start_after.startswith(prefix) else None
            if delimiter and rest is not None and rest.endswith(delimiter) and delimiter in rest:
                # start_after is a common prefix already returned: skip its whole group
                start = base + start_after[: len(prefix) + rest.index(delimiter) + len(delimiter)].encode() + b"\xff"
    return base, full_prefix, start
