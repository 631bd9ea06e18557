"""Block encoding: an 8-byte header, then the payload (zstd or raw).

Header: b"CB", format version, codec (0 raw, 1 zstd), raw length (u32 BE).
zstd is kept only when it saves at least 3%. ``decode`` decompresses and
re-hashes, so a block that does not match its id raises ``IntegrityError``
instead of returning wrong bytes. Thread-safe (one compressor per thread).
"""

from __future__ import annotations

import struct
import threading
from dataclasses import dataclass

import zstandard

from .errors import ConfigError, IntegrityError
from .ids import block_id, short

MAGIC = b"CB"
VERSION = 1
RAW, ZSTD = 0, 1
_HEADER = struct.Struct(">2sBBI")
HEADER_LEN = _HEADER.size


@dataclass(frozen=True)
class CodecParams:
    """Compression chosen at store creation: ``zstd:LEVEL`` or ``none``."""

    compression: str = "zstd:3"

    def validate(self) -> None:
        if self.compression == "none":
            return
        name, _, level = self.compression.partition(":")
        if name != "zstd" or not level.lstrip("-").isdigit() or not -7 <= int(level) <= 22:
            raise ConfigError(f"invalid compression {self.compression!r}: use zstd:LEVEL (1-22) or none")

    @property
    def level(self) -> int | None:
        return None if self.compression == "none" else int(self.compression.split(":")[1])


class Codec:
    """Encodes chunks to stored blocks and back."""

    def __init__(self, params: CodecParams = CodecParams()):
        params.validate()
        self.params = params
        self._local = threading.local()

    def _compressor(self) -> zstandard.ZstdCompressor:
        c = getattr(self._local, "c", None)
        if c is None:
            c = self._local.c = zstandard.ZstdCompressor(level=self.params.level)
        return c

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        d = getattr(self._local, "d", None)
        if d is None:
            d = self._local.d = zstandard.ZstdDecompressor()
        return d

    def encode(self, chunk: bytes | memoryview) -> bytes:
        n = len(chunk)
        if self.params.level is not None and n >= 64:
            packed = self._compressor().compress(chunk)
            if len(packed) <= n - n // 32:
                return _HEADER.pack(MAGIC, VERSION, ZSTD, n) + packed
        return _HEADER.pack(MAGIC, VERSION, RAW, n) + bytes(chunk)

    def decode(self, bid: bytes, stored: bytes) -> bytes:
        """Return the chunk of ``bid``; ``IntegrityError`` when it is damaged."""
        if len(stored) < HEADER_LEN:
            raise IntegrityError(f"block {short(bid)} is truncated ({len(stored)} bytes)")
        magic, version, codec, raw_len = _HEADER.unpack_from(stored)
        if magic != MAGIC or version != VERSION:
            raise IntegrityError(f"block {short(bid)} has a bad header")
        payload = memoryview(stored)[HEADER_LEN:]
        if codec == RAW:
            data = bytes(payload)
        elif codec == ZSTD:
            try:
                data = self._decompressor().decompress(payload, max_output_size=raw_len)
            except zstandard.ZstdError as exc:
                raise IntegrityError(f"block {short(bid)} does not decompress: {exc}") from exc
        else:
            raise IntegrityError(f"block {short(bid)} has unknown codec {codec}")
        if len(data) != raw_len or block_id(data) != bid:
            raise IntegrityError(f"block {short(bid)} does not match its id")
        return data
