"""Where pack bytes live: ``PackFiles`` (one backend) and ``PackSink`` (one pack being written).

A ``PackFiles`` stores whole packs under 16-byte pack ids and reads byte ranges of them; it
knows nothing about what a pack holds (``format.py``) or which entries are live (``store.py``).

Contract (``tests/unit/test_packfiles_contract.py`` runs it on every implementation):

- ``create(id)`` starts a pack; the sink's ``write`` appends; ``finish()`` returns once the
  whole pack is durable and readable by every process, and after it the pack never changes.
  ``abort()`` forgets an unfinished pack (nothing of it stays readable). A sink takes no
  ``write``/``flush``/``finish`` after ``finish`` or ``abort`` (``RuntimeError``: a caller's bug).
- ``can_flush``: whether an unfinished pack can be made durable as it grows. Local files can
  (``flush()`` = fdatasync: everything written so far survives a crash and ``read`` sees it);
  an S3 object cannot (nothing of a multipart upload is readable before it completes), so a
  store over S3 finishes a pack wherever a writer needs its blocks durable.
- ``read(id, offset, length)`` returns exactly ``length`` bytes, or raises ``BlockNotFound``
  (no such pack), ``IntegrityError`` (the pack is shorter than asked), ``TransientStoreError``
  or ``PermanentStoreError`` (backend failures).
- ``iter_packs()`` yields ``(id, size, created)`` of every finished (or, where ``can_flush``,
  unfinished) pack in ascending id order, streaming.
- Thread-safe; several processes may create packs in one store (ids are random).

Beside packs, a backend keeps a few small **meta objects** under names like ``store.json`` or
``log/00000000000000a0.seg`` (the store's identity, the metadata log and its snapshots:
``cas/meta``). ``put_meta(name, data)`` replaces the object atomically and returns once it is
durable; ``get_meta`` returns its bytes or None; ``list_meta(prefix)`` yields the names under
``prefix`` in ascending order, streaming; ``delete_meta`` of an absent name is not an error.
Names are checked by ``check_meta_name`` (lower-case letters, digits, ``._-``, ``/`` between
parts): they never leave the store's meta directory/prefix.
"""

from __future__ import annotations

import errno
import os
import re
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

from ...errors import BlockNotFound, IntegrityError, PermanentStoreError, StoreError, TransientStoreError
from .format import PACK_ID_LEN

_HEXCHARS = frozenset("0123456789abcdef")
SUFFIX = ".pack"
_META_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,99}(/[a-z0-9][a-z0-9._-]{0,99}){0,7}")
#: a meta object being replaced (local): never listed, never read as the object
_META_TMP = ".tmp-"


def check_meta_name(name: str, *, prefix: bool = False) -> str:
    """``name`` if it is a valid meta object name (or, with ``prefix``, a prefix of one; "" lists all)."""
    if prefix and name == "":
        return name
    if not _META_NAME.fullmatch(name.rstrip("/") if prefix else name) or ".." in name:
        raise ValueError(f"invalid meta object name {name!r}")
    return name


class PackSink(ABC):
    """One pack being written (used by one thread at a time)."""

    @abstractmethod
    def write(self, data: bytes) -> None:
        """Append ``data``."""

    def flush(self) -> None:
        """Make everything written so far durable (only where ``PackFiles.can_flush``)."""
        raise NotImplementedError("this backend cannot flush an unfinished pack")

    @abstractmethod
    def finish(self) -> None:
        """Make the whole pack durable and visible; no writes after it."""

    @abstractmethod
    def abort(self) -> None:
        """Forget the pack (best effort)."""


class PackFiles(ABC):
    """Packs of one store on one backend."""

    kind: str = "abstract"
    can_flush: bool = False

    @abstractmethod
    def create(self, pack_id: bytes) -> PackSink: ...

    @abstractmethod
    def read(self, pack_id: bytes, offset: int, length: int) -> bytes: ...

    @abstractmethod
    def size(self, pack_id: bytes) -> int:
        """The stored size of a pack; ``BlockNotFound`` when absent."""

    @abstractmethod
    def delete(self, pack_id: bytes) -> None:
        """Remove a pack; deleting an absent pack is not an error."""

    @abstractmethod
    def iter_packs(self) -> Iterator[tuple[bytes, int, float]]: ...

    # -- meta objects (see the module docstring)
    @abstractmethod
    def put_meta(self, name: str, data: bytes) -> None: ...

    @abstractmethod
    def get_meta(self, name: str) -> bytes | None: ...

    @abstractmethod
    def list_meta(self, prefix: str = "") -> Iterator[str]: ...

    @abstractmethod
    def delete_meta(self, name: str) -> None: ...

    #: whether ``reseal`` works here (packs written in place: local files, memory)
    can_reseal: bool = False

    def reseal(self, pack_id: bytes, keep: int, tail: bytes) -> None:
        """Seal a pack its writer never finished (``cas recover``, offline): cut it to ``keep``
        bytes, append ``tail`` (its footer) and make it durable. Idempotent: a crash in between
        leaves a pack without valid footer, which the next run scans and reseals again."""
        raise NotImplementedError(f"packs on {self.kind} cannot be resealed")

    def check(self) -> None:  # noqa: B027
        """Raise ``StoreError`` when the backend is not reachable."""

    def prepare(self) -> None:  # noqa: B027
        """Create what a new store needs in the backend; idempotent."""

    def close(self) -> None:  # noqa: B027
        """Release resources."""


def pack_name(pack_id: bytes) -> str:
    return pack_id.hex()


def _mapped(exc: OSError, what: str) -> StoreError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
        return PermanentStoreError(f"{what}: {exc.strerror}")
    return TransientStoreError(f"{what}: {exc.strerror or exc}")


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until all of ``data`` is written (a write may be short)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _LocalSink(PackSink):
    def __init__(self, files: LocalPackFiles, pack_id: bytes):
        self._files = files
        self.pack_id = pack_id
        self.path = files.path(pack_id)
        self._dir_synced = False
        try:
            self.path.parent.mkdir(mode=0o700, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        except OSError as exc:
            raise _mapped(exc, f"cannot create pack {pack_name(pack_id)}") from exc

    def _require_open(self) -> None:
        if self._fd < 0:
            raise RuntimeError(f"pack {pack_name(self.pack_id)} is finished or aborted")

    def write(self, data: bytes) -> None:
        self._require_open()
        try:
            _write_all(self._fd, data)
        except OSError as exc:
            raise _mapped(exc, f"cannot write pack {pack_name(self.pack_id)}") from exc

    def flush(self) -> None:
        self._require_open()
        try:
            os.fdatasync(self._fd)
            if not self._dir_synced:  # the new file's name must survive a crash too
                _fsync_dir(self.path.parent)
                self._dir_synced = True
        except OSError as exc:
            raise _mapped(exc, f"cannot flush pack {pack_name(self.pack_id)}") from exc

    def finish(self) -> None:
        self._require_open()
        try:
            os.fsync(self._fd)
            if not self._dir_synced:
                _fsync_dir(self.path.parent)
                self._dir_synced = True
        except OSError as exc:
            raise _mapped(exc, f"cannot flush pack {pack_name(self.pack_id)}") from exc
        finally:
            self._close()

    def _close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def abort(self) -> None:
        self._close()
        self._files.delete(self.pack_id)


class _Fd:
    __slots__ = ("fd", "users", "evicted")

    def __init__(self, fd: int):
        self.fd = fd
        self.users = 0
        self.evicted = False


class LocalPackFiles(PackFiles):
    """Packs as files ``ROOT/packs/ab/<hex>.pack`` (256-way fan-out; 32 MiB packs keep a
    store of 10 TB under 330k files). Unfinished packs are written in place: readable and,
    after ``flush``, durable as they grow. Reads use ``pread`` on a small cache of open file
    descriptors (a descriptor stays valid while a read uses it, even if the pack is deleted)."""

    kind = "local"
    can_flush = True
    FD_CACHE = 64

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.packs = self.root / "packs"
        self.meta = self.root / "meta"
        try:
            # blocks are other users' data: only the server's account may read them
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            if self.root.stat().st_mode & 0o077:
                os.chmod(self.root, 0o700)
            self.packs.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise _mapped(exc, f"cannot create block directory {self.root}") from exc
        self._fds: OrderedDict[bytes, _Fd] = OrderedDict()
        self._lock = threading.Lock()

    def path(self, pack_id: bytes) -> Path:
        h = pack_name(pack_id)
        return self.packs / h[:2] / (h + SUFFIX)

    def create(self, pack_id: bytes) -> PackSink:
        return _LocalSink(self, pack_id)

    def _open(self, pack_id: bytes, flags: int) -> int:
        """A descriptor of an existing pack (``BlockNotFound`` when there is none)."""
        try:
            return os.open(self.path(pack_id), flags)
        except FileNotFoundError:
            raise BlockNotFound(f"pack {pack_name(pack_id)} is missing from {self.root}") from None
        except OSError as exc:
            raise _mapped(exc, f"cannot open pack {pack_name(pack_id)}") from exc

    def _acquire(self, pack_id: bytes) -> _Fd:
        with self._lock:
            entry = self._fds.get(pack_id)
            if entry is not None:
                self._fds.move_to_end(pack_id)
                entry.users += 1
                return entry
        fd = self._open(pack_id, os.O_RDONLY)
        with self._lock:
            entry = self._fds.get(pack_id)
            if entry is not None:  # another thread opened it meanwhile
                os.close(fd)
            else:
                entry = self._fds[pack_id] = _Fd(fd)
            entry.users += 1
            while len(self._fds) > self.FD_CACHE:
                _, old = self._fds.popitem(last=False)
                old.evicted = True
                if old.users == 0:
                    os.close(old.fd)
            return entry

    def _release(self, entry: _Fd) -> None:
        with self._lock:
            entry.users -= 1
            if entry.evicted and entry.users == 0:
                os.close(entry.fd)

    def _forget(self, pack_id: bytes) -> None:
        with self._lock:
            entry = self._fds.pop(pack_id, None)
            if entry is not None:
                entry.evicted = True
                if entry.users == 0:
                    os.close(entry.fd)

    def read(self, pack_id: bytes, offset: int, length: int) -> bytes:
        entry = self._acquire(pack_id)
        try:
            data = os.pread(entry.fd, length, offset)
        except OSError as exc:
            raise _mapped(exc, f"cannot read pack {pack_name(pack_id)}") from exc
        finally:
            self._release(entry)
        if len(data) != length:
            raise IntegrityError(f"pack {pack_name(pack_id)} is truncated: {len(data)} of {length} bytes "
                                 f"at offset {offset}")
        return data

    def size(self, pack_id: bytes) -> int:
        try:
            return os.stat(self.path(pack_id)).st_size
        except FileNotFoundError:
            raise BlockNotFound(f"pack {pack_name(pack_id)} is missing from {self.root}") from None

    def delete(self, pack_id: bytes) -> None:
        self._forget(pack_id)
        try:
            os.unlink(self.path(pack_id))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _mapped(exc, f"cannot delete pack {pack_name(pack_id)}") from exc

    can_reseal = True

    def reseal(self, pack_id: bytes, keep: int, tail: bytes) -> None:
        self._forget(pack_id)
        fd = self._open(pack_id, os.O_WRONLY)
        try:
            os.ftruncate(fd, keep)
            os.lseek(fd, keep, os.SEEK_SET)
            _write_all(fd, tail)
            os.fsync(fd)
        except OSError as exc:
            raise _mapped(exc, f"cannot seal pack {pack_name(pack_id)}") from exc
        finally:
            os.close(fd)

    def iter_packs(self) -> Iterator[tuple[bytes, int, float]]:
        try:
            tops = sorted(e.name for e in os.scandir(self.packs) if len(e.name) == 2 and e.is_dir())
        except FileNotFoundError:
            return
        for top in tops:
            names = sorted(e.name for e in os.scandir(self.packs / top)
                           if e.name.endswith(SUFFIX) and len(e.name) == 2 * PACK_ID_LEN + len(SUFFIX)
                           and set(e.name[:-len(SUFFIX)]) <= _HEXCHARS)
            for name in names:
                try:
                    st = os.stat(self.packs / top / name)
                except FileNotFoundError:
                    continue
                yield bytes.fromhex(name[:-len(SUFFIX)]), st.st_size, st.st_mtime

    # -- meta objects: files under ROOT/meta, replaced by write + fsync + rename + fsync(dir)
    def _meta_path(self, name: str) -> Path:
        return self.meta / check_meta_name(name)

    def put_meta(self, name: str, data: bytes) -> None:
        path = self._meta_path(name)
        tmp = path.with_name(f"{_META_TMP}{path.name}.{os.getpid()}.{threading.get_ident()}")
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                _write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise _mapped(exc, f"cannot write meta object {name}") from exc

    def get_meta(self, name: str) -> bytes | None:
        try:
            return self._meta_path(name).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _mapped(exc, f"cannot read meta object {name}") from exc

    def list_meta(self, prefix: str = "") -> Iterator[str]:
        check_meta_name(prefix, prefix=True)
        found = []
        for dirpath, dirnames, filenames in os.walk(self.meta):
            rel = os.path.relpath(dirpath, self.meta)
            base = "" if rel == "." else rel.replace(os.sep, "/") + "/"
            found.extend(base + f for f in filenames if not f.startswith(_META_TMP) and (base + f).startswith(prefix))
        yield from sorted(found)

    def delete_meta(self, name: str) -> None:
        try:
            os.unlink(self._meta_path(name))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _mapped(exc, f"cannot delete meta object {name}") from exc

    def check(self) -> None:
        if not os.access(self.packs, os.W_OK):
            raise PermanentStoreError(f"pack directory {self.packs} is not writable")

    def close(self) -> None:
        with self._lock:
            for entry in self._fds.values():
                entry.evicted = True
                if entry.users == 0:
                    os.close(entry.fd)
            self._fds.clear()


class _MemorySink(PackSink):
    def __init__(self, files: MemoryPackFiles, pack_id: bytes):
        self._files = files
        self.pack_id = pack_id
        self._open = True
        with files._lock:
            files._packs[pack_id] = (bytearray(), time.time())

    def _require_open(self) -> None:
        if not self._open:
            raise RuntimeError(f"pack {pack_name(self.pack_id)} is finished or aborted")

    def write(self, data: bytes) -> None:
        self._require_open()
        with self._files._lock:
            self._files._packs[self.pack_id][0].extend(data)

    def flush(self) -> None:
        self._require_open()

    def finish(self) -> None:
        self._require_open()
        self._open = False

    def abort(self) -> None:
        self._open = False
        self._files.delete(self.pack_id)


class MemoryPackFiles(PackFiles):
    """Packs in a dict, for tests (one process)."""

    kind = "memory"
    can_flush = True

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._packs: dict[bytes, tuple[bytearray, float]] = {}
        self._meta: dict[str, bytes] = {}

    def create(self, pack_id: bytes) -> PackSink:
        return _MemorySink(self, pack_id)

    def read(self, pack_id: bytes, offset: int, length: int) -> bytes:
        with self._lock:
            entry = self._packs.get(pack_id)
            if entry is None:
                raise BlockNotFound(f"pack {pack_name(pack_id)} is not in the store")
            data = bytes(entry[0][offset:offset + length])
        if len(data) != length:
            raise IntegrityError(f"pack {pack_name(pack_id)} is truncated at offset {offset}")
        return data

    def size(self, pack_id: bytes) -> int:
        with self._lock:
            entry = self._packs.get(pack_id)
        if entry is None:
            raise BlockNotFound(f"pack {pack_name(pack_id)} is not in the store")
        return len(entry[0])

    def delete(self, pack_id: bytes) -> None:
        with self._lock:
            self._packs.pop(pack_id, None)

    def iter_packs(self) -> Iterator[tuple[bytes, int, float]]:
        with self._lock:
            items = sorted((pid, len(buf), created) for pid, (buf, created) in self._packs.items())
        yield from items

    def put_meta(self, name: str, data: bytes) -> None:
        with self._lock:
            self._meta[check_meta_name(name)] = bytes(data)

    def get_meta(self, name: str) -> bytes | None:
        with self._lock:
            return self._meta.get(check_meta_name(name))

    def list_meta(self, prefix: str = "") -> Iterator[str]:
        check_meta_name(prefix, prefix=True)
        with self._lock:
            names = sorted(n for n in self._meta if n.startswith(prefix))
        yield from names

    def delete_meta(self, name: str) -> None:
        with self._lock:
            self._meta.pop(check_meta_name(name), None)

    can_reseal = True

    def reseal(self, pack_id: bytes, keep: int, tail: bytes) -> None:
        with self._lock:
            entry = self._packs.get(pack_id)
            if entry is None:
                raise BlockNotFound(f"pack {pack_name(pack_id)} is not in the store")
            del entry[0][keep:]
            entry[0].extend(tail)

    def damage(self, pack_id: bytes, offset: int, data: bytes) -> None:
        """Tests: overwrite bytes of a stored pack."""
        with self._lock:
            buf = self._packs[pack_id][0]
            buf[offset:offset + len(data)] = data

    def truncate(self, pack_id: bytes, size: int) -> None:
        """Tests: cut a stored pack short."""
        with self._lock:
            del self._packs[pack_id][0][size:]
