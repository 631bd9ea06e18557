"""One S3 request as the handlers see it, and the response they return.

:class:`S3Request` is parsed once from the WSGI environ: method, the path as sent and
decoded, bucket and key (path-style, or virtual-host style under ``server.domain``), query
pairs, lower-case headers, and, after authentication, the user. It also carries the Store
and, after authentication, the caller as a :class:`cas.access.Principal`, whose bucket checks
every handler applies through :meth:`S3Request.bucket_for` (the rules live in ``cas.access``).

:class:`Response` is status, headers and a body (bytes, or an iterable that streams and is
closed by the server). Not thread-safe; one per request.
"""

from __future__ import annotations

import http
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote_plus, unquote_to_bytes

from cas import access
from cas.access import Principal
from cas.auth.sigv4 import Authorization, HttpRequestView
from cas.protocols.s3 import xml
from cas.protocols.s3.error import S3Error, invalid_argument

#: stored "system" headers that round-trip as they are (lower-case -> wire spelling)
STORED_HEADERS = {
    "content-disposition": "Content-Disposition",
    "content-encoding": "Content-Encoding",
    "cache-control": "Cache-Control",
    "content-language": "Content-Language",
    "expires": "Expires",
}
META_PREFIX = "x-amz-meta-"
TAGGING_HEADER = "x-amz-tagging"
MAX_METADATA_BYTES = 2048  # S3's limit on user metadata (names + values)


class S3Request:
    """A parsed S3 request (see the module docstring)."""

    def __init__(self, environ: dict, store, settings):
        self.environ = environ
        self.store = store
        self.settings = settings
        self.method = environ.get("REQUEST_METHOD", "GET").upper()
        self.request_id = environ.get("cas.request_id") or os.urandom(8).hex().upper()
        self.raw_path, raw_query = _raw_target(environ)
        self.query = parse_query(raw_query)
        self.params: dict[str, str] = {}
        for name, value in self.query:
            self.params.setdefault(name, value)
        self.headers = _headers(environ)
        try:
            path = unquote_to_bytes(self.raw_path).decode("utf-8")
        except UnicodeDecodeError:
            raise S3Error("InvalidURI", "Couldn't parse the specified URI.", 400) from None
        self.path = path
        self.bucket, self.key = _address(path, self.headers.get("host", ""), settings.server.domain)
        self.user = ""
        #: who is asking; set by authentication (the anonymous reader until then)
        self.principal = Principal.anonymous_reader()
        self.auth: Authorization | None = None
        self.body_reader = None  # set when a handler starts reading the body

    # -- wire views

    def sigv4_view(self) -> HttpRequestView:
        return HttpRequestView(self.method, self.raw_path, self.query, self.headers)

    @property
    def resource(self) -> str:
        return self.path

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name, default)

    # -- access

    def bucket_for(self, name: str | None = None, *, write: bool = False):
        """The BucketInfo of ``name`` (default: this request's bucket) if this caller may use it.

        NoSuchBucket when it does not exist; AccessDenied (403, as AWS answers) when it belongs
        to someone else or, for an anonymous caller, when ``write`` (``cas.access``).
        """
        return access.visible_bucket(self.store, self.principal,
                                     name if name is not None else self.bucket, write=write)

    def metadata(self) -> dict[str, str]:
        """User metadata from ``x-amz-meta-*`` headers (names lower-case, prefix dropped)."""
        meta = {name[len(META_PREFIX):]: value for name, value in self.headers.items() if name.startswith(META_PREFIX)}
        size = sum(len(k.encode()) + len(v.encode()) for k, v in meta.items())
        if size > MAX_METADATA_BYTES:
            raise S3Error(
                "MetadataTooLarge",
                f"Your metadata headers exceed the maximum allowed metadata size ({size} > {MAX_METADATA_BYTES} bytes).",
                400,
            )
        return meta

    def tags(self) -> list[tuple[str, str]] | None:
        """The tags ``x-amz-tagging`` (URL query form: ``k1=v1&k2=v2``) gives the object being
        written, as (key, value) pairs; None when the header is absent. A key given twice, or
        text that is not URL-encoded UTF-8, is refused as S3 does; the Store checks the rest."""
        text = self.headers.get(TAGGING_HEADER)
        if text is None:
            return None
        message = (f"The header '{TAGGING_HEADER}' shall be encoded as UTF-8 then URLEncoded URL query "
                   "parameters without tag name duplicates.")
        pairs: list[tuple[str, str]] = []
        for part in text.split("&"):
            if not part:
                continue
            name, _, value = part.partition("=")
            try:
                pair = (unquote_plus(name, errors="strict"), unquote_plus(value, errors="strict"))
            except UnicodeDecodeError:
                raise invalid_argument(message, TAGGING_HEADER, text) from None
            if any(pair[0] == seen for seen, _ in pairs):
                raise invalid_argument(message, TAGGING_HEADER, text)
            pairs.append(pair)
        return pairs

    def stored_headers(self) -> dict[str, str]:
        """Content-Disposition, Content-Encoding (less aws-chunked), Cache-Control, ... to keep."""
        out = {}
        for name in STORED_HEADERS:
            value = self.headers.get(name)
            if value is None:
                continue
            if name == "content-encoding":
                value = ",".join(v.strip() for v in value.split(",") if v.strip() and v.strip().lower() != "aws-chunked")
                if not value:
                    continue
            out[name] = value
        return out


@dataclass
class Response:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes | Iterable[bytes] = b""

    @classmethod
    def xml(cls, root: str, children: xml.Children, status: int = 200, headers=()) -> Response:
        body = xml.document(root, children)
        return cls(status, [("Content-Type", "application/xml"), *headers], body)

    @property
    def status_line(self) -> str:
        try:
            phrase = http.HTTPStatus(self.status).phrase
        except ValueError:
            phrase = "Unknown"
        return f"{self.status} {phrase}"


def error_response(req_or_none, error: S3Error, method: str, resource: str, request_id: str) -> Response:
    children = [("Code", error.code), ("Message", error.message)]
    children += list(error.fields.items())
    children += [("Resource", resource), ("RequestId", request_id)]
    body = xml.document("Error", children, namespace=False)
    headers = [("Content-Type", "application/xml")]
    if method == "HEAD":
        # A HEAD response has no body; say its length anyway, as S3 does.
        return Response(error.status, headers + [("Content-Length", str(len(body)))], b"")
    return Response(error.status, headers, body)


def non_negative_int(text: str | None, name: str, default: int) -> int:
    """A count or marker a request gives in a query parameter or header ``name`` (``default`` when
    absent); ``InvalidArgument`` for one that is not a non-negative integer."""
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise invalid_argument(f"Provided {name} not an integer or within integer range", name, text) from None
    if value < 0:
        raise invalid_argument(f"Provided {name} must be a non-negative integer", name, text)
    return value


def quote_etag(etag: str) -> str:
    return f'"{etag}"'


def parse_query(raw: str) -> list[tuple[str, str]]:
    """Decoded (name, value) pairs; '+' is a space, as in form encoding (and as in MinIO)."""
    pairs = []
    if not raw:
        return pairs
    for part in raw.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        try:
            pairs.append((unquote_plus(name, errors="strict"), unquote_plus(value, errors="strict")))
        except UnicodeDecodeError:
            raise S3Error("InvalidURI", "Couldn't parse the specified URI.", 400) from None
    return pairs


def _raw_target(environ: Mapping) -> tuple[str, str]:
    uri = environ.get("REQUEST_URI")
    if uri:
        if "://" in uri.split("?", 1)[0]:  # absolute-form request target
            uri = "/" + uri.split("://", 1)[1].partition("/")[2]
        path, _, query = uri.partition("?")
        return path or "/", query
    # Not cheroot: rebuild from PEP 3333's latin-1 PATH_INFO.
    from urllib.parse import quote

    path = quote(environ.get("PATH_INFO", "/").encode("latin-1"), safe="/~")
    return path or "/", environ.get("QUERY_STRING", "")


def _headers(environ: Mapping) -> dict[str, str]:
    headers = {}
    for name, value in environ.items():
        if name.startswith("HTTP_"):
            headers[name[5:].replace("_", "-").lower()] = _latin1_to_text(value)
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = _latin1_to_text(environ["CONTENT_TYPE"])
    if environ.get("CONTENT_LENGTH"):
        headers["content-length"] = environ["CONTENT_LENGTH"]
    return headers


def _latin1_to_text(value: str) -> str:
    # PEP 3333 hands header bytes over as latin-1; S3 metadata is UTF-8 on the wire.
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def _address(path: str, host: str, domain: str | None) -> tuple[str, str]:
    """(bucket, key) from virtual-host style (``bucket.domain``) or path style (``/bucket/key``)."""
    if domain:
        hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        hostname = hostname.lower().rstrip(".")
        suffix = "." + domain.lower().strip(".")
        if hostname.endswith(suffix) and len(hostname) > len(suffix):
            return hostname[: -len(suffix)], path.removeprefix("/")
    trimmed = path.removeprefix("/")
    bucket, _, key = trimmed.partition("/")
    if not bucket and trimmed:  # "//", "//key": no bucket, yet more path (not ListBuckets)
        raise S3Error("InvalidURI", "Couldn't parse the specified URI.", 400)
    return bucket, key
