"""An upload body (PutObject, UploadPart): its reader, its hashers, and the checks before commit.

:class:`Payload` decides from the headers and the verified signature how the body is
framed (plain or aws-chunked, with or without a Content-Length), which checksum the object
gets (the one the client sent in a header or announced as a trailer, else the algorithm it
asked for, else CRC64NVME as S3 does by default), and what the body is held to:

- ``x-amz-content-sha256`` with a hex SHA-256: the body must hash to it
  (``XAmzContentSHA256Mismatch``);
- chunk and trailer signatures (``STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]``), checked
  by the reader as the chunks pass;
- ``x-amz-checksum-*`` in a header or trailer: ``BadDigest`` on a mismatch;
- ``Content-MD5``: ``BadDigest`` on a mismatch (checked by the writer);
- the announced length (``Content-Length`` / ``x-amz-decoded-content-length``): ``IncompleteBody``.

All of these run in :meth:`before_commit`, which the Store calls after the body ended and
before anything is bound to a name, so a body that fails any of them stores nothing.

Each digest is computed once per body, by the writer as the body streams: one MD5 serves
the ETag and Content-MD5, one SHA-256 serves a signed payload hash and a SHA256 checksum.
"""

from __future__ import annotations

import hmac

from cas.auth import sigv4
from cas.errors import BadDigest
from cas.protocols.s3 import checksum
from cas.protocols.s3.chunked import AwsChunkedReader, BodyReader
from cas.protocols.s3.error import S3Error, invalid_argument
from cas.protocols.s3.request import S3Request

DEFAULT_ALGORITHM = "crc64nvme"
_SHA256_KEY = "\0payload-sha256"  # our own hasher's name in Store.put(hashers=...)


class Payload:
    """How to read, hash and verify one upload body (see the module docstring)."""

    def __init__(self, req: S3Request, *, default_algorithm: str = DEFAULT_ALGORITHM):
        headers = req.headers
        auth = req.auth
        self._auth = auth
        environ = req.environ
        chunked_transfer = bool(environ.get("wsgi.input_terminated")) or "chunked" in headers.get(
            "transfer-encoding", ""
        ).lower()
        content_length = _int_header(headers, "content-length")
        if content_length is None and not chunked_transfer:
            raise S3Error("MissingContentLength", "You must provide the Content-Length HTTP header.", 411)
        raw = BodyReader(environ["wsgi.input"], None if chunked_transfer else content_length)
        req.body_reader = raw

        self.size: int | None
        streaming = auth is not None and auth.streaming
        self.trailer_names: frozenset[str] = frozenset()
        if streaming:
            self.trailer_names = frozenset(
                n.strip().lower() for n in headers.get("x-amz-trailer", "").split(",") if n.strip()
            )
            if auth.has_trailer and not self.trailer_names:
                raise S3Error("InvalidRequest", "A trailing-checksum upload must announce x-amz-trailer.", 400)
            for name in self.trailer_names:
                if not (name.startswith(checksum.HEADER_PREFIX) and checksum.is_algorithm(name[len(checksum.HEADER_PREFIX):])):
                    raise S3Error("InvalidRequest", f"Unsupported trailer {name}.", 400)
            if len(self.trailer_names) > 1:
                raise S3Error("InvalidRequest", "Expecting a single x-amz-checksum- trailer.", 400)
            self.size = _int_header(headers, "x-amz-decoded-content-length")
            if self.size is None and auth.signed_chunks:
                raise S3Error(
                    "MissingContentLength", "You must provide the x-amz-decoded-content-length header.", 411
                )
            self.reader = AwsChunkedReader(
                raw,
                chain=auth.chunk_chain() if auth.signed_chunks else None,
                trailer_names=self.trailer_names,
                decoded_length=self.size,
            )
        else:
            self.size = content_length
            self.reader = raw

        # Which checksum: a header value, a trailer, the algorithm asked for, or the default.
        self.header_checksums = checksum.requested_checksums(headers)
        trailer_algorithms = [n[len(checksum.HEADER_PREFIX):] for n in self.trailer_names]
        asked = (headers.get("x-amz-checksum-algorithm") or headers.get("x-amz-sdk-checksum-algorithm") or "").lower()
        if asked and not checksum.is_algorithm(asked):
            raise invalid_argument(f"Invalid checksum algorithm {asked!r}.", "x-amz-checksum-algorithm", asked)
        if self.header_checksums and trailer_algorithms:
            raise S3Error("InvalidRequest", "Expecting a single checksum: in a header or in a trailer.", 400)
        if self.header_checksums:
            self.algorithm = next(iter(self.header_checksums))
        elif trailer_algorithms:
            self.algorithm = trailer_algorithms[0]
        else:
            self.algorithm = asked or default_algorithm
        if asked and asked != self.algorithm:
            raise S3Error("InvalidRequest", "The checksum algorithm does not match the checksum sent.", 400)

        self.hashers = {self.algorithm: checksum.new_hasher(self.algorithm)}
        self._sha256 = auth.payload_sha256 if auth is not None else None
        # A signed payload hash and a SHA256 checksum are the same digest: hash the body once.
        self._sha256_key = "sha256" if self.algorithm == "sha256" else _SHA256_KEY
        if self._sha256 is not None and self._sha256_key not in self.hashers:
            self.hashers[self._sha256_key] = checksum.Sha256Hasher()
        md5 = headers.get("content-md5")
        self.expected_md5 = bytes.fromhex(checksum.decode_content_md5(md5)) if md5 is not None else None

    def before_commit(self, result) -> dict[str, str]:
        """Verify everything the client promised; the checksums to keep with the object."""
        digests = result.digests
        if self._sha256 is not None and not hmac.compare_digest(digests[self._sha256_key].hex(), self._sha256):
            raise sigv4.PayloadHashMismatch()
        ours = checksum.b64(digests[self.algorithm])
        claimed = self.header_checksums.get(self.algorithm)
        if self.trailer_names:
            claimed = self.reader.trailers.get(checksum.HEADER_PREFIX + self.algorithm)
            if claimed is None:
                raise S3Error("MalformedTrailerError", "The announced checksum trailer is missing.", 400)
            checksum.decode_digest(self.algorithm, claimed)
        if claimed is not None and checksum.decode_digest(self.algorithm, claimed) != digests[self.algorithm]:
            raise BadDigest(f"The {self.algorithm.upper()} you specified did not match the calculated checksum.")
        return {self.algorithm: ours}

    def response_headers(self, checksums) -> list[tuple[str, str]]:
        return [(checksum.HEADER_PREFIX + alg, value) for alg, value in checksums.items()]


def _int_header(headers, name: str) -> int | None:
    value = headers.get(name)
    if value is None or value == "":
        return None
    try:
        number = int(value)
    except ValueError:
        raise invalid_argument(f"{name} must be a non-negative integer.", name, value) from None
    if number < 0:
        raise invalid_argument(f"{name} must be a non-negative integer.", name, value)
    return number


def read_small_body(req: S3Request, limit: int, *, require_integrity: bool = False) -> bytes:
    """A small request document (XML), whole, held to the same promises as an upload.

    ``require_integrity``: S3 demands Content-MD5 or an ``x-amz-checksum-*`` for some
    operations (DeleteObjects).
    """
    headers = req.headers
    length = _int_header(headers, "content-length")
    if length is not None and length > limit and not (req.auth and req.auth.streaming):
        raise S3Error("MaxMessageLengthExceeded", f"Your request was too big (more than {limit} bytes).", 400)
    if length is None and not req.environ.get("wsgi.input_terminated"):
        length = 0
    payload = Payload(req) if (length or req.environ.get("wsgi.input_terminated")) else None
    if payload is None:
        body = b""
        result_digests = {}
    else:
        parts = []
        total = 0
        hashers = payload.hashers
        while True:
            data = payload.reader.read(65536)
            if not data:
                break
            total += len(data)
            if total > limit:
                raise S3Error("MaxMessageLengthExceeded", f"Your request was too big (more than {limit} bytes).", 400)
            for hasher in hashers.values():
                hasher.update(data)
            parts.append(data)
        body = b"".join(parts)
        result_digests = {name: h.digest() for name, h in hashers.items()}
    if require_integrity and "content-md5" not in headers and not (payload and (payload.header_checksums or payload.trailer_names)):
        raise S3Error("InvalidRequest", "Missing required header for this request: Content-MD5", 400)
    if payload is not None:
        import hashlib

        if payload.expected_md5 is not None and hashlib.md5(body).digest() != payload.expected_md5:
            raise BadDigest("The Content-MD5 you specified did not match what we received.")
        payload.before_commit(_Digests(result_digests))
    elif req.auth is not None and req.auth.payload_sha256 not in (None, sigv4.EMPTY_SHA256):
        raise sigv4.PayloadHashMismatch()
    return body


class _Digests:
    """The part of the writer's result that ``before_commit`` reads."""

    def __init__(self, digests):
        self.digests = digests
