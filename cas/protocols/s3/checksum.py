"""S3 additional checksums as streaming hashers, and the digests S3 talks about.

S3 lets a client attach one whole-body checksum to an upload
(``x-amz-checksum-<algorithm>``, in a header or in an aws-chunked trailer):
CRC32, CRC32C, CRC64NVME, SHA1 or SHA256, each sent base64-encoded. Every
hasher here has ``update(bytes)``, ``digest() -> bytes`` and ``b64digest()``,
so the write path can feed it every byte of a body as it streams through
(``Store.put(hashers=...)``) and the handler compares before the commit.

CRC32 comes from ``zlib-ng`` (the same CRC as ``zlib``'s, carry-less-multiply
accelerated: about 8x faster than the system zlib and awscrt here, and CRC32 is
what boto3 sends by default), SHA1/SHA256 from ``hashlib``; CRC32C and CRC64NVME
from ``awscrt`` (the AWS common runtime, hardware-accelerated, the same code
botocore uses for them), so nothing here is written by hand. The ``combine``
functions give the CRC of a concatenation from the parts' CRCs and lengths:
that is how a multipart upload gets a FULL_OBJECT checksum without reading
its parts again.

Hashers are not thread-safe; each request owns its own.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping

from awscrt import checksums as _crt
from zlib_ng import zlib_ng as _zlib_ng

from cas.errors import (  # noqa: F401 - re-exported where callers expect them
    BadRequest,
    InvalidDigest,
)

#: S3 algorithm names (as in ``x-amz-checksum-algorithm``) -> our lower-case keys.
ALGORITHMS = ("crc32", "crc32c", "crc64nvme", "sha1", "sha256")
HEADER_PREFIX = "x-amz-checksum-"

#: the checksum types S3 reports: one checksum of the whole body, or a
#: checksum of the parts' checksums (multipart, ``<b64>-<N>``).
FULL_OBJECT = "FULL_OBJECT"
COMPOSITE = "COMPOSITE"


class _CrcHasher:
    """A CRC as a hasher: state is the running CRC value."""

    __slots__ = ("_value",)
    _width = 4

    def __init__(self) -> None:
        self._value = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._value = self._fn(data, self._value)

    @staticmethod
    def _fn(data, previous: int) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def digest(self) -> bytes:
        return self._value.to_bytes(self._width, "big")

    def b64digest(self) -> str:
        return base64.b64encode(self.digest()).decode("ascii")


class Crc32Hasher(_CrcHasher):
    __slots__ = ()
    _fn = staticmethod(_zlib_ng.crc32)


class Crc32cHasher(_CrcHasher):
    __slots__ = ()

    @staticmethod
    def _fn(data, previous: int) -> int:
        return _crt.crc32c(data, previous)


class Crc64NvmeHasher(_CrcHasher):
    __slots__ = ()
    _width = 8

    @staticmethod
    def _fn(data, previous: int) -> int:
        return _crt.crc64nvme(data, previous)


class _HashlibHasher:
    __slots__ = ("_h",)
    _name = ""

    def __init__(self) -> None:
        self._h = hashlib.new(self._name)

    def update(self, data) -> None:
        self._h.update(data)

    def digest(self) -> bytes:
        return self._h.digest()

    def b64digest(self) -> str:
        return base64.b64encode(self.digest()).decode("ascii")


class Sha1Hasher(_HashlibHasher):
    __slots__ = ()
    _name = "sha1"


class Sha256Hasher(_HashlibHasher):
    __slots__ = ()
    _name = "sha256"


_HASHERS = {
    "crc32": Crc32Hasher,
    "crc32c": Crc32cHasher,
    "crc64nvme": Crc64NvmeHasher,
    "sha1": Sha1Hasher,
    "sha256": Sha256Hasher,
}
_DIGEST_SIZE = {"crc32": 4, "crc32c": 4, "crc64nvme": 8, "sha1": 20, "sha256": 32}
_COMBINE = {
    "crc32": _crt.combine_crc32,
    "crc32c": _crt.combine_crc32c,
    "crc64nvme": _crt.combine_crc64nvme,
}


def new_hasher(algorithm: str):
    """A fresh streaming hasher for an S3 algorithm name (any case)."""
    try:
        return _HASHERS[algorithm.lower()]()
    except KeyError:
        raise BadRequest(f"Unsupported checksum algorithm {algorithm!r}.") from None


def is_algorithm(name: str) -> bool:
    return name.lower() in _HASHERS


def decode_digest(algorithm: str, value: str) -> bytes:
    """The raw digest of a base64 checksum value; InvalidDigest when malformed."""
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidDigest(f"The {algorithm.upper()} checksum is not valid base64.") from None
    if len(raw) != _DIGEST_SIZE[algorithm.lower()]:
        raise InvalidDigest(f"The {algorithm.upper()} checksum has the wrong length.")
    return raw


def decode_content_md5(value: str) -> str:
    """Content-MD5 (base64 of 16 bytes) as lower-case hex; InvalidDigest when malformed."""
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise InvalidDigest("The Content-MD5 you specified is not valid.") from None
    if len(raw) != 16:
        raise InvalidDigest("The Content-MD5 you specified is not valid.")
    return raw.hex()


def requested_checksums(headers: Mapping[str, str]) -> dict[str, str]:
    """``x-amz-checksum-<alg>`` request headers: {algorithm: base64 value}.

    ``x-amz-checksum-algorithm`` / ``-type`` / ``-mode`` are not values and are
    skipped. An unknown algorithm suffix is refused rather than ignored, so a
    client never believes a checksum was verified when it was not.
    """
    found = {}
    for name, value in headers.items():
        if not name.startswith(HEADER_PREFIX):
            continue
        algorithm = name[len(HEADER_PREFIX):]
        if algorithm in ("algorithm", "type", "mode"):
            continue
        if algorithm not in _HASHERS:
            raise InvalidDigest(f"Unsupported checksum header {name}.")
        decode_digest(algorithm, value)
        found[algorithm] = value.strip()
    if len(found) > 1:
        raise InvalidDigest("Expecting a single x-amz-checksum- header.")
    return found


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def composite(algorithm: str, part_checksums: list[str]) -> str:
    """S3's COMPOSITE multipart checksum: the checksum of the parts' raw checksums, ``-N``."""
    hasher = new_hasher(algorithm)
    for value in part_checksums:
        hasher.update(decode_digest(algorithm, value))
    return f"{hasher.b64digest()}-{len(part_checksums)}"


def combine(algorithm: str, parts: list[tuple[str, int]]) -> str:
    """FULL_OBJECT CRC of a concatenation from ``[(b64 crc, length), ...]`` of its parts."""
    fn = _COMBINE.get(algorithm.lower())
    if fn is None:
        raise BadRequest(f"{algorithm.upper()} cannot be combined into a full-object checksum.")
    width = _DIGEST_SIZE[algorithm.lower()]
    value = 0
    first = True
    for b64value, length in parts:
        crc = int.from_bytes(decode_digest(algorithm, b64value), "big")
        value = crc if first else fn(value, crc, length)
        first = False
    return b64(value.to_bytes(width, "big"))


def supports_full_object(algorithm: str) -> bool:
    return algorithm.lower() in _COMBINE
