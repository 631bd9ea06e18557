"""The BlockStore contract: where encoded blocks live.

A BlockStore maps a 32-byte block id to an opaque encoded payload (see
``cas.codec``); it knows nothing about names, manifests or the index.

Guarantees every implementation gives (``tests/unit/test_blockstore_contract.py``
checks them against each one):

- ``put(id, data)`` is atomic: no reader ever observes a half-written block,
  and it is idempotent: putting the same id again is harmless.
- A block is readable by ``get`` right after ``put`` returns, from any thread of the
  process that put it; after ``sync`` also from any process that opens the same store.
- ``sync(ids)`` returns only once every listed block put by this process is
  durable (survives a power loss). The write path calls it before it commits
  a name that relies on those blocks. ``put`` alone promises visibility, not
  durability, so a backend may batch the expensive flush (packs: one flush for
  every writer that appended before it: group commit).
- ``get`` of a missing id raises ``BlockNotFound``; backend failures raise
  ``TransientStoreError`` (worth retrying) or ``PermanentStoreError``.
- ``iter_ids(start_after)`` yields ``(id, created)`` for every synced block whose id is greater
  than ``start_after`` (all when None), in ascending id order, streaming (memory does not grow
  with the store). The order is what lets a listing resume after a failure.
- Retries, counters and other cross-cutting concerns are layers around a backend
  (``layers.py``), not part of it.
- Implementations are safe to call from several threads at once.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BlockStat:
    """What the backend knows about one stored block."""

    size: int  # stored (encoded) bytes
    created: float  # unix time the backend recorded


class BlockCounters:
    """Operation counters, so tests and benchmarks can assert on block I/O."""

    __slots__ = ("puts", "gets", "deletes", "bytes_put", "bytes_got", "_lock")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.puts = self.gets = self.deletes = self.bytes_put = self.bytes_got = 0

    def count_put(self, n: int) -> None:
        with self._lock:
            self.puts += 1
            self.bytes_put += n

    def count_get(self, n: int) -> None:
        with self._lock:
            self.gets += 1
            self.bytes_got += n

    def count_delete(self) -> None:
        with self._lock:
            self.deletes += 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {k: getattr(self, k) for k in ("puts", "gets", "deletes", "bytes_put", "bytes_got")}


class BlockStore(ABC):
    """Interface of a block backend (local disk, memory, S3)."""

    #: a short URL-like description, recorded in the index at init ("local", "s3://bucket/prefix")
    kind: str = "abstract"

    @abstractmethod
    def put(self, block_id: bytes, data: bytes) -> None:
        """Store ``data`` under ``block_id``; atomic and idempotent."""

    @abstractmethod
    def get(self, block_id: bytes) -> bytes:
        """Return the stored bytes of ``block_id``; ``BlockNotFound`` when absent."""

    @abstractmethod
    def has(self, block_id: bytes) -> bool:
        """Whether ``block_id`` is stored."""

    @abstractmethod
    def delete(self, block_id: bytes) -> None:
        """Remove ``block_id``; deleting an absent block is not an error."""

    @abstractmethod
    def stat(self, block_id: bytes) -> BlockStat:
        """Size and creation time of ``block_id``; ``BlockNotFound`` when absent."""

    @abstractmethod
    def iter_ids(self, start_after: bytes | None = None) -> Iterator[tuple[bytes, float]]:
        """Yield ``(block_id, created)`` for every stored block after ``start_after``, in id order."""

    def get_many(self, block_ids: list[bytes]) -> Iterator[bytes]:
        """The stored bytes of ``block_ids`` in order (a pack store coalesces neighbours)."""
        for bid in block_ids:
            yield self.get(bid)

    def put_manifest(self, manifest_id: bytes, encoded: bytes) -> None:  # noqa: B027
        """Keep an encoded manifest in the backend too (packs do; others keep it in the index only).
        ``sync`` with its id makes it durable."""

    def delete_manifest(self, manifest_id: bytes) -> None:  # noqa: B027
        """Forget a manifest kept by ``put_manifest`` (GC dropped its index row)."""

    def bind_manifest(self, t, manifest_id: bytes) -> None:  # noqa: B027
        """Inside the index txn that commits a name to ``manifest_id`` (packs keep its entry located)."""

    def delete_many(self, block_ids: list[bytes]) -> None:
        """``delete`` of each id (a pack store does it in one index txn)."""
        for bid in block_ids:
            self.delete(bid)

    def iter_temp(self) -> Iterator[tuple[Path, float]]:
        """Temp files of interrupted writes with their mtimes (GC removes old ones); none by default."""
        return iter(())

    def sync(self, block_ids: Iterable[bytes]) -> None:  # noqa: B027 - default is a no-op on purpose
        """Make the listed blocks durable. Backends that are durable on put need nothing."""

    def flush(self, tokens: Iterable) -> None:  # noqa: B027
        """Make durable the blocks whose ``put`` returned ``tokens`` (None for a backend without
        tokens, which ``sync`` handles), to be ``bind``-ed in the writer's commit txn."""

    def bind(self, t, tokens: Iterable) -> None:  # noqa: B027
        """Inside the commit txn of a writer that ``flush``-ed: make its blocks (and manifest)
        findable by every process, atomically with the commit (packs)."""

    def bind_rows(self, tokens: Iterable) -> dict:
        """The index rows ``bind(t, tokens)`` will read, as ``IndexTxn.prefetch`` keywords."""
        return {}

    def check(self) -> None:  # noqa: B027
        """Raise ``StoreError`` when the backend is not reachable (used by readiness checks)."""

    def prepare(self) -> None:  # noqa: B027
        """Create what a new store needs in the backend (an S3 bucket); idempotent. Called once,
        when the store is created."""

    def close(self) -> None:  # noqa: B027
        """Release resources."""
