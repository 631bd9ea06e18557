"""Fuzz target: aws-chunked body decoding, trailers included (``cas.protocols.s3.chunked``).

Input: one flag byte, then the raw body. Flags: bit 0 signed chunks (a real
:class:`~cas.auth.sigv4.ChunkSignatureChain`; the seeds carry valid signatures), bit 1
a trailer ``x-amz-checksum-crc32`` is announced, bit 2 ``x-amz-decoded-content-length`` is
the next two bytes (big-endian), bit 3 the body comes HTTP-chunked (no Content-Length),
bit 4 read in 7-byte pieces instead of 64 KiB ones.

Property: reading to EOF returns exactly the decoded payload's bytes or raises a
:class:`~cas.errors.CasError` (MalformedChunk, MalformedTrailer, IncompleteBody,
SignatureMismatch ...); never another exception, never a hang (reads are bounded by the
body's length), and only announced trailers come out.
"""

from __future__ import annotations

import hashlib
import io
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cas.auth import sigv4
from cas.errors import CasError
from cas.protocols.s3.chunked import AwsChunkedReader, BodyReader

SIGNED, TRAILER, DECODED_LENGTH, HTTP_CHUNKED, SMALL_READS = 1, 2, 4, 8, 16
TRAILER_NAME = "x-amz-checksum-crc32"
KEY = sigv4.signing_key("fuzzsecret", "20231114", "us-east-1")
DATE, SCOPE, SEED_SIGNATURE = "20231114T221320Z", "20231114/us-east-1/s3/aws4_request", "0" * 64


def _chain() -> sigv4.ChunkSignatureChain:
    return sigv4.ChunkSignatureChain(KEY, DATE, SCOPE, SEED_SIGNATURE)


def signed_body(chunks: list[bytes], trailers: list[tuple[str, str]] = ()) -> bytes:
    """An aws-chunked body with valid chunk (and trailer) signatures, as a client sends it."""
    previous, out = SEED_SIGNATURE, []
    for data in [*chunks, b""]:
        to_sign = (f"AWS4-HMAC-SHA256-PAYLOAD\n{DATE}\n{SCOPE}\n{previous}\n{sigv4.EMPTY_SHA256}\n"
                   f"{hashlib.sha256(data).hexdigest()}")
        previous = sigv4._hmac_hex(KEY, to_sign)
        out.append(b"%x;chunk-signature=%s\r\n" % (len(data), previous.encode()) + data + (b"\r\n" if data else b""))
    if trailers:
        canonical = "".join(f"{n}:{v}\n" for n, v in trailers)
        to_sign = f"AWS4-HMAC-SHA256-TRAILER\n{DATE}\n{SCOPE}\n{previous}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        out += [f"{n}:{v}\r\n".encode() for n, v in trailers]
        out.append(b"x-amz-trailer-signature:%s\r\n" % sigv4._hmac_hex(KEY, to_sign).encode())
    out.append(b"\r\n")
    return b"".join(out)


SEEDS = [
    bytes([0]) + b"5\r\nhello\r\n0\r\n\r\n",
    bytes([TRAILER]) + b"3\r\nabc\r\n0\r\nx-amz-checksum-crc32:NSRBwg==\r\n\r\n",
    bytes([TRAILER | HTTP_CHUNKED | SMALL_READS]) + b"3\r\nabc\r\n0\r\nx-amz-checksum-crc32:NSRBwg==\r\n",
    bytes([DECODED_LENGTH]) + b"\x00\x05" + b"5\r\nhello\r\n0\r\n\r\n",
    bytes([SIGNED]) + signed_body([b"hello", b" world"]),
    bytes([SIGNED | TRAILER | SMALL_READS]) + signed_body([b"abc"], [(TRAILER_NAME, "NSRBwg==")]),
    bytes([0]) + b"ffffffffff\r\nx\r\n",
    bytes([0]) + b"1;chunk-signature\r\nx\r\n0\r\n\r\n",
]


def one_input(data: bytes) -> None:
    if not data:
        return
    flags, body = data[0], data[1:]
    decoded_length = None
    if flags & DECODED_LENGTH:
        decoded_length, body = int.from_bytes(body[:2], "big"), body[2:]
    raw = BodyReader(io.BytesIO(body), None if flags & HTTP_CHUNKED else len(body))
    reader = AwsChunkedReader(
        raw,
        chain=_chain() if flags & SIGNED else None,
        trailer_names=frozenset([TRAILER_NAME]) if flags & TRAILER else frozenset(),
        decoded_length=decoded_length,
    )
    size = 7 if flags & SMALL_READS else 1 << 16
    out = []
    try:
        for _ in range(len(body) + 2):  # every read but the last returns at least one byte of the body
            piece = reader.read(size)
            if not piece:
                break
            assert len(piece) <= size
            out.append(piece)
        else:
            raise AssertionError("the reader did not reach EOF within the body's length")
    except CasError:
        return
    assert reader.finished
    payload = b"".join(out)
    assert len(payload) <= len(body) and reader.decoded == len(payload)
    if decoded_length is not None:
        assert len(payload) == decoded_length
    assert set(reader.trailers) <= ({TRAILER_NAME} if flags & TRAILER else set()), reader.trailers


if __name__ == "__main__":
    from tests.fuzz.harness import main

    main(one_input, SEEDS, "chunked")
