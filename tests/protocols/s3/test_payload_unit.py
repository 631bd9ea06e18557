"""aws-chunked decoding and S3 checksums, checked against botocore's own encoder and hashers."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import zlib

import pytest
from botocore import httpchecksum

from cas.auth import sigv4
from cas.errors import BadDigest, IncompleteBody
from cas.protocols.s3 import checksum
from cas.protocols.s3.chunked import AwsChunkedReader, BodyReader, MalformedChunk, MalformedTrailer
from tests.fixtures.s3api import SignedRequest, signed_chunked_body, signing_key

pytestmark = pytest.mark.unit


def read_all(reader, size=7777) -> bytes:
    out = bytearray()
    for _ in range(1_000_000):
        data = reader.read(size)
        if not data:
            return bytes(out)
        out += data
    raise AssertionError("reader did not end")


@pytest.mark.parametrize("algorithm, cls", [
    ("crc32", httpchecksum.Crc32Checksum),
    ("crc32c", httpchecksum.CrtCrc32cChecksum),
    ("crc64nvme", httpchecksum.CrtCrc64NvmeChecksum),
    ("sha1", httpchecksum.Sha1Checksum),
    ("sha256", httpchecksum.Sha256Checksum),
])
def test_streaming_hashers_match_botocore(algorithm, cls):
    data = os.urandom(300_000)
    ours = checksum.new_hasher(algorithm)
    for i in range(0, len(data), 4096):
        ours.update(memoryview(data)[i:i + 4096])
    theirs = cls()
    theirs.update(data)
    assert ours.b64digest() == theirs.b64digest()


def test_crc32_matches_zlib_over_any_pieces():
    # CRC32 comes from zlib-ng: the same CRC as zlib's, whatever the pieces and buffer types
    data = os.urandom(3 << 20)
    for sizes in ([len(data)], [0, 1, 5119, 5120, 5121, 65536, 1 << 20], [7] * 100):
        ours, pos = checksum.new_hasher("crc32"), 0
        for n in sizes:
            piece = data[pos:pos + n]
            ours.update(piece if n % 3 else memoryview(bytearray(piece)))
            pos += n
        assert ours.digest() == zlib.crc32(data[:pos]).to_bytes(4, "big")


def test_known_check_values():
    for algorithm, expected in [("crc32", 0xCBF43926), ("crc32c", 0xE3069283), ("crc64nvme", 0xAE8B14860A799888)]:
        h = checksum.new_hasher(algorithm)
        h.update(b"123456789")
        assert int.from_bytes(h.digest(), "big") == expected


def test_combine_and_composite():
    parts = [os.urandom(n) for n in (5000, 1, 70000)]
    for algorithm in ("crc32", "crc32c", "crc64nvme"):
        sums = []
        for p in parts:
            h = checksum.new_hasher(algorithm)
            h.update(p)
            sums.append((h.b64digest(), len(p)))
        whole = checksum.new_hasher(algorithm)
        whole.update(b"".join(parts))
        assert checksum.combine(algorithm, sums) == whole.b64digest()
    crc = [base64.b64encode(zlib.crc32(p).to_bytes(4, "big")).decode() for p in parts]
    raw = b"".join(zlib.crc32(p).to_bytes(4, "big") for p in parts)
    assert checksum.composite("crc32", crc) == base64.b64encode(zlib.crc32(raw).to_bytes(4, "big")).decode() + "-3"


def test_requested_checksum_headers_are_validated():
    assert checksum.requested_checksums({"x-amz-checksum-crc32": "AAAAAA==", "x-amz-checksum-mode": "ENABLED"}) == {"crc32": "AAAAAA=="}
    with pytest.raises(checksum.InvalidDigest):
        checksum.requested_checksums({"x-amz-checksum-crc32": "not base64!"})
    with pytest.raises(checksum.InvalidDigest):
        checksum.requested_checksums({"x-amz-checksum-crc32": "AAAAAAAA"})  # 6 bytes
    with pytest.raises(checksum.InvalidDigest):
        checksum.requested_checksums({"x-amz-checksum-md4": "AAAAAA=="})


def botocore_chunked(data: bytes, chunk_size: int = 65536) -> bytes:
    wrapper = httpchecksum.AwsChunkedWrapper(io.BytesIO(data), checksum_cls=httpchecksum.Crc32Checksum,
                                             checksum_name="x-amz-checksum-crc32", chunk_size=chunk_size)
    return b"".join(wrapper)


@pytest.mark.parametrize("size", [0, 1, 65535, 65536, 200_001])
def test_unsigned_trailer_body_from_botocore(size):
    data = os.urandom(size)
    encoded = botocore_chunked(data)
    reader = AwsChunkedReader(BodyReader(io.BytesIO(encoded), len(encoded)),
                              trailer_names=frozenset({"x-amz-checksum-crc32"}), decoded_length=size)
    assert read_all(reader) == data
    assert reader.trailers["x-amz-checksum-crc32"] == base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def test_chunked_http_body_without_length():
    data = os.urandom(100_000)
    encoded = botocore_chunked(data, 4096)
    reader = AwsChunkedReader(BodyReader(io.BytesIO(encoded), None), trailer_names=frozenset({"x-amz-checksum-crc32"}))
    assert read_all(reader, 1000) == data


def test_truncated_and_malformed_bodies():
    data = os.urandom(10_000)
    encoded = botocore_chunked(data, 4096)
    names = frozenset({"x-amz-checksum-crc32"})
    with pytest.raises(IncompleteBody):
        read_all(AwsChunkedReader(BodyReader(io.BytesIO(encoded[:5000]), None), trailer_names=names))
    with pytest.raises(IncompleteBody):  # the announced Content-Length is longer than what came
        read_all(AwsChunkedReader(BodyReader(io.BytesIO(encoded), len(encoded) + 10), trailer_names=names))
    with pytest.raises(MalformedChunk):
        read_all(AwsChunkedReader(BodyReader(io.BytesIO(b"zz\r\n" + encoded), None), trailer_names=names))
    with pytest.raises(MalformedTrailer):  # trailer announced but a different one sent
        read_all(AwsChunkedReader(BodyReader(io.BytesIO(encoded), None), trailer_names=frozenset({"x-amz-checksum-sha1"})))
    with pytest.raises(MalformedChunk):  # more than x-amz-decoded-content-length
        read_all(AwsChunkedReader(BodyReader(io.BytesIO(encoded), None), trailer_names=names, decoded_length=100))


def _signed(data: bytes, trailers=None):
    key = signing_key("secret-secret", "20300102")
    req = SignedRequest("PUT", "/b/k", "", {}, "ab" * 32, key, "20300102T000000Z", "20300102/us-east-1/s3/aws4_request")
    chain = sigv4.ChunkSignatureChain(key, req.amz_date, req.scope, req.signature)
    return signed_chunked_body(req, data, 8192, trailers), chain


def test_signed_chunks_verify_and_tampering_is_caught():
    data = os.urandom(50_000)
    body, chain = _signed(data)
    assert read_all(AwsChunkedReader(BodyReader(io.BytesIO(body), len(body)), chain=chain, decoded_length=len(data))) == data
    # flip one payload byte: the chunk's signature no longer matches
    body, chain = _signed(data)
    pos = body.index(b"\r\n") + 2 + 100
    tampered = body[:pos] + bytes([body[pos] ^ 1]) + body[pos + 1:]
    with pytest.raises(sigv4.SignatureMismatch):
        read_all(AwsChunkedReader(BodyReader(io.BytesIO(tampered), len(tampered)), chain=chain))
    # a chunk signature off by one hex digit
    body, chain = _signed(data)
    pos = body.index(b"chunk-signature=") + len(b"chunk-signature=")
    digit = b"1" if body[pos:pos + 1] != b"1" else b"2"
    tampered = body[:pos] + digit + body[pos + 1:]
    with pytest.raises(sigv4.SignatureMismatch):
        read_all(AwsChunkedReader(BodyReader(io.BytesIO(tampered), len(tampered)), chain=chain))


def test_signed_trailer():
    data = os.urandom(20_000)
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    body, chain = _signed(data, [("x-amz-checksum-crc32", crc)])
    reader = AwsChunkedReader(BodyReader(io.BytesIO(body), len(body)), chain=chain,
                              trailer_names=frozenset({"x-amz-checksum-crc32"}))
    assert read_all(reader) == data and reader.trailers == {"x-amz-checksum-crc32": crc}
    body, chain = _signed(data, [("x-amz-checksum-crc32", crc)])
    body = body.replace(crc.encode(), b"AAAAAA==")  # trailer changed after signing
    with pytest.raises(sigv4.SignatureMismatch):
        read_all(AwsChunkedReader(BodyReader(io.BytesIO(body), len(body)), chain=chain,
                                  trailer_names=frozenset({"x-amz-checksum-crc32"})))


def test_body_reader_readline_and_short_body():
    reader = BodyReader(io.BytesIO(b"line one\r\nrest"), 14)
    assert reader.readline(100) == b"line one\r\n"
    assert reader.read(100) == b"rest"
    with pytest.raises(IncompleteBody):
        read_all(BodyReader(io.BytesIO(b"short"), 10))
    assert hashlib.sha256(b"").hexdigest() == sigv4.EMPTY_SHA256


# -- Payload: which hashers a body gets, and that each promise is still checked


def _payload(body: bytes, headers: dict, payload_hash: str):
    from cas.config import load_settings
    from cas.protocols.s3.payload import Payload
    from cas.protocols.s3.request import S3Request

    environ = {"REQUEST_METHOD": "PUT", "PATH_INFO": "/bkt/key", "HTTP_HOST": "127.0.0.1",
               "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body)}
    environ.update({"HTTP_" + name.upper().replace("-", "_"): value for name, value in headers.items()})
    req = S3Request(environ, None, load_settings("/nonexistent", {}, env={}))
    req.auth = sigv4.Authorization("k", "20260101T000000Z", "20260101/us-east-1/s3/aws4_request", "us-east-1",
                                   "0" * 64, b"k" * 32, payload_hash, False)
    return Payload(req)


def _digests(payload, body: bytes):
    """What the writer hands ``before_commit``: each hasher fed every byte once."""
    from cas.protocols.s3.payload import _Digests

    data = payload.reader.read(len(body) + 1)
    for hasher in payload.hashers.values():
        hasher.update(data)
    return _Digests({name: h.digest() for name, h in payload.hashers.items()})


def test_signed_payload_hash_and_sha256_checksum_share_one_hasher():
    body = os.urandom(5000)
    sha = hashlib.sha256(body)
    other = hashlib.sha256(b"other")
    good = base64.b64encode(sha.digest()).decode()
    payload = _payload(body, {"x-amz-checksum-sha256": good}, sha.hexdigest())
    assert len(payload.hashers) == 1  # one SHA-256 over the body, not two
    assert payload.before_commit(_digests(payload, body)) == {"sha256": good}
    # a wrong checksum with a right signed hash is still BadDigest
    payload = _payload(body, {"x-amz-checksum-sha256": base64.b64encode(other.digest()).decode()}, sha.hexdigest())
    with pytest.raises(BadDigest):
        payload.before_commit(_digests(payload, body))
    # a wrong signed hash is still XAmzContentSHA256Mismatch, whatever the checksum says
    for claimed in (good, base64.b64encode(other.digest()).decode()):
        payload = _payload(body, {"x-amz-checksum-sha256": claimed}, other.hexdigest())
        with pytest.raises(sigv4.PayloadHashMismatch):
            payload.before_commit(_digests(payload, body))


def test_signed_payload_hash_with_another_checksum_gets_both_hashers():
    body = os.urandom(5000)
    sha = hashlib.sha256(body)
    crc = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
    payload = _payload(body, {"x-amz-checksum-crc32": crc}, sha.hexdigest())
    assert len(payload.hashers) == 2
    assert payload.before_commit(_digests(payload, body)) == {"crc32": crc}
    payload = _payload(body, {"x-amz-checksum-crc32": crc}, hashlib.sha256(b"other").hexdigest())
    with pytest.raises(sigv4.PayloadHashMismatch):
        payload.before_commit(_digests(payload, body))
