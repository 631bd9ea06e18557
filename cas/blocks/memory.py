"""MemoryBlockStore: blocks in a dict, for tests. Thread-safe; one process only."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from ..errors import BlockNotFound
from ..ids import short
from .base import BlockStat, BlockStore


class MemoryBlockStore(BlockStore):
    kind = "memory"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._blocks: dict[bytes, tuple[bytes, float]] = {}

    def put(self, block_id: bytes, data: bytes) -> None:
        with self._lock:
            if block_id not in self._blocks:
                self._blocks[block_id] = (bytes(data), time.time())

    def get(self, block_id: bytes) -> bytes:
        with self._lock:
            entry = self._blocks.get(block_id)
        if entry is None:
            raise BlockNotFound(f"block {short(block_id)} is not in the store")
        return entry[0]

    def has(self, block_id: bytes) -> bool:
        with self._lock:
            return block_id in self._blocks

    def delete(self, block_id: bytes) -> None:
        with self._lock:
            self._blocks.pop(block_id, None)

    def stat(self, block_id: bytes) -> BlockStat:
        with self._lock:
            entry = self._blocks.get(block_id)
        if entry is None:
            raise BlockNotFound(f"block {short(block_id)} is not in the store")
        return BlockStat(len(entry[0]), entry[1])

    def iter_ids(self, start_after: bytes | None = None) -> Iterator[tuple[bytes, float]]:
        with self._lock:
            items = sorted((k, v[1]) for k, v in self._blocks.items() if start_after is None or k > start_after)
        yield from items
