"""The pack format: encoded blocks back to back, then a footer that describes them.

A pack is one local file or one backend object::

    header   "CASPACK" version(1)  pack id (16)                                 24 bytes
    entries  per stored item: an entry header (v2), then the item's bytes (a block as
             ``cas.codec`` encodes it, a manifest in its own encoding)
               entry header: "CE"  kind (u8)  id (32)  stored length (u32)
               raw length (u32)                                                  43 bytes
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

Version 2 adds the entry headers, so that a pack without footer (a local open pack left by a
process killed with -9, whose flushed entries were acknowledged) can still be read:
``scan_pack`` walks the entries from the pack header up to the first incomplete or
inconsistent one (``cas recover``). Table offsets point at an entry's bytes, after its entry
header, so locations and reads are the same in both versions. Readers accept version 1 (no
entry headers: ``scan_pack`` refuses such a pack) and version 2.

Pure functions over bytes; no I/O (``files.py`` stores packs, ``store.py`` fills them).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

import blake3

from ...errors import IntegrityError
from ...ids import ID_LEN

VERSION = 2
VERSIONS = (1, 2)  # what readers accept
_MAGIC = b"CASPACK"
_END_MAGIC = b"CASPEND"
MAGIC = _MAGIC + bytes((VERSION,))
END_MAGIC = _END_MAGIC + bytes((VERSION,))
PACK_ID_LEN = 16
HEADER_LEN = len(MAGIC) + PACK_ID_LEN
_EHDR = struct.Struct(">2sB32sII")
ENTRY_HEADER_LEN = _EHDR.size  # before each entry (v2)
_EHDR_MAGIC = b"CE"
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


def check_header(raw: bytes, pack_id: bytes) -> int:
    """The pack's format version (``PackDamaged`` unless a header of a version we read, for ``pack_id``)."""
    if (len(raw) < HEADER_LEN or raw[:len(_MAGIC)] != _MAGIC or raw[len(_MAGIC)] not in VERSIONS
            or raw[len(MAGIC):HEADER_LEN] != pack_id):
        raise PackDamaged(f"pack {pack_id.hex()} has a bad header")
    return raw[len(_MAGIC)]


def entry_header(kind: int, entry_id: bytes, length: int, raw_len: int) -> bytes:
    """What precedes an entry's bytes (v2)."""
    return _EHDR.pack(_EHDR_MAGIC, kind, entry_id, length, raw_len)


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
    if magic[:len(_END_MAGIC)] != _END_MAGIC or magic[len(_END_MAGIC)] not in VERSIONS:
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


def scan_pack(read: Callable[[int, int], bytes], size: int, pack_id: bytes, *,
              check: Callable[[Entry, bytes], bool] | None = None,
              window: int = 8 << 20) -> Iterator[tuple[Entry, bytes]]:
    """The entries of a v2 pack of ``size`` bytes read from its start, with their bytes, up to
    the first that is incomplete or inconsistent (bad entry header, length past the end, or
    ``check(entry, data)`` false: the caller re-hashes), or up to its footer. For a pack
    without footer (never sealed); ``PackDamaged`` for a bad header or a v1 pack (it has no
    entry headers to walk). Reads ``window`` bytes at a time (an entry larger than it on its own)."""
    name = f"pack {pack_id.hex()}"
    if size < HEADER_LEN:
        raise PackDamaged(f"{name} is too short ({size} bytes) to have a header")
    version = check_header(read(0, HEADER_LEN), pack_id)
    if version < 2:
        raise PackDamaged(f"{name} is a version {version} pack without footer: it cannot be scanned")
    buf, buf_at = b"", HEADER_LEN  # bytes [buf_at, buf_at + len(buf)) of the pack

    def take(offset: int, n: int) -> bytes | None:
        nonlocal buf, buf_at
        if offset + n > size:
            return None
        if offset < buf_at or offset + n > buf_at + len(buf):
            buf_at = offset
            buf = read(offset, min(size - offset, max(n, window)))
        return buf[offset - buf_at:offset - buf_at + n]

    pos = HEADER_LEN
    while pos < size:
        head = take(pos, ENTRY_HEADER_LEN)
        if head is None:
            return
        magic, kind, eid, length, raw_len = _EHDR.unpack(head)
        if magic != _EHDR_MAGIC or kind not in KINDS:
            return  # the footer's table, or bytes that are no entry
        data = take(pos + ENTRY_HEADER_LEN, length)
        if data is None:
            return
        entry = Entry(kind, eid, pos + ENTRY_HEADER_LEN, length, raw_len)
        if check is not None and not check(entry, data):
            return
        yield entry, data
        pos = entry.offset + length


assert ID_LEN == 32  # the entry layout above
