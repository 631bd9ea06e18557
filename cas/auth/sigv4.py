"""AWS Signature Version 4 verification (the S3 flavour).

Three places carry a signature, and this module checks each:

- the ``Authorization`` header (``AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...``);
- a presigned URL's query (``X-Amz-Algorithm``, ``X-Amz-Credential``, ``X-Amz-Date``,
  ``X-Amz-Expires``, ``X-Amz-SignedHeaders``, ``X-Amz-Signature``);
- the body of a ``STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]`` upload, where every
  aws-chunked chunk, and the trailer, is signed in a chain seeded by the request's
  signature (:class:`ChunkSignatureChain`).

Legacy Signature Version 2 (``Authorization: AWS key:sig`` and ``?AWSAccessKeyId=&Signature=&Expires=``)
is verified too (``sigv2.py``), because boto3's ``generate_presigned_url`` still makes V2 URLs
by default and s3cmd's ``signurl`` does as well. V2 never signs the payload (Content-MD5 at most).

:class:`SigV4Verifier` turns an :class:`HttpRequestView` (what the protocol layer saw on
the wire) into an :class:`Authorization` (who signed, and what they said about the
payload) or raises one of the errors below. It never reads the body: the payload hash
(``x-amz-content-sha256``) is returned for the protocol layer to check while it streams.
A V4 signature must cover every ``x-amz-*`` header but those in :data:`UNSIGNED_AMZ_ALLOWED`
(``HeadersNotSigned`` otherwise); a presigned URL, V4 or V2, lives at most a week.

S3 does not normalise paths, and clients differ in how they percent-encode them, so the
canonical URI is tried in the AWS encoding of the decoded path first and, failing that, as
sent. Secrets are compared in constant time. Signing keys are cached per (user, secret,
date, region) because deriving one costs four HMACs. Thread-safe: the verifier holds only
that cache, whose operations are atomic.
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from email.utils import mktime_tz, parsedate_tz
from urllib.parse import quote, unquote_to_bytes

from cas.errors import (  # noqa: F401 - re-exported where callers expect them
    AccessDenied,
    BadDigest,
    BadRequest,
    HeadersNotSigned,
    InvalidAccessKey,
    InvalidPayloadHash,
    MalformedAuthorization,
    MalformedPresign,
    NotFound,
    PayloadHashMismatch,
    RequestExpired,
    RequestTimeSkewed,
    SignatureMismatch,
    UnsupportedAuthorization,
)

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_PAYLOAD = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_PAYLOAD_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
STREAMING_MODES = (STREAMING_PAYLOAD, STREAMING_PAYLOAD_TRAILER, STREAMING_UNSIGNED_TRAILER)
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

MAX_SKEW_SECONDS = 15 * 60
MAX_PRESIGN_SECONDS = 7 * 24 * 3600
#: x-amz-* headers a SigV4 signature need not list. x-amz-content-sha256 and x-amz-date are
#: bound anyway (the payload line of the canonical request, the date of the string to sign;
#: under query auth the URL's own values win and the headers change nothing), and
#: x-amz-user-agent is only informational. Every other x-amz-* header can change what a
#: request does or stores (x-amz-copy-source, x-amz-meta-*, x-amz-metadata-directive,
#: x-amz-decoded-content-length, ...), so an unsigned one is refused, as S3 does.
UNSIGNED_AMZ_ALLOWED = frozenset({"x-amz-content-sha256", "x-amz-date", "x-amz-user-agent"})
_AMZ_DATE_FORMAT = "%Y%m%dT%H%M%SZ"
_LAST_AMZ_SECOND = 253402300799  # 9999-12-31T23:59:59Z, the last time _AMZ_DATE_FORMAT can spell
_HEX = frozenset("0123456789abcdef")


# -- what the protocol layer hands in, and what it gets back


@dataclass(frozen=True)
class HttpRequestView:
    """A request as SigV4 sees it.

    ``path`` is the path exactly as sent (percent-encoded, no query); ``query`` the
    decoded (name, value) pairs in order; ``headers`` lower-case names to values (a
    repeated header joined with ``,``).
    """

    method: str
    path: str
    query: Sequence[tuple[str, str]]
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Authorization:
    """A verified signature: who signed and what they promised about the payload."""

    access_key: str
    amz_date: str  # yyyymmddThhmmssZ
    scope: str  # yyyymmdd/region/service/aws4_request
    region: str
    signature: str
    signing_key: bytes
    payload_hash: str  # hex SHA-256, UNSIGNED-PAYLOAD or a STREAMING-... mode
    presigned: bool

    @property
    def streaming(self) -> bool:
        return self.payload_hash in STREAMING_MODES

    @property
    def signed_chunks(self) -> bool:
        return self.payload_hash in (STREAMING_PAYLOAD, STREAMING_PAYLOAD_TRAILER)

    @property
    def has_trailer(self) -> bool:
        return self.payload_hash in (STREAMING_PAYLOAD_TRAILER, STREAMING_UNSIGNED_TRAILER)

    @property
    def payload_sha256(self) -> str | None:
        """The hex SHA-256 the body must have, when the client signed one."""
        return self.payload_hash if _is_sha256_hex(self.payload_hash) else None

    def chunk_chain(self) -> ChunkSignatureChain:
        return ChunkSignatureChain(self.signing_key, self.amz_date, self.scope, self.signature)


class ChunkSignatureChain:
    """Verifies the chained signatures of an aws-chunked body, chunk by chunk.

    Each chunk's string to sign names the previous signature (the request's for the
    first chunk), so chunks cannot be dropped, reordered or spliced. Not thread-safe:
    one per request body.
    """

    __slots__ = ("_date", "_key", "_previous", "_scope")

    def __init__(self, signing_key: bytes, amz_date: str, scope: str, seed_signature: str):
        self._key = signing_key
        self._date = amz_date
        self._scope = scope
        self._previous = seed_signature

    def verify_chunk(self, signature: str, data_sha256_hex: str) -> None:
        string_to_sign = (
            f"AWS4-HMAC-SHA256-PAYLOAD\n{self._date}\n{self._scope}\n{self._previous}\n{EMPTY_SHA256}\n{data_sha256_hex}"
        )
        self._check(signature, string_to_sign)

    def verify_trailer(self, signature: str, trailers: Sequence[tuple[str, str]]) -> None:
        canonical = "".join(f"{name}:{value}\n" for name, value in trailers)
        string_to_sign = "\n".join(
            (
                "AWS4-HMAC-SHA256-TRAILER",
                self._date,
                self._scope,
                self._previous,
                hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
            )
        )
        self._check(signature, string_to_sign)

    def _check(self, signature: str, string_to_sign: str) -> None:
        expected = _hmac_hex(self._key, string_to_sign)
        # as bytes: compare_digest refuses str with non-ASCII characters (TypeError, a 500)
        if not hmac.compare_digest(expected.encode(), signature.strip().lower().encode("utf-8", "replace")):
            raise SignatureMismatch()
        self._previous = expected


# -- the verifier


class SigV4Verifier:
    """Checks SigV4 header and query signatures against the users' secrets.

    ``secret_of(access_key)`` returns the secret, or None / raises ``NotFound`` for an
    unknown key. ``clock()`` gives unix time (injectable for tests).
    """

    def __init__(
        self,
        secret_of: Callable[[str], str | None],
        *,
        clock: Callable[[], float] = time.time,
        max_skew: float = MAX_SKEW_SECONDS,
        service: str = "s3",
    ):
        self._secret_of = secret_of
        self._clock = clock
        self._max_skew = max_skew
        self._service = service
        self._keys: dict[tuple[str, str, str, str], bytes] = {}

    def authenticate(self, request: HttpRequestView) -> Authorization | None:
        """The verified signer of the request, or None if it carries no signature at all."""
        header = request.headers.get("authorization")
        query_names = {name for name, _ in request.query}
        if header is not None:
            if "X-Amz-Signature" in query_names or "X-Amz-Credential" in query_names or "Signature" in query_names:
                raise UnsupportedAuthorization("Only one auth mechanism allowed; only the X-Amz-Algorithm query parameter or the Authorization header should be specified.")
            if header.startswith("AWS "):
                from .sigv2 import verify_header as verify_v2_header

                return verify_v2_header(self, request, header)
            return self._verify_header(request, header)
        if "X-Amz-Algorithm" in query_names or "X-Amz-Signature" in query_names:
            return self._verify_query(request)
        if "Signature" in query_names or "AWSAccessKeyId" in query_names:
            from .sigv2 import verify_query as verify_v2_query

            return verify_v2_query(self, request)
        return None

    # header auth

    def _verify_header(self, request: HttpRequestView, header: str) -> Authorization:
        algorithm, _, rest = header.strip().partition(" ")
        if algorithm != ALGORITHM:
            raise UnsupportedAuthorization()
        fields = {}
        for part in rest.split(","):
            name, sep, value = part.strip().partition("=")
            if not sep:
                raise MalformedAuthorization(f"The authorization header is malformed; {part.strip()!r} is not name=value.")
            fields[name] = value.strip()
        try:
            credential = fields["Credential"]
            signed_headers = fields["SignedHeaders"]
            signature = fields["Signature"]
        except KeyError as exc:
            raise MalformedAuthorization(f"The authorization header is malformed; missing {exc.args[0]}.") from None
        access_key, date, region, service = self._parse_credential(credential, MalformedAuthorization)

        amz_date = request.headers.get("x-amz-date")
        if amz_date is None:
            amz_date = _http_date_to_amz(request.headers.get("date"))
        when = _parse_amz_date(amz_date, AccessDenied, "AWS authentication requires a valid Date or x-amz-date header")
        if not amz_date.startswith(date):
            raise MalformedAuthorization(f"The authorization header is malformed; Invalid credential date. Date is not the same as X-Amz-Date: {date}.")
        names = _signed_header_names(signed_headers, MalformedAuthorization)
        if "host" not in names:
            raise MalformedAuthorization("The authorization header is malformed; SignedHeaders must include host.")
        _refuse_unsigned_amz_headers(request.headers, names)

        payload_hash = request.headers.get("x-amz-content-sha256")
        if payload_hash is None:
            # Older clients leave it out; they then sign the hash of an empty body
            # (and the protocol layer holds the body to that).
            payload_hash = EMPTY_SHA256
        elif not (payload_hash in STREAMING_MODES or payload_hash == UNSIGNED_PAYLOAD or _is_sha256_hex(payload_hash)):
            raise InvalidPayloadHash()

        secret = self._secret(access_key)
        if abs(self._clock() - when) > self._max_skew:
            raise RequestTimeSkewed()
        key = self._signing_key(access_key, secret, date, region, service)
        scope = f"{date}/{region}/{service}/aws4_request"
        self._match(request, names, request.query, payload_hash, amz_date, scope, key, signature)
        return Authorization(access_key, amz_date, scope, region, signature.lower(), key, payload_hash, False)

    # query (presigned URL) auth

    def _verify_query(self, request: HttpRequestView) -> Authorization:
        params = presign_params(request, "X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                                "X-Amz-SignedHeaders", "X-Amz-Signature")
        algorithm, credential, amz_date = params["X-Amz-Algorithm"], params["X-Amz-Credential"], params["X-Amz-Date"]
        expires_text, signed_headers = params["X-Amz-Expires"], params["X-Amz-SignedHeaders"]
        signature = params["X-Amz-Signature"]
        if algorithm != ALGORITHM:
            raise MalformedPresign("X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\".")
        access_key, date, region, service = self._parse_credential(credential, MalformedPresign)
        when = _parse_amz_date(amz_date, MalformedPresign, "X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
        if not amz_date.startswith(date):
            raise MalformedPresign("Invalid credential date. Date is not the same as X-Amz-Date.")
        expires = _presign_lifetime(expires_text)
        names = _signed_header_names(signed_headers, MalformedPresign)
        if "host" not in names:
            raise MalformedPresign("X-Amz-SignedHeaders must include host.")
        _refuse_unsigned_amz_headers(request.headers, names)

        now = self._clock()
        if now > when + expires:
            raise RequestExpired()
        if when > now + self._max_skew:
            raise AccessDenied("Request is not valid yet.")
        secret = self._secret(access_key)
        # A presigned URL may pin the payload hash; by default the payload is unsigned.
        payload_hash = params.get("X-Amz-Content-Sha256") or request.headers.get("x-amz-content-sha256") or UNSIGNED_PAYLOAD
        key = self._signing_key(access_key, secret, date, region, service)
        scope = f"{date}/{region}/{service}/aws4_request"
        query = [(n, v) for n, v in request.query if n != "X-Amz-Signature"]
        self._match(request, names, query, payload_hash, amz_date, scope, key, signature)
        return Authorization(access_key, amz_date, scope, region, signature.lower(), key, payload_hash, True)

    # shared

    def _parse_credential(self, credential: str, error: type[BadRequest]) -> tuple[str, str, str, str]:
        parts = credential.rsplit("/", 4)
        if len(parts) != 5 or not parts[0] or parts[4] != "aws4_request":
            raise error("Error parsing the X-Amz-Credential parameter; the Credential is mal-formed; expecting \"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request\".")
        access_key, date, region, service, _ = parts
        if len(date) != 8 or not date.isdigit():
            raise error(f"Error parsing the X-Amz-Credential parameter; incorrect date format \"{date}\".")
        if service != self._service:
            raise error(f"Error parsing the X-Amz-Credential parameter; incorrect service \"{service}\". This endpoint belongs to \"{self._service}\".")
        if not region:
            raise error("Error parsing the X-Amz-Credential parameter; the region is empty.")
        return access_key, date, region, service

    def _secret(self, access_key: str) -> str:
        try:
            secret = self._secret_of(access_key)
        except NotFound:
            secret = None
        if not secret:
            raise InvalidAccessKey()
        return secret

    def _signing_key(self, access_key: str, secret: str, date: str, region: str, service: str) -> bytes:
        cache_key = (access_key, secret, date, region + "/" + service)
        key = self._keys.get(cache_key)
        if key is None:
            key = signing_key(secret, date, region, service)
            if len(self._keys) > 1024:
                self._keys.clear()
            self._keys[cache_key] = key
        return key

    def _match(self, request, names, query, payload_hash, amz_date, scope, key, signature) -> None:
        given = signature.strip().lower()
        if len(given) != 64 or not set(given) <= _HEX:
            raise SignatureMismatch()
        for uri in _canonical_uri_candidates(request.path):
            canonical = canonical_request(request.method, uri, query, request.headers, names, payload_hash)
            string_to_sign = "\n".join(
                (ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode("utf-8")).hexdigest())
            )
            if hmac.compare_digest(_hmac_hex(key, string_to_sign), given):
                return
        raise SignatureMismatch()


# -- the SigV4 algorithm itself (also used by tests to sign what no client can)


def presign_params(request: HttpRequestView, *required: str) -> dict[str, str]:
    """A presigned URL's query parameters (the first value of each name, as S3 reads them);
    ``MalformedPresign`` naming the first of ``required`` that is missing. V4 and V2 alike."""
    params: dict[str, str] = {}
    for name, value in request.query:
        params.setdefault(name, value)
    missing = next((n for n in required if n not in params), None)
    if missing is not None:
        raise MalformedPresign(f"Query-string authentication requires the {missing} parameter.")
    return params


def signing_key(secret: str, date: str, region: str, service: str = "s3") -> bytes:
    key = _hmac(("AWS4" + secret).encode("utf-8"), date)
    key = _hmac(key, region)
    key = _hmac(key, service)
    return _hmac(key, "aws4_request")


def canonical_request(
    method: str,
    canonical_uri: str,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, str],
    signed_names: Sequence[str],
    payload_hash: str,
) -> str:
    canonical_query = "&".join(
        f"{n}={v}" for n, v in sorted((_uri_encode(n), _uri_encode(v)) for n, v in query)
    )
    canonical_headers = "".join(f"{n}:{' '.join(headers.get(n, '').split())}\n" for n in signed_names)
    return "\n".join(
        (method.upper(), canonical_uri, canonical_query, canonical_headers, ";".join(signed_names), payload_hash)
    )


def _canonical_uri_candidates(path: str) -> list[str]:
    raw = path or "/"
    normalised = quote(unquote_to_bytes(raw), safe="/~")
    return [normalised] if normalised == raw else [normalised, raw]


def _uri_encode(text: str) -> str:
    return quote(text.encode("utf-8"), safe="-_.~")


def _presign_lifetime(text: str) -> int:
    """X-Amz-Expires: whole seconds, 0 to a week (S3's messages for each way it can be wrong)."""
    if text.startswith("-") and _is_ascii_digits(text[1:]):
        raise MalformedPresign("X-Amz-Expires must be non-negative.")
    if not _is_ascii_digits(text):
        raise MalformedPresign("X-Amz-Expires should be a number.")
    if len(text.lstrip("0")) > 6 or int(text) > MAX_PRESIGN_SECONDS:
        raise MalformedPresign("X-Amz-Expires must be less than a week (in seconds); that is, the given X-Amz-Expires must be less than 604800 seconds.")
    return int(text)


def _is_ascii_digits(text: str) -> bool:
    return bool(text) and text.isascii() and text.isdigit()


def _signed_header_names(text: str, error: type[BadRequest]) -> list[str]:
    names = [n.strip().lower() for n in text.split(";")]
    if not names or any(not n for n in names):
        raise error("SignedHeaders is malformed.")
    return names


def unsigned_amz_headers(headers: Mapping[str, str], signed_names: Sequence[str]) -> list[str]:
    """The request's x-amz-* headers that a SigV4 signature must cover but does not."""
    signed = set(signed_names)
    return [
        name
        for name in headers
        if name.startswith("x-amz-") and name not in signed and name not in UNSIGNED_AMZ_ALLOWED
    ]


def _refuse_unsigned_amz_headers(headers: Mapping[str, str], signed_names: Sequence[str]) -> None:
    unsigned = unsigned_amz_headers(headers, signed_names)
    if unsigned:
        raise HeadersNotSigned(unsigned)


def _parse_http_date(text: str | None) -> float | None:
    if not text:
        return None
    parsed = parsedate_tz(text)
    if parsed is None:
        try:
            return _parse_amz_date(text, ValueError, "")
        except ValueError:
            return None
    return _http_date_seconds(parsed)


def _http_date_seconds(parsed) -> float | None:
    """Unix time of a parsed HTTP date, or None when the year is out of range (``20222``)."""
    try:
        return float(mktime_tz(parsed))
    except (ValueError, OverflowError):
        return None


def _parse_amz_date(text: str | None, error: type, message: str) -> float:
    if not text:
        raise error(message)
    try:
        return float(calendar.timegm(time.strptime(text, _AMZ_DATE_FORMAT)))
    except ValueError:
        raise error(message) from None


def _http_date_to_amz(text: str | None) -> str | None:
    if not text:
        return None
    parsed = parsedate_tz(text)
    when = None if parsed is None else _http_date_seconds(parsed)
    if when is None:
        return None
    try:
        return time.strftime(_AMZ_DATE_FORMAT, time.gmtime(when))
    except (ValueError, OverflowError, OSError):  # beyond what gmtime handles
        return None


def _is_sha256_hex(text: str) -> bool:
    return len(text) == 64 and set(text) <= _HEX


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).digest()


def _hmac_hex(key: bytes, text: str) -> str:
    return hmac.new(key, text.encode("utf-8"), hashlib.sha256).hexdigest()
