"""Meta objects: the encoding of log segments and snapshot parts in the backend.

One meta object holds a list of records (JSON-able dicts, ``records.py``)::

    "CASMETA" version(1)   BLAKE3-256 of the payload (32)   payload = zstd(JSON lines)

The digest makes a damaged or cut object an error (``MetaDamaged``) rather than a silently
shorter history. Names (``PackFiles.put_meta``)::

    store.json                           the store's identity (plain JSON, ``identity.py``)
    log/<first:016x>-<last:016x>.seg     log records first..last (mlog positions, inclusive)
    snap/<n:016x>/part-<i:06d>           a snapshot of every name as of mlog position n, in parts
    snap/<n:016x>/done                   written last: {"n", "parts", "records", "time"}

A snapshot without ``done`` is incomplete and ignored. Positions are 16 hex digits so that the
backend's listing order is numeric order.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import blake3
import zstandard

from ..errors import IntegrityError

VERSION = 1
MAGIC = b"CASMETA" + bytes((VERSION,))
HEADER_LEN = len(MAGIC) + 32
STORE_NAME = "store.json"
LOG_PREFIX = "log/"
SNAP_PREFIX = "snap/"


class MetaDamaged(IntegrityError):
    """A meta object does not read back as written."""


def encode(records: Iterable[dict]) -> bytes:
    lines = b"".join(json.dumps(r, separators=(",", ":"), ensure_ascii=False).encode() + b"\n" for r in records)
    payload = zstandard.ZstdCompressor(level=3).compress(lines)
    return MAGIC + blake3.blake3(payload).digest() + payload


def decode(data: bytes, name: str = "meta object") -> list[dict]:
    if len(data) < HEADER_LEN or data[:len(MAGIC)] != MAGIC:
        raise MetaDamaged(f"{name} is not a cas meta object (bad header or cut short)")
    payload = data[HEADER_LEN:]
    if blake3.blake3(payload).digest() != data[len(MAGIC):HEADER_LEN]:
        raise MetaDamaged(f"{name} is damaged (checksum mismatch)")
    try:
        lines = zstandard.ZstdDecompressor().decompress(payload)
        return [json.loads(line) for line in lines.splitlines() if line]
    except (zstandard.ZstdError, ValueError) as exc:
        raise MetaDamaged(f"{name} is damaged ({exc})") from exc


def log_name(first: int, last: int) -> str:
    return f"{LOG_PREFIX}{first:016x}-{last:016x}.seg"


def parse_log_name(name: str) -> tuple[int, int] | None:
    """``(first, last)`` of a log segment's name, or None for anything else."""
    if not (name.startswith(LOG_PREFIX) and name.endswith(".seg")):
        return None
    first, sep, last = name[len(LOG_PREFIX):-len(".seg")].partition("-")
    try:
        return (int(first, 16), int(last, 16)) if sep and len(first) == len(last) == 16 else None
    except ValueError:
        return None


def snap_part_name(n: int, part: int) -> str:
    return f"{SNAP_PREFIX}{n:016x}/part-{part:06d}"


def snap_done_name(n: int) -> str:
    return f"{SNAP_PREFIX}{n:016x}/done"


def parse_snap_name(name: str) -> tuple[int, str] | None:
    """``(n, rest)`` of a snapshot object's name (rest: ``done`` or ``part-NNNNNN``), or None."""
    if not name.startswith(SNAP_PREFIX):
        return None
    n, sep, rest = name[len(SNAP_PREFIX):].partition("/")
    try:
        return (int(n, 16), rest) if sep and len(n) == 16 else None
    except ValueError:
        return None


def log_segments(files) -> list[tuple[int, int, str]]:
    """The log segments ``files`` (a ``PackFiles``) holds: ``(first, last, name)``, in position order."""
    found = []
    for name in files.list_meta(LOG_PREFIX):
        span = parse_log_name(name)
        if span is not None:
            found.append((span[0], span[1], name))
    return sorted(found)


def snapshots(files) -> dict[int, set[str]]:
    """The snapshots ``files`` holds: position → the names of its objects under ``snap/<n>/``
    (``done`` and ``part-NNNNNN``); complete ones have ``done``."""
    found: dict[int, set[str]] = {}
    for name in files.list_meta(SNAP_PREFIX):
        parsed = parse_snap_name(name)
        if parsed is not None:
            found.setdefault(parsed[0], set()).add(parsed[1])
    return found
