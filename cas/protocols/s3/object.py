"""Object operations: Put, Get, Head, Delete, DeleteObjects, CopyObject.

PUT streams the body through :class:`~cas.protocols.s3.payload.Payload` into
``Store.put``; nothing is bound to the key unless every promise about the body held. GET
streams the object's blocks (a single Range reads only the blocks it touches). CopyObject
binds the source's manifest to the new name: no block is read or written; the copy keeps the
source's metadata and tags unless ``x-amz-metadata-directive`` / ``x-amz-tagging-directive``
say ``REPLACE`` (then the request's headers give them).
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime

from cas.errors import InvalidHeaderValue, ObjectNotFound, PreconditionFailed
from cas.headers import check_content_type, check_value
from cas.protocols import headers as safe
from cas.protocols.http import etag_matches, parse_range
from cas.protocols.s3 import checksum, xml
from cas.protocols.s3.bucket import NULL_VERSION
from cas.protocols.s3.error import S3Error, invalid_argument, not_implemented, to_s3_error
from cas.protocols.s3.payload import Payload, read_small_body
from cas.protocols.s3.request import META_PREFIX, STORED_HEADERS, Response, S3Request, quote_etag
from cas.store import ReaderBody

_RESPONSE_OVERRIDES = {
    "response-content-type": "Content-Type",
    "response-content-language": "Content-Language",
    "response-expires": "Expires",
    "response-cache-control": "Cache-Control",
    "response-content-disposition": "Content-Disposition",
    "response-content-encoding": "Content-Encoding",
}
MAX_DELETE_KEYS = 1000


# -- shared


def refuse_unsupported(req: S3Request, *, takes_version: bool = False) -> None:
    """Features whose silent omission would mislead a client: say so instead.

    A ``versionId`` other than ``null`` is refused unless the operation ``takes_version`` (GET,
    HEAD, DELETE: see :func:`requested_version`).
    """
    headers = req.headers
    if "x-amz-server-side-encryption-customer-algorithm" in headers or "x-amz-server-side-encryption" in headers:
        raise not_implemented("Server-side encryption")
    if "x-amz-object-lock-mode" in headers or "x-amz-object-lock-legal-hold" in headers:
        raise not_implemented("Object lock")
    if "x-amz-website-redirect-location" in headers:
        raise not_implemented("Website redirects")
    version = req.params.get("versionId")
    if not takes_version and version is not None and version != NULL_VERSION:
        raise invalid_argument("Invalid version id specified", "versionId", version)


def requested_version(req: S3Request) -> str | None:
    """The ``versionId`` a request names: None (none), ``null`` (the object itself), or another id.

    Buckets are unversioned, so ``null`` is the one version there is; what another id does is the
    handler's to say (GET/HEAD: NoSuchVersion; DELETE: nothing to delete). An empty one is refused.
    """
    version = req.params.get("versionId")
    if version == "":
        raise invalid_argument("Version id cannot be the empty string", "versionId", version)
    return version


def no_such_version(key: str, version: str) -> S3Error:
    return S3Error("NoSuchVersion", "The specified version does not exist.", 404, Key=key, VersionId=version)


def object_headers(info, *, with_checksums: bool) -> list[tuple[str, str]]:
    # stored values pass through cas.protocols.headers: a record from an older version may
    # hold a value that must not reach the wire (CR/LF: a header or response of its own)
    headers = [
        ("ETag", quote_etag(info.etag)),
        ("Last-Modified", xml.http_time(info.mtime)),
        ("Content-Type", safe.content_type(info.content_type)),
        ("Accept-Ranges", "bytes"),
        *safe.security_headers(ui_origin=False),
    ]
    for name, value in safe.stored_pairs(info.headers):
        wire = STORED_HEADERS.get(name)
        if wire is not None:
            headers.append((wire, value))
    for name, value in safe.stored_pairs(info.metadata):
        headers.append((META_PREFIX + name, value))
    if info.parts:
        headers.append(("x-amz-mp-parts-count", str(info.parts)))
    if info.tags:  # S3 sends the count only when there are tags
        headers.append(("x-amz-tagging-count", str(len(info.tags))))
    if with_checksums:
        for algorithm, value in info.checksums.items():
            headers.append((checksum.HEADER_PREFIX + algorithm, value))
            headers.append(("x-amz-checksum-type", checksum.COMPOSITE if "-" in value else checksum.FULL_OBJECT))
    return headers


def _http_date(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return parsedate_to_datetime(text).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None  # an unparsable date is ignored, as HTTP says


def _response_override(param: str, value: str) -> str:
    """A ``response-content-*`` query value, refused (400) when it could not be sent as a header."""
    try:
        if param == "response-content-type" and value:
            return check_content_type(value) or value
        return check_value(_RESPONSE_OVERRIDES[param], value)
    except InvalidHeaderValue as exc:
        raise invalid_argument(f"{param}: {exc.message}", param) from None


def check_read_conditions(headers, info, prefix: str = "") -> int | None:
    """The status (304/412) that the If-* headers ask for, or None to proceed.

    ``prefix`` is ``x-amz-copy-source-`` for CopyObject's source conditions (which turn
    a 304 into a 412, as S3 does).
    """
    if_match = headers.get(prefix + "if-match")
    if_none_match = headers.get(prefix + "if-none-match")
    if_modified = _http_date(headers.get(prefix + "if-modified-since"))
    if_unmodified = _http_date(headers.get(prefix + "if-unmodified-since"))
    mtime = int(info.mtime)  # HTTP dates have whole seconds
    if if_match is not None:
        if not etag_matches(if_match, info.etag):
            return 412
    elif if_unmodified is not None and mtime > if_unmodified:
        return 412
    if if_none_match is not None:
        if etag_matches(if_none_match, info.etag):
            return 304
    elif if_modified is not None and mtime <= if_modified:
        return 304
    return None


# -- handlers


def put_object(req: S3Request) -> Response:
    if "x-amz-copy-source" in req.headers:
        return copy_object(req)
    refuse_unsupported(req)
    req.bucket_for(write=True)
    payload = Payload(req)
    if_match, if_none_match = _write_conditions(req)
    info = req.store.put(
        req.bucket,
        req.key,
        payload.reader,
        user=req.user,
        content_type=req.headers.get("content-type"),
        metadata=req.metadata(),
        headers=req.stored_headers(),
        tags=req.tags(),
        expected_md5=payload.expected_md5,
        expected_size=payload.size,
        hashers=payload.hashers,
        before_commit=payload.before_commit,
        if_match=if_match,
        if_none_match=if_none_match,
    )
    headers = [("ETag", quote_etag(info.etag)), ("Content-Length", "0")]
    headers += payload.response_headers(info.checksums)
    return Response(200, headers)


def _write_conditions(req: S3Request) -> tuple[str | None, str | None]:
    if_match = req.headers.get("if-match")
    if_none_match = req.headers.get("if-none-match")
    if if_none_match is not None and if_none_match.strip() != "*":
        raise S3Error("NotImplemented", "A header you provided implies functionality that is not implemented: If-None-Match other than *.", 501)
    if if_match is not None:
        try:
            req.store.stat(req.bucket, req.key)
        except ObjectNotFound:
            raise S3Error("NoSuchKey", "The specified key does not exist.", 404, Key=req.key) from None
    return if_match, if_none_match


def get_object(req: S3Request) -> Response:
    return _read_object(req, head=False)


def head_object(req: S3Request) -> Response:
    return _read_object(req, head=True)


def _read_object(req: S3Request, *, head: bool) -> Response:
    refuse_unsupported(req, takes_version=True)
    req.bucket_for()
    version = requested_version(req)
    if version is not None and version != NULL_VERSION:
        raise no_such_version(req.key, version)
    part = req.params.get("partNumber")
    range_header = req.headers.get("range")
    if part is not None:
        if range_header:
            raise invalid_argument("Cannot specify both Range header and partNumber query parameter.", "partNumber", part)
        info = req.store.stat(req.bucket, req.key)
        if part != "1" or info.parts > 1:
            raise not_implemented("GET or HEAD of one part of a multipart object")
    # the size is looked up only for a ranged GET; if the object changes before ``open``,
    # ``open`` clips the range or refuses it (InvalidRange), so no wrong bytes go out
    byte_range = parse_range(range_header, req.store.stat(req.bucket, req.key).size) if range_header else None
    reader = req.store.open(req.bucket, req.key,
                            range=None if byte_range is None else (byte_range.start, byte_range.stop),
                            prefetch=False)
    try:
        info = reader.info
        status = check_read_conditions(req.headers, info)
        if status is not None:
            if status == 412:
                raise S3Error("PreconditionFailed", "At least one of the pre-conditions you specified did not hold", 412, Condition="If-Match")
            headers = [("ETag", quote_etag(info.etag)), ("Last-Modified", xml.http_time(info.mtime))]
            reader.close()
            return Response(304, headers)
        with_checksums = (
            req.headers.get("x-amz-checksum-mode", "").upper() == "ENABLED" and byte_range is None
        )
        headers = object_headers(info, with_checksums=with_checksums)
        for param, wire in _RESPONSE_OVERRIDES.items():
            if param in req.params:
                if req.principal.anonymous:
                    raise S3Error("InvalidRequest", "Request specific response headers cannot be used for anonymous GET requests.", 400)
                value = _response_override(param, req.params[param])
                headers = [(n, v) for n, v in headers if n.lower() != wire.lower()] + [(wire, safe.value(value))]
        headers.append(("Content-Length", str(reader.length)))
        if version is not None:
            headers.append(("x-amz-version-id", version))
        status = 200
        if byte_range is not None:
            status = 206
            headers.append(("Content-Range", f"bytes {reader.start}-{reader.stop - 1}/{info.size}"))
        if head or reader.length == 0:
            reader.close()
            return Response(status, headers, b"")
        reader.prefetch()  # a damaged first block is an error response, not 200 and no bytes
        return Response(status, headers, ReaderBody(reader))
    except BaseException:
        reader.close()
        raise


def delete_object(req: S3Request) -> Response:
    refuse_unsupported(req, takes_version=True)
    req.bucket_for(write=True)
    version = requested_version(req)
    # another version id names a version that does not exist: S3 deletes nothing and says 204
    if version in (None, NULL_VERSION):
        try:
            req.store.delete(req.bucket, req.key, user=req.user)
        except ObjectNotFound:
            pass  # S3 answers 204 whether or not the key existed
    return Response(204, [] if version is None else [("x-amz-version-id", version)])


def delete_objects(req: S3Request) -> Response:
    req.bucket_for(write=True)
    body = read_small_body(req, 2 << 20, require_integrity=True)
    quiet, objects = parse_delete_request(body)
    results = []
    for key, version in objects:
        try:
            if version == "":
                raise invalid_argument("Version id cannot be the empty string")
            # as DeleteObject: another version id names nothing to delete, and is reported deleted
            if version in (None, NULL_VERSION):
                try:
                    req.store.delete(req.bucket, key, user=req.user)
                except ObjectNotFound:
                    pass
            if not quiet:
                results.append(("Deleted", [("Key", key), ("VersionId", version)]))
        except Exception as exc:
            error = to_s3_error(exc)
            if error.status >= 500:
                raise
            results.append(("Error", [("Key", key), ("VersionId", version), ("Code", error.code),
                                      ("Message", error.message)]))
    return Response.xml("DeleteResult", results)


def parse_delete_request(body: bytes) -> tuple[bool, list[tuple[str, str | None]]]:
    """A DeleteObjects body as (quiet, [(key, version id or None)]); S3Error or MalformedXML if invalid."""
    root = xml.parse(body, "Delete")
    quiet = (xml.child_text(root, "Quiet", "false") or "").strip().lower() == "true"
    elements = xml.children(root, "Object")
    if len(elements) > MAX_DELETE_KEYS:
        raise S3Error("MalformedXML", f"A DeleteObjects request may name at most {MAX_DELETE_KEYS} keys.", 400)
    objects = []
    for element in elements:
        key = xml.child_text(element, "Key")
        if key is None:
            raise S3Error("MalformedXML", "Every Object must have a Key.", 400)
        objects.append((key, xml.child_text(element, "VersionId")))
    return quiet, objects


def copy_object(req: S3Request) -> Response:
    refuse_unsupported(req)
    src_bucket, src_key = parse_copy_source(req)
    req.bucket_for(src_bucket)
    req.bucket_for(write=True)
    src = req.store.stat(src_bucket, src_key)
    if check_read_conditions(req.headers, src, "x-amz-copy-source-") is not None:
        raise S3Error("PreconditionFailed", "At least one of the pre-conditions you specified did not hold", 412)
    directive = req.headers.get("x-amz-metadata-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise invalid_argument("Unknown metadata directive.", "x-amz-metadata-directive", directive)
    if directive == "COPY" and (src_bucket, src_key) == (req.bucket, req.key):
        raise S3Error(
            "InvalidRequest",
            "This copy request is illegal because it is trying to copy an object to itself without changing the "
            "object's metadata, storage class, website redirect location or encryption attributes.",
            400,
        )
    kwargs = {"tags": _copy_tags(req)}
    if directive == "REPLACE":
        kwargs.update(
            metadata=req.metadata(),
            content_type=req.headers.get("content-type") or "binary/octet-stream",
            headers=req.stored_headers(),
        )
    if_match, if_none_match = _write_conditions(req)
    try:
        info = req.store.copy(
            src_bucket, src_key, req.bucket, req.key, user=req.user, if_match=if_match, if_none_match=if_none_match, **kwargs
        )
    except PreconditionFailed:
        raise S3Error("PreconditionFailed", "At least one of the pre-conditions you specified did not hold", 412) from None
    children = [("ETag", quote_etag(info.etag)), ("LastModified", xml.iso_time(info.mtime))]
    for algorithm, value in info.checksums.items():
        children.append(("Checksum" + algorithm.upper(), value))
    return Response.xml("CopyObjectResult", children, headers=[("x-amz-copy-source-version-id", "null")])


def _copy_tags(req: S3Request) -> list[tuple[str, str]] | None:
    """The tags a CopyObject gives its copy: None keeps the source's (``COPY``, the default);
    ``REPLACE`` takes ``x-amz-tagging`` (no header: no tags)."""
    directive = req.headers.get("x-amz-tagging-directive", "COPY").upper()
    if directive not in ("COPY", "REPLACE"):
        raise invalid_argument("Unknown tagging directive.", "x-amz-tagging-directive", directive)
    if directive == "COPY":
        return None
    return req.tags() or []


def parse_copy_source(req: S3Request) -> tuple[str, str]:
    """(bucket, key) of ``x-amz-copy-source: /bucket/key[?versionId=...]`` (URL-encoded)."""
    from urllib.parse import unquote

    raw = req.headers["x-amz-copy-source"]
    path, _, query = raw.partition("?")
    if query:
        name, _, value = query.partition("=")
        if name != "versionId" or value not in ("", "null"):
            raise invalid_argument("Invalid version id specified", "x-amz-copy-source", raw)
    try:
        text = unquote(path, errors="strict")
    except UnicodeDecodeError:
        raise invalid_argument("Copy Source must mention the source bucket and key: sourcebucket/sourcekey.", "x-amz-copy-source", raw) from None
    bucket, _, key = text.lstrip("/").partition("/")
    if not bucket or not key:
        raise invalid_argument(
            "Copy Source must mention the source bucket and key: sourcebucket/sourcekey.", "x-amz-copy-source", raw
        )
    return bucket, key
