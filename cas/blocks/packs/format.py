"""The pack format: encoded blocks back to back, then a footer that describes them.

A pack is one local file or one backend object::

    header   "CASPACK" version(1)  pack id (16)                                 24 bytes
    entries  encoded blocks and manifests back to back (each as ``cas.codec`` encodes it)
    table    one entry per stored item, in offset order:
               kind (u8: 0 data, 1 manifest)  id (32)  offset (u64)  stored length (u32)
               raw length (u32)                                                  49 bytes each
    trailer  table offset (u64)  entry count (u32)  BLAKE3-256 of the table (32)
             "CASPEND" version(1)                                                52 bytes

Integers are big-endian. The trailer sits at a fixed distance from the end, so a reader
needs two ranged reads (trailer, then table) to learn everything a pack holds: the block
table of a store can be rebuilt from pack footers alone (``cas recover``). The table's
checksum catches a damaged footer; a truncated pack has no valid trailer. Each entry is
itself verifiable (the codec re-hashes a block against its id on every read).

Pure functions over bytes; no I/O (``files.py`` stores packs, ``store.py`` fills them).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from typing import NamedTuple

import blake3

from ...errors import IntegrityError
from ...ids import ID_LEN

VERSION = 1
MAGIC = b"CASPACK" + bytes((VERSION,))
END_MAGIC = b"CASPEND" + bytes((VERSION,))
PACK_ID_LEN = 16
HEADER_LEN = len(MAGIC) + PACK_ID_LEN
_ENTRY = struct.Struct(">B32sQII")
ENTRY_LEN = _ENTRY.size
_TRAILER = struct.Struct(">QI32s8s")
TRAILER_LEN = _TRAILER.size
KIND_DATA, KIND_MANIFEST = 0, 1
KINDS = (KIND_DATA, KIND_MANIFEST)


class PackDamaged(IntegrityError):
    """A pack's header, trailer or table does not read back as written."""


class Entry(NamedTuple):
    kind: int
    id: bytes
    offset: int
    length: int  # stored (encoded) bytes
    raw_len: int


def header(pack_id: bytes) -> bytes:
    if len(pack_id) != PACK_ID_LEN:
        raise ValueError("a pack id has 16 bytes")
    return MAGIC + pack_id


def check_header(raw: bytes, pack_id: bytes) -> None:
    if raw[: len(MAGIC)] != MAGIC or raw[len(MAGIC):HEADER_LEN] != pack_id:
        raise PackDamaged(f"pack {pack_id.hex()} has a bad header")


def footer(entries: Iterable[Entry], table_offset: int) -> bytes:
    """The table and trailer that follow the entries (``table_offset`` = where the table starts)."""
    items = list(entries)
    table = b"".join(_ENTRY.pack(e.kind, e.id, e.offset, e.length, e.raw_len) for e in items)
    return table + _TRAILER.pack(table_offset, len(items), blake3.blake3(table).digest(), END_MAGIC)


def footer_len(count: int) -> int:
    return count * ENTRY_LEN + TRAILER_LEN


def parse_trailer(tail: bytes, size: int, name: str = "pack") -> tuple[int, int, bytes]:
    """``(table offset, entry count, table digest)`` from a pack's last ``TRAILER_LEN`` bytes."""
    if size < HEADER_LEN + TRAILER_LEN or len(tail) != TRAILER_LEN:
        raise PackDamaged(f"{name} is truncated ({size} bytes): no footer")
    table_offset, count, digest, magic = _TRAILER.unpack(tail)
    if magic != END_MAGIC:
        raise PackDamaged(f"{name} has no footer (truncated or never sealed)")
    if table_offset < HEADER_LEN or table_offset + footer_len(count) != size:
        raise PackDamaged(f"{name}'s footer does not match its size ({size} bytes)")
    return table_offset, count, digest


def parse_table(table: bytes, count: int, digest: bytes, table_offset: int, name: str = "pack") -> list[Entry]:
    """The entries of a table read from a pack, checked against the trailer's digest."""
    if len(table) != count * ENTRY_LEN or blake3.blake3(table).digest() != digest:
        raise PackDamaged(f"{name}'s footer is damaged (checksum mismatch)")
    entries = []
    end = HEADER_LEN
    for i in range(count):
        kind, eid, offset, length, raw_len = _ENTRY.unpack_from(table, i * ENTRY_LEN)
        if kind not in KINDS or offset < end or offset + length > table_offset:
            raise PackDamaged(f"{name}'s footer entry {i} is out of place")
        end = offset + length
        entries.append(Entry(kind, eid, offset, length, raw_len))
    return entries


def read_footer(read: Callable[[int, int], bytes], size: int, name: str = "pack") -> list[Entry]:
    """The entries of a pack of ``size`` bytes, given ``read(offset, length)`` (two ranged reads)."""
    table_offset, count, digest = parse_trailer(read(size - TRAILER_LEN, TRAILER_LEN) if size >= TRAILER_LEN
                                                else b"", size, name)
    return parse_table(read(table_offset, count * ENTRY_LEN) if count else b"", count, digest, table_offset, name)


def parse_pack(data: bytes, pack_id: bytes) -> list[Entry]:
    """The entries of a whole pack held in memory (header, trailer and table checked)."""
    name = f"pack {pack_id.hex()}"
    check_header(data[:HEADER_LEN], pack_id)
    return read_footer(lambda off, n: data[off:off + n], len(data), name)


assert ID_LEN == 32  # the entry layout above
