"""Reading an object: ``ObjectReader`` (verified blocks, read-ahead for remote backends, the first
block fetched before a response starts) and ``ReaderBody``, the one WSGI body of an object that S3
and the web API hand to the server. Thread-safe per reader; a reader belongs to one request."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from ..manifest import Manifest

log = logging.getLogger(__name__)
from .records import ObjectInfo

WINDOW = 4 << 20  # raw bytes fetched (and held) per window of a read from a local store
REMOTE_WINDOW = 8 << 20  # ... from a remote store (one ranged request each)
MAX_WINDOWS_AHEAD = 3  # windows in flight ahead of a remote reader: bounds its memory

if TYPE_CHECKING:
    from . import Store


class ReaderBody:
    """An ObjectReader as a WSGI response body: iterate it once; the server's ``close`` stops
    the read-ahead and ends the block iteration (the one body S3 and the web API hand to WSGI)."""

    def __init__(self, reader: ObjectReader):
        self._reader = reader
        self._iter = iter(reader)

    def __iter__(self) -> Iterator[bytes]:
        return self._iter

    def close(self) -> None:
        try:
            close = getattr(self._iter, "close", None)
            if close is not None:
                close()
        finally:
            self._reader.close()


class ObjectReader:
    """A stream of one object's bytes [start, stop); iterate it, then close it.

    Blocks are fetched and verified ahead of the consumer on the Store's pool
    (a few at a time, so memory stays bounded). A block that is missing or does
    not verify raises ``ObjectDamaged``: before the first byte when it is the
    first block (``prefetch``), otherwise in the middle of the stream, where a
    front end must cut the connection rather than send short or wrong bytes.
    """

    def __init__(self, store: Store, info: ObjectInfo, manifest: Manifest, start: int, stop: int,
                 *, prefetch: bool = True):
        self.info = info
        self.start = start
        self.stop = stop
        self._store = store
        self._manifest = manifest
        self._closed = False
        self._first: bytes | None = None
        if prefetch:
            self.prefetch()

    def prefetch(self) -> None:
        """Read and verify the first block now (``ObjectDamaged`` if it cannot be read)."""
        if self._first is None and self.stop > self.start:
            first = self._manifest.span(self.start, self.stop)[0]
            self._first = self._fetch(self._manifest.ids[first])

    def _fetch(self, block_id: bytes) -> bytes:
        return self._store.read_object_block(self.info, block_id)

    @property
    def length(self) -> int:
        return self.stop - self.start

    def __iter__(self) -> Iterator[bytes]:
        first, last, offset = self._manifest.span(self.start, self.stop)
        lengths = self._manifest.lengths
        for i, data in zip(range(first, last), self._blocks(first, last)):
            lo = max(self.start - offset, 0)
            hi = min(self.stop - offset, lengths[i])
            offset += lengths[i]
            if self._closed:
                return
            yield data if (lo == 0 and hi == len(data)) else data[lo:hi]

    def _blocks(self, first: int, last: int) -> Iterator[bytes]:
        """Verified blocks first..last-1, fetched a window at a time (``WINDOW`` raw bytes: one
        coalesced ranged read per run of neighbours in a pack). A local store reads each window
        on this thread (threads would only fight over the GIL); a remote one keeps ``ahead``
        windows in flight on the pool."""
        ids = self._manifest.ids
        if first < last and self._first is not None:
            data, self._first = self._first, None
            yield data
            first += 1
        windows = self._windows(first, last)
        fetch = self._fetch_window
        ahead = self._store.read_ahead
        if not ahead:
            for a, b in windows:
                yield from fetch(ids[a:b])
            return
        pool = self._store.pool
        depth = max(2, min(ahead, MAX_WINDOWS_AHEAD))
        pending = [pool.submit(fetch, ids[a:b]) for a, b in windows[:depth]]
        nxt = len(pending)
        try:
            while pending:
                blocks = pending.pop(0).result()
                if nxt < len(windows):
                    a, b = windows[nxt]
                    pending.append(pool.submit(fetch, ids[a:b]))
                    nxt += 1
                yield from blocks
        finally:
            for fut in pending:
                fut.cancel()

    def _windows(self, first: int, last: int) -> list[tuple[int, int]]:
        lengths = self._manifest.lengths
        window = REMOTE_WINDOW if self._store.read_ahead else WINDOW
        out = []
        a = first
        size = 0
        for i in range(first, last):
            size += lengths[i]
            if size >= window:
                out.append((a, i + 1))
                a, size = i + 1, 0
        if a < last:
            out.append((a, last))
        return out

    def _fetch_window(self, block_ids) -> list[bytes]:
        return self._store.read_object_blocks(self.info, list(block_ids))

    def read_all(self) -> bytes:
        return b"".join(self)

    def close(self) -> None:
        self._closed = True
