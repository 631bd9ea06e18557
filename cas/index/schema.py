"""Index schema: named databases, key and value packing, format version.

Everything that knows how a row is laid out lives here; ``lmdb_index`` only
moves bytes. Keys sort byte-wise, so object keys come out in UTF-8 binary order.
See docs/design.md for the table of databases.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass

FORMAT_VERSION = 1

DB_NAMES = (
    "meta", "buckets", "objects", "manifests", "blocks", "pins", "writers",
    "refs", "uploads", "parts", "users", "kv", "events",
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
