"""LmdbIndex: the only module that imports lmdb.

One LMDB environment per process (``open`` before starting threads, never use
it across fork). LMDB is multi-process: the CLI and a running server share the
same files, and write transactions are serialised by LMDB's own lock. Callers
see ``IndexTxn`` objects (``LmdbTxn``: the domain methods of ``kv.KvTxn`` over LMDB
primitives) and never an lmdb type. Write transactions must stay short: no block
I/O inside them. Named locks (``lock``) are ``flock``s on files beside the index.
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
from .kv import KvTxn, listing_start


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
    def read(self, *, snapshot: bool = True) -> Iterator[LmdbTxn]:
        """A snapshot always (it costs LMDB nothing)."""
        try:
            txn = self._env.begin(write=False)
        except lmdb.Error as exc:
            raise _mapped(exc, "cannot read the index") from exc
        try:
            yield LmdbTxn(txn, self._dbs)
        finally:
            txn.abort()

    @contextlib.contextmanager
    def write(self, *, durable: bool = True) -> Iterator[LmdbTxn]:
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
            yield LmdbTxn(txn, self._dbs)
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

    def watch(self, callback) -> bool:
        """LMDB tells no one of commits; another process's (a CLI command beside a server) is
        found by polling."""
        return False

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


class LmdbTxn(KvTxn):
    """The primitives of ``KvTxn`` over one LMDB transaction (read-only or read-write)."""

    __slots__ = ("_t", "_db")

    def __init__(self, txn, dbs):
        self._t = txn
        self._db = dbs

    def _get(self, db: str, key: bytes) -> bytes | None:
        return self._t.get(key, db=self._db[db])

    def _put(self, db: str, key: bytes, value: bytes, *, overwrite: bool = True) -> bool:
        try:
            return self._t.put(key, value, db=self._db[db], overwrite=overwrite)
        except lmdb.Error as exc:
            raise _mapped(exc, f"cannot write {db}") from exc

    def _delete(self, db: str, key: bytes) -> bool:
        try:
            return self._t.delete(key, db=self._db[db])
        except lmdb.Error as exc:
            raise _mapped(exc, f"cannot write {db}") from exc

    def _scan(self, db: str, prefix: bytes = b"", start: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        with self._t.cursor(db=self._db[db]) as cur:
            if not cur.set_range(start if start is not None else prefix):
                return
            for k, v in cur:
                if not k.startswith(prefix):
                    return
                yield k, v

    def _trim(self, db: str, upto: int) -> int:
        """Streaming: deletes under the cursor."""
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

    def list_objects(
        self, bucket: str, prefix: str, delimiter: str, start_after: str, limit: int
    ) -> tuple[list[tuple[str, dict]], list[str], bool]:
        """``KvTxn.list_objects`` on one cursor that seeks past each common prefix (about twice
        as fast as a new scan per group)."""
        base, full_prefix, start = listing_start(bucket, prefix, delimiter, start_after)
        delim = delimiter.encode()
        entries: list[tuple[str, dict]] = []
        prefixes: list[str] = []
        with self._t.cursor(db=self._db["objects"]) as cur:
            if not cur.set_range(start):
                return entries, prefixes, False
            while True:
                k = cur.key()
                if not k.startswith(full_prefix):
                    return entries, prefixes, False
                if len(entries) + len(prefixes) >= limit:
                    return entries, prefixes, True
                cut = k.find(delim, len(full_prefix)) if delim else -1
                if cut >= 0:
                    group = k[: cut + len(delim)]
                    prefixes.append(group[len(base):].decode())
                    if not cur.set_range(group + b"\xff"):
                        return entries, prefixes, False
                    continue
                entries.append((k[len(base):].decode(), s.loads(cur.value())))
                if not cur.next():
                    return entries, prefixes, False
