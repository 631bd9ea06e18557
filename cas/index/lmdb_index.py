"""LmdbIndex: the only module that imports lmdb.

One LMDB environment per process (``open`` before starting threads, never use
it across fork). LMDB is multi-process: the CLI and a running server share the
same files, and write transactions are serialised by LMDB's own lock. Callers
see ``IndexTxn`` objects with domain methods and never an lmdb type. Write
transactions must stay short: no block I/O inside them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import lmdb

from ..errors import Conflict, IndexDamaged, PermanentStoreError, StoreError, TransientStoreError
from . import schema as s
from .schema import BlockRow, Loc, PackRow


#: LMDB's meta pages (the first two pages of data.mdb) and page layout (64-bit builds)
_META_MAGIC = 0xBEEFC0DE
_META_MAGIC_AT, _META_PSIZE_AT = 16, 40
_META_FREE_ROOT_AT, _META_MAIN_ROOT_AT, _META_LAST_PG_AT = 80, 128, 136
_P_BRANCH, _P_LEAF, _P_OVERFLOW = 0x01, 0x02, 0x04
_F_BIGDATA = 0x01
_P_INVALID = (1 << 64) - 1
_PAGE_HDR = 16
#: lmdb errors that mean the file is not (or no longer) a valid environment
_DAMAGE = (lmdb.InvalidError, lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.VersionMismatchError)


def _recover_hint(path: Path) -> str:
    return f"rebuild it from the backend with `cas recover --data {path.parent}`"


class _Unreadable(Exception):
    """The free list could not be parsed: no verdict (``lmdb.open`` decides)."""


def check_data_file(path: Path) -> None:
    """Raise ``IndexDamaged`` when ``path/data.mdb`` is cut short.

    LMDB maps the file and trusts its meta pages: a file cut short (a bad copy, a full disk
    during a copy) opens fine and then kills the process with SIGBUS at the first read past
    the end. The newest meta page names the last page allocated; pages past the end of the file
    are legitimate only when free (LMDB never writes a page that was allocated and freed within
    one txn), so each must be listed in the free list (itself read from the file), and the
    roots of the trees must lie inside the file. Reading the meta page before the size keeps a
    concurrent commit (the file only grows) from making a whole file look short. An empty file
    is a new environment; a file that is not LMDB at all is left to ``lmdb.open``.
    """
    data = path / "data.mdb"
    try:
        f = open(data, "rb")
    except (FileNotFoundError, NotADirectoryError):
        return
    except OSError as exc:
        raise PermanentStoreError(f"cannot read the index at {path}: {exc}") from exc
    with f:
        try:
            verdict = _cut_short(f)
        except OSError as exc:
            raise PermanentStoreError(f"cannot read the index at {path}: {exc}") from exc
    if verdict:
        raise IndexDamaged(f"the index at {path} is damaged (data.mdb is cut short: {verdict}); "
                           f"{_recover_hint(path)}")


def _cut_short(f) -> str | None:
    """What shows ``f`` (data.mdb) to be cut short, or None."""
    need = _META_LAST_PG_AT + 16
    head = f.read(need)
    if len(head) < need:
        return f"{len(head)} bytes" if head else None
    magic, = struct.unpack_from("=I", head, _META_MAGIC_AT)
    psize, = struct.unpack_from("=I", head, _META_PSIZE_AT)
    if magic != _META_MAGIC or psize < 512 or psize > 1 << 16 or psize & (psize - 1):
        return None  # not a meta page this check reads: lmdb.open decides (MDB_INVALID)
    f.seek(psize)
    second = f.read(need)
    size = os.fstat(f.fileno()).st_size
    metas = [head]
    if len(second) == need and struct.unpack_from("=I", second, _META_MAGIC_AT)[0] == _META_MAGIC:
        metas.append(second)
    meta = max(metas, key=lambda m: struct.unpack_from("=Q", m, _META_LAST_PG_AT + 8)[0])
    last_pg, = struct.unpack_from("=Q", meta, _META_LAST_PG_AT)
    free_root, = struct.unpack_from("=Q", meta, _META_FREE_ROOT_AT)
    main_root, = struct.unpack_from("=Q", meta, _META_MAIN_ROOT_AT)
    pages = size // psize
    if last_pg < pages:
        return None
    for root in (free_root, main_root):
        if root != _P_INVALID and root >= pages:
            return f"{size} bytes; a tree's root is page {root}"
    missing = set(range(pages, last_pg + 1))
    try:
        if free_root != _P_INVALID:
            _drop_free_pages(f, psize, pages, free_root, missing)
    except _Unreadable:
        return None
    if missing:
        return f"{size} bytes, and {len(missing)} pages past its end are in use"
    return None


def _drop_free_pages(f, psize: int, pages: int, root: int, missing: set[int], depth: int = 0) -> None:
    """Walk the free-list tree from ``root``, removing from ``missing`` every page it lists."""
    if depth > 32 or root >= pages:
        raise _Unreadable
    f.seek(root * psize)
    page = f.read(psize)
    if len(page) < psize:
        raise _Unreadable
    flags, lower = struct.unpack_from("=HH", page, 10)
    if lower < _PAGE_HDR or lower > psize:
        raise _Unreadable
    ptrs = struct.unpack_from(f"={(lower - _PAGE_HDR) // 2}H", page, _PAGE_HDR)
    for ptr in ptrs:
        if ptr + 8 > psize:
            raise _Unreadable
        lo, hi, nflags, ksize = struct.unpack_from("=HHHH", page, ptr)
        if flags & _P_BRANCH:
            _drop_free_pages(f, psize, pages, lo | hi << 16 | nflags << 32, missing, depth + 1)
        elif flags & _P_LEAF:
            at = ptr + 8 + ksize
            dsize = lo | hi << 16
            if nflags & _F_BIGDATA:
                over, = struct.unpack_from("=Q", page, at)
                if over >= pages:
                    raise _Unreadable
                f.seek(over * psize + _PAGE_HDR)
                idl = f.read(dsize)
            else:
                idl = page[at:at + dsize]
            if len(idl) < 8 or len(idl) % 8:
                raise _Unreadable
            count, = struct.unpack_from("=Q", idl)
            if 8 * (count + 1) > len(idl):
                raise _Unreadable
            missing.difference_update(struct.unpack_from(f"={count}Q", idl, 8))
        else:
            raise _Unreadable


def _mapped(exc: lmdb.Error, what: str) -> StoreError:
    if isinstance(exc, (lmdb.MapFullError, lmdb.DiskError, lmdb.ReadonlyError)):
        return PermanentStoreError(f"{what}: {exc}")
    return TransientStoreError(f"{what}: {exc}")


@contextlib.contextmanager
def file_lock(path: Path, *, wait: float = 0.0) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` for the ``with`` block (``Conflict`` naming the holder when
    not held within ``wait`` seconds).

    Each acquisition opens the file anew, so it excludes other threads of this process too. The
    holder writes its pid and host into the file once it holds it; a waiter that gives up reads
    them back for its message (best effort: a holder that has not written yet shows its
    predecessor's). The kernel drops the lock when the holder dies.
    """
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise PermanentStoreError(f"cannot open the lock file {path}: {exc}") from exc
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 256, 0).decode(errors="replace").strip()
                    raise Conflict(f"{path} is held by {holder or 'another process'}") from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def named_lock(directory: Path, name: str, *, wait: float = 0.0) -> contextlib.AbstractContextManager[None]:
    """The lock ``LmdbIndex.lock(name)`` takes for an index in ``directory/index``, usable without
    opening the index (``cas recover`` replaces a damaged one)."""
    return file_lock(Path(directory) / f"{name}.lock", wait=wait)


class LmdbIndex:
    """The name → manifest → block index of one store."""

    def __init__(self, path: str | os.PathLike, *, map_size: int = 1 << 40):
        self.path = Path(path)
        check_data_file(self.path)
        try:
            self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._env = lmdb.open(
                str(self.path), map_size=map_size, max_dbs=len(s.DB_NAMES) + 2,
                max_readers=1024, mode=0o600, lock=True, readahead=False, metasync=False,
            )
            self._dbs = {name: self._env.open_db(name.encode()) for name in s.DB_NAMES}
        except _DAMAGE as exc:
            raise IndexDamaged(f"the index at {self.path} is damaged ({exc}); {_recover_hint(self.path)}") from exc
        except lmdb.Error as exc:
            raise _mapped(exc, f"cannot open index at {self.path}") from exc
        except OSError as exc:
            raise PermanentStoreError(f"cannot open index at {self.path}: {exc}") from exc

    def close(self) -> None:
        self._env.close()

    @contextlib.contextmanager
    def read(self) -> Iterator[IndexTxn]:
        try:
            txn = self._env.begin(write=False)
        except lmdb.Error as exc:
            raise _mapped(exc, "cannot read the index") from exc
        try:
            yield IndexTxn(txn, self._dbs)
        finally:
            txn.abort()

    @contextlib.contextmanager
    def write(self, *, durable: bool = True) -> Iterator[IndexTxn]:
        """A write txn, committed on exit; with ``durable`` it is on disk when this returns.

        The environment runs with MDB_NOMETASYNC: a commit flushes its data pages but not
        the meta page, so integrity holds after a power loss but the last commits could be
        undone; ``durable`` commits therefore also sync, which flushes the meta page. Only
        state that is worthless after a crash (writers' pins) is committed without it.
        """
        try:
            txn = self._env.begin(write=True)
        except lmdb.Error as exc:
            raise _mapped(exc, "cannot write the index") from exc
        try:
            yield IndexTxn(txn, self._dbs)
        except BaseException:
            txn.abort()
            raise
        try:
            txn.commit()
            if durable:
                self._env.sync(True)
        except lmdb.Error as exc:
            raise _mapped(exc, "cannot commit to the index") from exc

    def disk_usage(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())

    def lock(self, name: str, *, wait: float = 0.0) -> contextlib.AbstractContextManager[None]:
        """``file_lock`` on ``DATA/<name>.lock`` beside the index directory (``"gc"`` is ``DATA/gc.lock``,
        the lock older cas versions took for GC too)."""
        return named_lock(self.path.parent, name, wait=wait)

    def other_processes(self) -> list[int]:
        """Pids of other live processes in LMDB's reader table (stale slots of dead ones cleared
        first). A process is listed once it has read from its main thread (every cas command
        and server does, at open); one that only read from threads that have ended is not."""
        try:
            self._env.reader_check()
            table = self._env.readers()
        except lmdb.Error as exc:
            raise _mapped(exc, "cannot read the index's reader table") from exc
        pids = set()
        for line in table.splitlines()[1:]:
            fields = line.split()
            if fields and fields[0].isdigit():
                pids.add(int(fields[0]))
        pids.discard(os.getpid())
        return sorted(pids)


class IndexTxn:
    """Domain operations inside one transaction (read-only or read-write)."""

    __slots__ = ("_t", "_db")

    def __init__(self, txn, dbs):
        self._t = txn
        self._db = dbs

    # -- generic helpers -------------------------------------------------------------------
    def _get(self, db: str, key: bytes) -> bytes | None:
        return self._t.get(key, db=self._db[db])

    def _put(self, db: str, key: bytes, value: bytes, *, overwrite: bool = True) -> bool:
        try:
            return self._t.put(key, value, db=self._db[db], overwrite=overwrite)
        except lmdb.Error as exc:
            raise _mapped(exc, f"cannot write {db}") from exc

    def _delete(self, db: str, key: bytes) -> bool:
        return self._t.delete(key, db=self._db[db])

    def _scan(self, db: str, prefix: bytes = b"", start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Rows whose key starts with ``prefix``, from ``start`` (inclusive) or the prefix on."""
        with self._t.cursor(db=self._db[db]) as cur:
            if not cur.set_range(start if start is not None else prefix):
                return
            for k, v in cur:
                if not k.startswith(prefix):
                    return
                yield k, v

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
        is reported once and its keys are skipped by seeking past them.
        """
        base = bucket.encode() + s.SEP
        full_prefix = base + prefix.encode()
        delim = delimiter.encode()
        start = full_prefix
        if start_after:
            after = base + start_after.encode()
            if after >= start:
                start = after + b"\x00"
                rest = start_after[len(prefix):] if start_after.startswith(prefix) else None
                if delimiter and rest is not None and rest.endswith(delimiter) and delimiter in rest:
                    # start_after is a common prefix already returned: skip its whole group
                    start = base + start_after[: len(prefix) + rest.index(delimiter) + len(delimiter)].encode() + b"\xff"
        entries: list[tuple[str, dict]] = []
        prefixes: list[str] = []
        db = self._db["objects"]
        with self._t.cursor(db=db) as cur:
            if not cur.set_range(start):
                return entries, prefixes, False
            while True:
                k = cur.key()
                if not k.startswith(full_prefix):
                    return entries, prefixes, False
                if len(entries) + len(prefixes) >= limit:
                    return entries, prefixes, True
                rest = k[len(full_prefix):]
                cut = rest.find(delim) if delim else -1
                if cut >= 0:
                    group = k[: len(full_prefix) + cut + len(delim)]
                    prefixes.append(group[len(base):].decode())
                    if not cur.set_range(group + b"\xff"):
                        return entries, prefixes, False
                    continue
                entries.append((k[len(base):].decode(), s.loads(cur.value())))
                if not cur.next():
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

    def _trim(self, db: str, upto: int) -> int:
        """Drop the rows of a table keyed by a u64 (first 8 bytes) up to ``upto``, streaming:
        deletes under the cursor."""
        n = 0
        with self._t.cursor(db=self._db[db]) as cur:
            if not cur.first():
                return 0
            while True:
                k = cur.key()  # empty once the last row is gone
                if not k or s.from_u64(k[:8]) > upto:
                    break
                cur.delete()  # moves the cursor to the next row
                n += 1
        return n

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
