"""Request bodies as file-like readers: plain (Content-Length or HTTP chunked) and aws-chunked.

``aws-chunked`` (``Content-Encoding: aws-chunked``, announced by ``x-amz-content-sha256:
STREAMING-...``) frames the payload inside the HTTP body::

    <hex size>[;chunk-signature=<sig>]\\r\\n<data>\\r\\n ... 0[;chunk-signature=<sig>]\\r\\n
    [<trailer-name>:<value>\\r\\n ... [x-amz-trailer-signature:<sig>\\r\\n]]\\r\\n

:class:`AwsChunkedReader` strips that framing as the body streams, verifies every chunk
signature with a :class:`~cas.auth.sigv4.ChunkSignatureChain` when the upload is signed,
and collects the trailers (``x-amz-checksum-*``) for the handler to check before the
commit. Memory is bounded by one read (never a whole chunk: a chunk's data is hashed as it
passes through). :class:`BodyReader` does the same for a plain body, and notices a body
that ends before its announced length.

Neither is thread-safe: each request owns its reader.
"""

from __future__ import annotations

import hashlib

from cas.auth.sigv4 import ChunkSignatureChain
from cas.errors import (  # noqa: F401 - re-exported where callers expect them
    BadRequest,
    IncompleteBody,
    MalformedChunk,
    MalformedTrailer,
)

_MAX_LINE = 4096  # a chunk header or trailer line
_MAX_CHUNK = 1 << 34  # far above any client's chunk size; refuses absurd sizes early
_MAX_TRAILERS = 16


class BodyReader:
    """The request body as sent (after HTTP de-chunking by the server), length-checked.

    ``expected`` is the announced length (Content-Length), or None for an HTTP chunked
    body that ends when it ends. A body that ends short raises :class:`IncompleteBody`.
    ``readline`` is our own: cheroot's chunked reader loops forever in its readline.
    """

    def __init__(self, raw, expected: int | None):
        self._raw = raw
        self._expected = expected
        self._pending = b""  # read ahead by readline, served first
        self._raw_done = expected == 0
        self.consumed = 0  # bytes taken from the raw stream

    @property
    def finished(self) -> bool:
        return self._raw_done and not self._pending

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = 1 << 20  # bounded: callers read in a loop until b""
        if self._pending:
            data, self._pending = self._pending[:size], self._pending[size:]
            return data
        return self._fill(size)

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readline(self, limit: int) -> bytes:
        """One line including its LF, or at most ``limit`` bytes, or what is left at EOF."""
        while True:
            end = self._pending.find(b"\n", 0, limit)
            if end >= 0:
                line, self._pending = self._pending[: end + 1], self._pending[end + 1 :]
                return line
            if len(self._pending) >= limit:
                line, self._pending = self._pending[:limit], self._pending[limit:]
                return line
            data = self._fill(8192)
            if not data:
                line, self._pending = self._pending, b""
                return line
            self._pending += data

    def drain(self, limit: int) -> bool:
        """Read and discard what is left, up to ``limit`` bytes; True if the body ended."""
        self._pending = b""
        read = 0
        try:
            while not self._raw_done and read < limit:
                read += len(self._fill(min(1 << 20, limit - read)))
        except BadRequest:
            return False
        return self._raw_done

    def _fill(self, size: int) -> bytes:
        if self._raw_done:
            return b""
        if self._expected is not None:
            size = min(size, self._expected - self.consumed)
        try:
            data = self._raw.read(size)
        except (OSError, ValueError) as exc:  # connection dropped / bad HTTP chunking
            self._raw_done = True
            raise IncompleteBody(f"The request body could not be read: {exc}") from exc
        self.consumed += len(data)
        if not data:
            self._raw_done = True
            if self._expected is not None and self.consumed < self._expected:
                raise IncompleteBody(
                    f"You did not provide the number of bytes specified by the Content-Length HTTP header "
                    f"({self.consumed} of {self._expected})."
                )
        elif self._expected is not None and self.consumed >= self._expected:
            self._raw_done = True
        return data


class AwsChunkedReader:
    """Decodes an aws-chunked body as a file-like object.

    ``chain`` verifies chunk (and trailer) signatures when the upload is signed.
    ``trailer_names`` are the names announced in ``x-amz-trailer`` (lower-case); every
    one of them must arrive, and no other. ``decoded_length`` is
    ``x-amz-decoded-content-length`` when given: the payload must have exactly that size.
    After EOF, :attr:`trailers` maps trailer names to values.
    """

    def __init__(
        self,
        raw: BodyReader,
        *,
        chain: ChunkSignatureChain | None = None,
        trailer_names: frozenset[str] = frozenset(),
        decoded_length: int | None = None,
    ):
        self._raw = raw
        self._chain = chain
        self._trailer_names = trailer_names
        self._decoded_length = decoded_length
        self._left = 0  # data bytes left in the current chunk
        self._signature: str | None = None
        self._hash = None
        self._eof = False
        self.decoded = 0
        self.trailers: dict[str, str] = {}

    @property
    def finished(self) -> bool:
        return self._eof

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = 1 << 20
        while not self._eof and self._left == 0:
            self._next_chunk()
        if self._eof or size == 0:
            return b""
        data = self._raw.read(min(size, self._left))
        if not data:
            raise IncompleteBody("The aws-chunked body ended inside a chunk.")
        self._left -= len(data)
        self.decoded += len(data)
        if self._hash is not None:
            self._hash.update(data)
        if self._left == 0:
            self._end_chunk()
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def drain(self, limit: int) -> bool:
        return self._raw.drain(limit)

    # framing

    def _line(self) -> bytes:
        line = self._raw.readline(_MAX_LINE)
        if not line.endswith(b"\r\n"):
            if not line:
                raise IncompleteBody("The aws-chunked body ended before its final chunk.")
            raise MalformedChunk("An aws-chunked line is too long or not terminated by CRLF.")
        return line[:-2]

    def _next_chunk(self) -> None:
        header = self._line()
        size_text, _, extension = header.partition(b";")
        try:
            size = int(size_text.strip(), 16)
        except ValueError:
            raise MalformedChunk(f"Invalid aws-chunked chunk size {size_text[:32]!r}.") from None
        if size < 0 or size > _MAX_CHUNK:
            raise MalformedChunk("Invalid aws-chunked chunk size.")
        signature = None
        if extension:
            name, _, value = extension.partition(b"=")
            if name.strip() != b"chunk-signature":
                raise MalformedChunk("Unknown aws-chunked chunk extension.")
            signature = value.strip().decode("ascii", "replace")
        if self._chain is not None and signature is None:
            raise MalformedChunk("A signed aws-chunked upload has a chunk without a chunk-signature.")
        if self._decoded_length is not None and self.decoded + size > self._decoded_length:
            raise MalformedChunk("The aws-chunked body is longer than x-amz-decoded-content-length.")
        self._signature = signature
        if size == 0:
            if self._chain is not None:
                self._chain.verify_chunk(signature, hashlib.sha256(b"").hexdigest())
            self._read_trailers()
            self._eof = True
            return
        self._left = size
        self._hash = hashlib.sha256() if self._chain is not None else None

    def _end_chunk(self) -> None:
        crlf = self._raw.read(2)
        if len(crlf) == 1:
            crlf += self._raw.read(1)
        if crlf != b"\r\n":
            raise MalformedChunk("An aws-chunked chunk is not followed by CRLF.")
        if self._chain is not None:
            self._chain.verify_chunk(self._signature, self._hash.hexdigest())
        self._hash = None

    def _read_trailers(self) -> None:
        trailers: list[tuple[str, str]] = []
        signature = None
        while True:
            try:
                line = self._line()
            except IncompleteBody:
                # Some clients end the body right after the last trailer line.
                break
            if not line:
                break
            if len(trailers) >= _MAX_TRAILERS:
                raise MalformedTrailer()
            name, sep, value = line.decode("utf-8", "replace").partition(":")
            if not sep:
                raise MalformedTrailer()
            name = name.strip().lower()
            if name == "x-amz-trailer-signature":
                signature = value.strip()
            else:
                trailers.append((name, value.strip()))
        names = {name for name, _ in trailers}
        if names != set(self._trailer_names) or len(names) != len(trailers):
            raise MalformedTrailer()
        if self._chain is not None and self._trailer_names:
            if signature is None:
                raise MalformedTrailer("The trailer signature is missing.")
            self._chain.verify_trailer(signature, trailers)
        if self._raw.read(1):
            raise MalformedChunk("The aws-chunked body has data after its final chunk.")
        if self._decoded_length is not None and self.decoded != self._decoded_length:
            raise IncompleteBody(
                f"The aws-chunked body has {self.decoded} bytes; x-amz-decoded-content-length says {self._decoded_length}."
            )
        self.trailers = dict(trailers)
