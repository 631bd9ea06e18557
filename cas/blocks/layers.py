"""Layers around a BlockStore (restic's decorated backends): each adds one concern and passes the
rest through, so backends stay about storage only.

- ``RetryingBlockStore`` retries an operation that failed with ``TransientStoreError`` under a
  ``RetryPolicy`` (one request at a time; a listing resumes after the last id it yielded);
- ``CountingBlockStore`` counts operations and bytes, so tests and benchmarks can assert on
  block I/O (a retried put counts once).

``layered(backend, retry=...)`` stacks them the way the server uses them: counting outermost,
then retrying, then the backend. ``innermost`` reaches the backend under the layers (tests that
look at a local block file, or at the S3 requests a store sent). Thread-safe when the layered
store is.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from .base import BlockCounters, BlockStat, BlockStore
from .retry import RetryPolicy


class BlockStoreLayer(BlockStore):
    """A BlockStore that passes every operation to ``inner`` (subclasses override what they add)."""

    def __init__(self, inner: BlockStore):
        self.inner = inner
        self.kind = inner.kind

    def put(self, block_id: bytes, data: bytes):
        return self.inner.put(block_id, data)

    def get(self, block_id: bytes) -> bytes:
        return self.inner.get(block_id)

    def has(self, block_id: bytes) -> bool:
        return self.inner.has(block_id)

    def delete(self, block_id: bytes) -> None:
        self.inner.delete(block_id)

    def stat(self, block_id: bytes) -> BlockStat:
        return self.inner.stat(block_id)

    def iter_ids(self, start_after: bytes | None = None) -> Iterator[tuple[bytes, float]]:
        return self.inner.iter_ids(start_after)

    def get_many(self, block_ids: list[bytes]) -> Iterator[bytes]:
        return self.inner.get_many(block_ids)

    def put_manifest(self, manifest_id: bytes, encoded: bytes):
        return self.inner.put_manifest(manifest_id, encoded)

    def delete_manifest(self, manifest_id: bytes) -> None:
        self.inner.delete_manifest(manifest_id)

    def bind_manifest(self, t, manifest_id: bytes) -> None:
        self.inner.bind_manifest(t, manifest_id)

    def delete_many(self, block_ids: list[bytes]) -> None:
        self.inner.delete_many(block_ids)

    def iter_temp(self) -> Iterator[tuple[Path, float]]:
        return self.inner.iter_temp()

    def sync(self, block_ids: Iterable[bytes]) -> None:
        self.inner.sync(block_ids)

    def flush(self, tokens) -> None:
        self.inner.flush(tokens)

    def bind(self, t, tokens) -> None:
        self.inner.bind(t, tokens)

    def bind_rows(self, tokens) -> dict:
        return self.inner.bind_rows(tokens)

    def check(self) -> None:
        self.inner.check()

    def prepare(self) -> None:
        self.inner.prepare()

    def close(self) -> None:
        self.inner.close()


class RetryingBlockStore(BlockStoreLayer):
    """Retries transient failures of the backend below (``check`` is not retried: it reports)."""

    def __init__(self, inner: BlockStore, policy: RetryPolicy | None = None):
        super().__init__(inner)
        self.policy = policy or RetryPolicy()

    def put(self, block_id: bytes, data: bytes):
        return self.policy.run("put", lambda: self.inner.put(block_id, data))

    def get(self, block_id: bytes) -> bytes:
        return self.policy.run("get", lambda: self.inner.get(block_id))

    def has(self, block_id: bytes) -> bool:
        return self.policy.run("has", lambda: self.inner.has(block_id))

    def delete(self, block_id: bytes) -> None:
        self.policy.run("delete", lambda: self.inner.delete(block_id))

    def stat(self, block_id: bytes) -> BlockStat:
        return self.policy.run("stat", lambda: self.inner.stat(block_id))

    def sync(self, block_ids: Iterable[bytes]) -> None:
        ids = list(block_ids)
        self.policy.run("sync", lambda: self.inner.sync(ids))

    def prepare(self) -> None:
        self.policy.run("prepare", self.inner.prepare)

    def iter_ids(self, start_after: bytes | None = None) -> Iterator[tuple[bytes, float]]:
        """The listing, resumed after the last id it yielded when it fails (ids come in order)."""
        return self.policy.run_iter("list", self.inner.iter_ids, key=lambda item: item[0], start=start_after)


class CountingBlockStore(BlockStoreLayer):
    """Counts puts, gets, deletes and their bytes (``counters``); a retried operation counts once."""

    def __init__(self, inner: BlockStore):
        super().__init__(inner)
        self.counters = BlockCounters()

    def put(self, block_id: bytes, data: bytes):
        token = self.inner.put(block_id, data)
        self.counters.count_put(len(data))
        return token

    def get(self, block_id: bytes) -> bytes:
        data = self.inner.get(block_id)
        self.counters.count_get(len(data))
        return data

    def delete(self, block_id: bytes) -> None:
        self.inner.delete(block_id)
        self.counters.count_delete()

    def delete_many(self, block_ids: list[bytes]) -> None:
        self.inner.delete_many(block_ids)
        for _ in block_ids:
            self.counters.count_delete()

    def get_many(self, block_ids: list[bytes]) -> Iterator[bytes]:
        for data in self.inner.get_many(block_ids):
            self.counters.count_get(len(data))
            yield data


def layered(backend: BlockStore, *, retry: RetryPolicy | None = None) -> CountingBlockStore:
    """``backend`` as the server uses it: counted, and retried when ``retry`` is given."""
    return CountingBlockStore(RetryingBlockStore(backend, retry) if retry is not None else backend)


def counted(blocks: BlockStore) -> CountingBlockStore:
    """``blocks`` with counters (as it is when it already has them)."""
    return blocks if isinstance(blocks, CountingBlockStore) else CountingBlockStore(blocks)


def innermost(blocks: BlockStore) -> BlockStore:
    """The backend under every layer."""
    while isinstance(blocks, BlockStoreLayer):
        blocks = blocks.inner
    return blocks


def packs_of(blocks: BlockStore):
    """The ``PackedBlockStore`` under the layers, or None for a store of one object per block."""
    from .packs.store import PackedBlockStore

    inner = innermost(blocks)
    return inner if isinstance(inner, PackedBlockStore) else None
