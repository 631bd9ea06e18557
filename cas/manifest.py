"""Manifests: the ordered list of blocks (id, raw length) that makes a file.

Encoding: version byte, count (u32 BE), then per entry 32-byte id + u32 BE
length. The manifest id is BLAKE3 of the encoding, so identical files share one
manifest. Offsets are cumulative lengths; ``span`` bisects them so a range read
touches only the blocks it needs.
"""

from __future__ import annotations

import bisect
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from .errors import IntegrityError
from .ids import ID_LEN, block_id

VERSION = 1
_HEAD = struct.Struct(">BI")
_ENTRY = struct.Struct(f">{ID_LEN}sI")
#: where the entries of an encoded manifest start (for readers that unpack entries their own way)
ENTRIES_OFFSET = _HEAD.size
ENTRY_SIZE = _ENTRY.size


def entry_count(encoded: bytes) -> int:
    """Check an encoded manifest's layout (version, length) and return its number of entries.

    The one check of the encoding: ``IntegrityError`` when it is truncated or damaged.
    """
    if len(encoded) < _HEAD.size:
        raise IntegrityError("manifest is truncated")
    version, count = _HEAD.unpack_from(encoded)
    if version != VERSION or len(encoded) != _HEAD.size + count * _ENTRY.size:
        raise IntegrityError("manifest is damaged")
    return count


def iter_entries(encoded: bytes) -> Iterator[tuple[bytes, int]]:
    """The (block id, raw length) entries of an encoded manifest (checked first: ``IntegrityError``)."""
    entry_count(encoded)
    return _ENTRY.iter_unpack(memoryview(encoded)[_HEAD.size :])


@dataclass(frozen=True)
class Manifest:
    """An immutable list of (block id, raw length)."""

    ids: tuple[bytes, ...] = ()
    lengths: tuple[int, ...] = ()
    _ends: list[int] = field(default_factory=list, compare=False, repr=False)

    def __post_init__(self) -> None:
        total = 0
        ends = self._ends
        for n in self.lengths:
            total += n
            ends.append(total)

    @classmethod
    def of(cls, entries: Iterable[tuple[bytes, int]]) -> Manifest:
        pairs = list(entries)
        return cls(tuple(p[0] for p in pairs), tuple(p[1] for p in pairs))

    @property
    def size(self) -> int:
        return self._ends[-1] if self._ends else 0

    def __len__(self) -> int:
        return len(self.ids)

    def entries(self) -> Iterable[tuple[bytes, int]]:
        return zip(self.ids, self.lengths)

    def encode(self) -> bytes:
        out = bytearray(_HEAD.pack(VERSION, len(self.ids)))
        for bid, n in zip(self.ids, self.lengths):
            out += _ENTRY.pack(bid, n)
        return bytes(out)

    @property
    def id(self) -> bytes:
        return block_id(self.encode())

    @classmethod
    def decode(cls, data: bytes) -> Manifest:
        ids = []
        lengths = []
        for bid, n in iter_entries(data):
            ids.append(bid)
            lengths.append(n)
        return cls(tuple(ids), tuple(lengths))

    def span(self, start: int, stop: int) -> tuple[int, int, int]:
        """Blocks covering bytes [start, stop): (first index, last index + 1, offset of first block)."""
        if start >= stop:
            return 0, 0, 0
        first = bisect.bisect_right(self._ends, start)
        last = bisect.bisect_left(self._ends, stop) + 1
        offset = self._ends[first - 1] if first else 0
        return first, min(last, len(self.ids)), offset

    def concat(self, others: Iterable[Manifest]) -> Manifest:
        ids = list(self.ids)
        lengths = list(self.lengths)
        for m in others:
            ids.extend(m.ids)
            lengths.extend(m.lengths)
        return Manifest(tuple(ids), tuple(lengths))
