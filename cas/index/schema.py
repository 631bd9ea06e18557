"""Index schema: named databases, key and value packing, format version.

Everything that knows how a row is laid out lives here; ``lmdb_index`` only
moves bytes. Keys sort byte-wise, so object keys come out in UTF-8 binary order.
See docs/design.md for the table of databases.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

#: 1: one file/object per block; 2: blocks and manifests in packs (``locs`` and ``packs`` tables)
FORMAT_VERSION = 2

DB_NAMES = (
    "meta", "buckets", "objects", "manifests", "blocks", "pins", "writers",
    "refs", "uploads", "parts", "users", "kv", "events", "locs", "packs", "mlog",
)

# block states (DAMAGED: still referenced, but a read or verify found its stored bytes missing or
# corrupt; the next writer that holds those bytes writes it again: see cas/blocklife.py)
LIVE, CONDEMNED, DELETING, DAMAGED = 1, 2, 3, 4

LMDB_MAX_KEY = 511
SEP = b"\x00"

_U64 = struct.Struct(">Q")
_U32 = struct.Struct(">I")
_BLOCK = struct.Struct(">BIIdd")
_F64 = struct.Struct(">d")
_LOC = struct.Struct(">16sQIId")
_PACK = struct.Struct(">BQIQIdd")  # state, size, entries, live bytes, live entries, created, state time


def u64(n: int) -> bytes:
    return _U64.pack(n)


def from_u64(b: bytes) -> int:
    return _U64.unpack(b)[0]


def f64(x: float) -> bytes:
    return _F64.pack(x)


def from_f64(b: bytes) -> float:
    return _F64.unpack(b)[0]


def object_key(bucket: str, key: str) -> bytes:
    return bucket.encode() + SEP + key.encode()


def split_object_key(raw: bytes) -> tuple[str, str]:
    b, _, k = raw.partition(SEP)
    return b.decode(), k.decode()


def max_key_bytes(bucket: str) -> int:
    return LMDB_MAX_KEY - len(bucket.encode()) - 1


def part_key(upload_id: str, number: int) -> bytes:
    return upload_id.encode() + SEP + _U32.pack(number)


def part_number(raw: bytes) -> int:
    return _U32.unpack(raw[-4:])[0]


def kv_key(ns: str, key: str) -> bytes:
    return ns.encode() + SEP + key.encode()


def pin_key(block_id: bytes, writer_id: bytes) -> bytes:
    return block_id + writer_id


def dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


_decode = json.JSONDecoder().decode


def loads(raw: bytes):
    return _decode(raw.decode())


@dataclass(frozen=True)
class BlockRow:
    """What the index knows about one block."""

    state: int
    stored_size: int
    raw_len: int
    created: float
    state_time: float

    def pack(self) -> bytes:
        return _BLOCK.pack(self.state, self.stored_size, self.raw_len, self.created, self.state_time)

    @classmethod
    def unpack(cls, raw: bytes) -> BlockRow:
        return cls(*_BLOCK.unpack(raw))


# pack entry kinds (the first byte of a ``locs`` key and of a pack footer entry)
KIND_DATA, KIND_MANIFEST = 0, 1
# pack states: OPEN (a process appends to it), SEALED (footer written, immutable),
# RETIRED (every live entry was moved or dropped; the file goes once the reader grace is over)
PACK_OPEN, PACK_SEALED, PACK_RETIRED = 1, 2, 3


@dataclass(frozen=True)
class Loc:
    """Where one block (or manifest) lives: ``length`` stored bytes at ``offset`` of pack ``pack``."""

    pack: bytes
    offset: int
    length: int
    raw_len: int
    created: float

    def pack_row(self) -> bytes:
        return _LOC.pack(self.pack, self.offset, self.length, self.raw_len, self.created)

    @classmethod
    def unpack(cls, raw: bytes) -> Loc:
        return cls(*_LOC.unpack(raw))


@dataclass(frozen=True)
class PackRow:
    """What the index knows about one pack.

    ``live_*`` count the entries that a location points at; they change in the txn that adds,
    moves or drops a location, so an entry that never got a location (its writer crashed, a
    repack crashed before switching) is dead without anyone having to notice it.
    """

    state: int
    size: int
    entries: int
    live_bytes: int
    live_entries: int
    created: float
    state_time: float

    def pack_row(self) -> bytes:
        return _PACK.pack(self.state, self.size, self.entries, self.live_bytes, self.live_entries,
                          self.created, self.state_time)

    @classmethod
    def unpack(cls, raw: bytes) -> PackRow:
        return cls(*_PACK.unpack(raw))

    @property
    def dead_bytes(self) -> int:
        return max(0, self.size - self.live_bytes)
