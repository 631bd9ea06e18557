"""LocalBlockStore: one file per block under a directory, 256-way fan-out.

Layout: ``ROOT/ab/abcd…`` (full hex id; one level of 256 directories, like
git's objects: two levels cost a directory per block on a young store and
dominated its disk use; ext4's hashed directories hold 10^5-10^6 entries
well, i.e. stores of tens of millions of blocks); in-flight writes live in
``ROOT/tmp/`` and are renamed into place, so a block is never visible
half-written. ``put`` does not fsync: ``sync(ids)`` flushes a writer's blocks
in one go before the index commit that relies on them (one ``syncfs`` for a
large batch, per-file fsync for a few), which keeps ingest fast without
weakening "an acknowledged write survives a crash". Re-putting an existing
block replaces its file, which refreshes its mtime: its creation time for GC's minimum age.
Thread- and multi-process safe (rename is atomic; writers of the same id
produce identical files).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import BlockNotFound, PermanentStoreError, StoreError, TransientStoreError
from ..ids import ID_LEN, short
from .base import BlockStat, BlockStore

_HEXCHARS = frozenset("0123456789abcdef")
_SYNCFS_MIN_BLOCKS = 16

try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    _syncfs = _libc.syncfs
except (OSError, AttributeError):  # not Linux: fall back to per-file fsync
    _syncfs = None


def _mapped(exc: OSError, what: str) -> StoreError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM):
        return PermanentStoreError(f"{what}: {exc.strerror}")
    return TransientStoreError(f"{what}: {exc.strerror or exc}")


class LocalBlockStore(BlockStore):
    kind = "local"

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        try:
            # blocks are other users' data: only the server's account may read them (0700; the
            # directories below inherit nothing, so the root's mode is what guards them)
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            if self.root.stat().st_mode & 0o077:
                os.chmod(self.root, 0o700)  # a store made by an older version
            self.tmp.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            raise _mapped(exc, f"cannot create block directory {self.root}") from exc
        self._dirs: set[str] = set()

    def path(self, block_id: bytes) -> Path:
        h = block_id.hex()
        return self.root / h[:2] / h

    def put(self, block_id: bytes, data: bytes) -> None:
        final = self.path(block_id)
        try:
            parent = str(final.parent)
            if parent not in self._dirs:
                os.makedirs(parent, mode=0o700, exist_ok=True)
                self._dirs.add(parent)
            tmp = self.tmp / f"{final.name}.{uuid.uuid4().hex[:12]}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            finally:
                os.close(fd)
            os.replace(tmp, final)
        except OSError as exc:
            raise _mapped(exc, f"cannot write block {short(block_id)}") from exc

    def sync(self, block_ids: Iterable[bytes]) -> None:
        ids = list(block_ids)
        if not ids:
            return
        try:
            if _syncfs is not None and len(ids) >= _SYNCFS_MIN_BLOCKS:
                fd = os.open(self.root, os.O_RDONLY)
                try:
                    if _syncfs(fd) != 0:
                        err = ctypes.get_errno()
                        raise OSError(err, os.strerror(err))
                finally:
                    os.close(fd)
                return
            dirs = set()
            for bid in ids:
                p = self.path(bid)
                fd = os.open(p, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                dirs.add(p.parent)
            for d in dirs:
                fd = os.open(d, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        except OSError as exc:
            raise _mapped(exc, "cannot flush blocks to disk") from exc

    def get(self, block_id: bytes) -> bytes:
        try:
            with open(self.path(block_id), "rb") as f:
                data = f.read()
        except FileNotFoundError:
            raise BlockNotFound(f"block {short(block_id)} is missing from {self.root}") from None
        except OSError as exc:
            raise _mapped(exc, f"cannot read block {short(block_id)}") from exc
        return data

    def has(self, block_id: bytes) -> bool:
        return self.path(block_id).exists()

    def delete(self, block_id: bytes) -> None:
        try:
            os.unlink(self.path(block_id))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _mapped(exc, f"cannot delete block {short(block_id)}") from exc

    def stat(self, block_id: bytes) -> BlockStat:
        try:
            st = os.stat(self.path(block_id))
        except FileNotFoundError:
            raise BlockNotFound(f"block {short(block_id)} is missing from {self.root}") from None
        return BlockStat(st.st_size, st.st_mtime)

    def iter_ids(self, start_after: bytes | None = None) -> Iterator[tuple[bytes, float]]:
        after = start_after.hex() if start_after is not None else ""
        for top in sorted(os.scandir(self.root), key=lambda e: e.name):
            if len(top.name) != 2 or not top.is_dir() or top.name < after[:2]:
                continue
            # one fan-out directory at a time, sorted: ids come in order, memory stays bounded
            names = sorted(e.name for e in os.scandir(top.path)
                           if len(e.name) == 2 * ID_LEN and set(e.name) <= _HEXCHARS and e.name > after)
            for name in names:
                try:
                    yield bytes.fromhex(name), os.stat(os.path.join(top.path, name)).st_mtime
                except FileNotFoundError:  # deleted while we listed
                    continue

    def iter_temp(self) -> Iterator[tuple[Path, float]]:
        """Temp files of interrupted writes, with their mtimes (GC removes old ones)."""
        for entry in os.scandir(self.tmp):
            try:
                yield Path(entry.path), entry.stat().st_mtime
            except FileNotFoundError:
                continue

    def check(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise PermanentStoreError(f"block directory {self.root} is not writable")
