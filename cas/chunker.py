"""Content-defined chunking (FastCDC 2020 via pyfastcdc, pinned in pyproject).

Cut points depend only on the bytes and on ``ChunkerParams``; the params are fixed
when a store is created (recorded in the index) because other params cut
elsewhere and silently destroy dedup. Chunks are yielded as memoryviews into a
reusable buffer: a consumer must copy or finish with a chunk before asking for
the next one.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pyfastcdc

from .errors import ConfigError

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class ChunkerParams:
    """FastCDC parameters; defaults: average 64 KiB, min 16 KiB, max 256 KiB."""

    avg: int = 64 * KiB
    min: int = 16 * KiB
    max: int = 256 * KiB
    algorithm: str = f"fastcdc2020/pyfastcdc-{pyfastcdc.__version__}/nc1"

    @classmethod
    def for_average(cls, avg: int) -> ChunkerParams:
        """Params with the given average and min/max at a quarter and four times it."""
        return cls(avg=avg, min=avg // 4, max=avg * 4)

    def validate(self) -> None:
        if not (256 <= self.avg <= 4 * MiB and 64 <= self.min <= self.avg <= self.max <= 16 * MiB):
            raise ConfigError(f"invalid chunker parameters: min={self.min} avg={self.avg} max={self.max}")

    def to_dict(self) -> dict:
        return {"avg": self.avg, "min": self.min, "max": self.max, "algorithm": self.algorithm}


class _IterReader(io.RawIOBase):
    """A readinto() view over an iterable of byte strings (for bodies given as generators)."""

    def __init__(self, parts: Iterable[bytes]):
        self._it = iter(parts)
        self._buf = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, out) -> int:  # type: ignore[override]
        while not self._buf:
            part = next(self._it, None)
            if part is None:
                return 0
            self._buf = memoryview(part)
        n = min(len(out), len(self._buf))
        out[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n


def as_reader(body) -> io.RawIOBase | io.BufferedIOBase:
    """Adapt bytes, a file-like object or an iterable of bytes to something with readinto()."""
    if isinstance(body, (bytes, bytearray, memoryview)):
        return io.BytesIO(body)
    if hasattr(body, "readinto") or hasattr(body, "read"):
        return body
    return _IterReader(body)


class Chunker:
    """Splits streams into content-defined chunks."""

    def __init__(self, params: ChunkerParams = ChunkerParams()):
        params.validate()
        self.params = params
        self._cdc = pyfastcdc.FastCDC(params.avg, min_size=params.min, max_size=params.max)

    def chunks(self, stream) -> Iterator[memoryview]:
        """Yield successive chunks of ``stream`` (anything ``as_reader`` accepts)."""
        reader = _CountingReader(as_reader(stream))
        for chunk in self._cdc.cut_stream(reader):
            yield chunk.data

    def chunk_buffer(self, buf: bytes | memoryview) -> Iterator[memoryview]:
        """Yield chunks of an in-memory buffer (zero-copy slices)."""
        for chunk in self._cdc.cut_buf(buf):
            yield chunk.data

    def first_cut(self, buf: bytes) -> int:
        """The length of ``buf``'s first chunk: where a stream cuts next when ``buf`` follows one
        of its cuts and holds at least ``max`` bytes or the rest of the stream (the chunker looks
        no further than ``max`` bytes past a cut; ``cas.recut`` relies on this)."""
        for chunk in self._cdc.cut_buf(buf):
            return chunk.length
        return 0


class _CountingReader:
    """Wraps a reader so that pyfastcdc can use readinto() even on read()-only objects."""

    __slots__ = ("_r",)

    def __init__(self, reader):
        self._r = reader

    def readinto(self, out) -> int:
        r = self._r
        if hasattr(r, "readinto"):
            n = r.readinto(out)
            return n or 0
        data = r.read(len(out))
        if not data:
            return 0
        out[: len(data)] = data
        return len(data)
