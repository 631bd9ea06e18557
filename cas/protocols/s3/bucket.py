"""Bucket operations: ListBuckets, Create, Delete, Head, Location, Versioning, listings.

ListObjects V1 and V2 page through ``Store.list`` (keys in UTF-8 binary order); a V2
continuation token is the opaque, base64url form of the key (or common prefix) the page
ended at. With ``encoding-type=url``, keys and prefixes go out percent-encoded.

Buckets are unversioned (as an S3 bucket that never had versioning): ListObjectVersions pages
through the same listing and answers each object as its one version, ``null``, the latest.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import quote
from xml.sax.saxutils import escape

from cas import access
from cas.errors import BucketAlreadyExists, InvalidName
from cas.names import check_bucket
from cas.protocols.s3 import xml
from cas.protocols.s3.error import S3Error, invalid_argument
from cas.protocols.s3.payload import read_small_body
from cas.protocols.s3.request import Response, S3Request, non_negative_int, quote_etag
from cas.protocols.s3.xml import iso_time

REGION = "us-east-1"
MAX_KEYS = 1000
#: the version id of every object in a bucket that never had versioning
NULL_VERSION = "null"


def _owner(name: str) -> list:
    return [("ID", name), ("DisplayName", name)]


def list_buckets(req: S3Request) -> Response:
    if req.principal.anonymous:
        # Anonymous reads reach objects whose address is known; listing would name every
        # user's buckets. Public buckets arrive with ACLs.
        raise S3Error("AccessDenied", "Anonymous users cannot list buckets.", 403)
    buckets = access.visible_buckets(req.store, req.principal)
    prefix = req.params.get("prefix", "")
    entries = [
        ("Bucket", [("Name", b.name), ("CreationDate", iso_time(b.created)), ("BucketRegion", REGION)])
        for b in buckets
        if b.name.startswith(prefix)
    ]
    children = [("Buckets", entries), ("Owner", _owner(req.user or "anonymous"))]
    if prefix:
        children.append(("Prefix", prefix))
    return Response.xml("ListAllMyBucketsResult", children)


def create_bucket(req: S3Request) -> Response:
    if req.principal.anonymous:
        raise S3Error("AccessDenied", "Anonymous users cannot create buckets.", 403)
    try:
        check_bucket(req.bucket)
    except InvalidName as exc:
        raise S3Error("InvalidBucketName", str(exc), 400, BucketName=req.bucket) from None
    _check_location(req)
    try:
        req.store.create_bucket(req.bucket, owner=req.user)
    except BucketAlreadyExists:
        if req.principal.owns(req.store.bucket(req.bucket).owner):
            raise S3Error(
                "BucketAlreadyOwnedByYou",
                "Your previous request to create the named bucket succeeded and you already own it.",
                409,
                BucketName=req.bucket,
            ) from None
        raise S3Error(
            "BucketAlreadyExists",
            "The requested bucket name is not available. Please select a different name and try again.",
            409,
            BucketName=req.bucket,
        ) from None
    return Response(200, [("Location", "/" + req.bucket), ("Content-Length", "0")])


def _check_location(req: S3Request) -> None:
    """A CreateBucketConfiguration body may name a region; any region is accepted (one store)."""
    body = read_small_body(req, 64 * 1024)
    if body.strip():
        xml.parse(body, "CreateBucketConfiguration")


def delete_bucket(req: S3Request) -> Response:
    req.bucket_for(write=True)
    req.store.delete_bucket(req.bucket, user=req.user)
    return Response(204)


def head_bucket(req: S3Request) -> Response:
    req.bucket_for()
    return Response(200, [("x-amz-bucket-region", REGION), ("Content-Length", "0")])


def get_location(req: S3Request) -> Response:
    req.bucket_for()
    # us-east-1 is spelled as an empty constraint.
    return Response.xml("LocationConstraint", [])


def get_versioning(req: S3Request) -> Response:
    req.bucket_for()
    return Response.xml("VersioningConfiguration", [])


_ACL = """<?xml version="1.0" encoding="UTF-8"?>
<AccessControlPolicy xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Owner><ID>{owner}</ID><DisplayName>{owner}</DisplayName></Owner><AccessControlList><Grant><Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="CanonicalUser"><ID>{owner}</ID><DisplayName>{owner}</DisplayName></Grantee><Permission>FULL_CONTROL</Permission></Grant></AccessControlList></AccessControlPolicy>"""


def get_acl(req: S3Request) -> Response:
    """A minimal ACL: the owner has FULL_CONTROL (cas has no ACLs, only ownership).

    Written out by hand because clients (s3cmd) need the grantee's ``xsi:type`` attribute.
    """
    info = req.bucket_for()
    if req.key:
        req.store.stat(req.bucket, req.key)
    body = _ACL.format(owner=escape(info.owner)).encode("utf-8")
    return Response(200, [("Content-Type", "application/xml")], body)


def get_empty_config(root: str):
    """Handlers for ``GET ?logging`` & co.: a valid, empty configuration."""

    def handler(req: S3Request) -> Response:
        req.bucket_for()
        return Response.xml(root, [])

    return handler


def get_missing_config(code: str, message: str):
    """Handlers for ``GET ?policy`` & co.: the 404 S3 gives a bucket without one."""

    def handler(req: S3Request) -> Response:
        req.bucket_for()
        raise S3Error(code, message, 404, BucketName=req.bucket)

    return handler


# -- listings


def _max_keys(req: S3Request, name: str = "max-keys") -> int:
    return min(non_negative_int(req.params.get(name), name, MAX_KEYS), MAX_KEYS)


def _encoder(req: S3Request):
    encoding = req.params.get("encoding-type")
    if encoding is None:
        return lambda text: text
    if encoding.lower() != "url":
        raise invalid_argument("Invalid Encoding Method specified in Request", "encoding-type", encoding)
    return lambda text: quote(text.encode("utf-8"), safe="/")


def _contents(entries, encode, with_owner: bool) -> list:
    out = []
    for info in entries:
        item = [
            ("Key", encode(info.key)),
            ("LastModified", iso_time(info.mtime)),
            ("ETag", quote_etag(info.etag)),
            ("Size", info.size),
            ("StorageClass", "STANDARD"),
        ]
        for algorithm in info.checksums:
            item.append(("ChecksumAlgorithm", algorithm.upper()))
        if with_owner:
            item.append(("Owner", _owner(info.owner)))
        out.append(("Contents", item))
    return out


def list_objects_v2(req: S3Request) -> Response:
    req.bucket_for()
    encode = _encoder(req)
    prefix = req.params.get("prefix", "")
    delimiter = req.params.get("delimiter", "")
    start_after = req.params.get("start-after", "")
    token = req.params.get("continuation-token")
    max_keys = _max_keys(req)
    after = start_after
    if token is not None:
        after = _decode_token(token)
    listing = req.store.list(req.bucket, prefix=prefix, delimiter=delimiter, start_after=after, limit=max_keys)
    children = [
        ("Name", req.bucket),
        ("Prefix", encode(prefix)),
    ]
    if start_after:
        children.append(("StartAfter", encode(start_after)))
    if token is not None:
        children.append(("ContinuationToken", token))
    if listing.truncated:
        children.append(("NextContinuationToken", _encode_token(listing.next_start_after)))
    children += [
        ("KeyCount", len(listing.entries) + len(listing.common_prefixes)),
        ("MaxKeys", max_keys),
    ]
    children += _listing_flags(req, delimiter, encode, listing)
    fetch_owner = req.params.get("fetch-owner", "").lower() == "true"
    return _listing_result(children, listing, encode, fetch_owner)


def list_objects_v1(req: S3Request) -> Response:
    req.bucket_for()
    encode = _encoder(req)
    prefix = req.params.get("prefix", "")
    delimiter = req.params.get("delimiter", "")
    marker = req.params.get("marker", "")
    max_keys = _max_keys(req)
    listing = req.store.list(req.bucket, prefix=prefix, delimiter=delimiter, start_after=marker, limit=max_keys)
    children = [
        ("Name", req.bucket),
        ("Prefix", encode(prefix)),
        ("Marker", encode(marker)),
        ("MaxKeys", max_keys),
    ]
    children += _listing_flags(req, delimiter, encode, listing)
    if listing.truncated:
        # S3 sends NextMarker only with a delimiter; sending it always helps clients and is valid.
        children.append(("NextMarker", encode(listing.next_start_after)))
    return _listing_result(children, listing, encode, True)


def _listing_flags(req: S3Request, delimiter: str, encode, listing) -> list:
    """Delimiter, EncodingType and IsTruncated, in the order both listing versions send them."""
    out: list = []
    if delimiter:
        out.append(("Delimiter", encode(delimiter)))
    if "encoding-type" in req.params:
        out.append(("EncodingType", "url"))
    out.append(("IsTruncated", listing.truncated))
    return out


def _listing_result(children: list, listing, encode, with_owner: bool) -> Response:
    children += _contents(listing.entries, encode, with_owner)
    children += [("CommonPrefixes", [("Prefix", encode(p))]) for p in listing.common_prefixes]
    return Response.xml("ListBucketResult", children)


def list_object_versions(req: S3Request) -> Response:
    """ListObjectVersions of an unversioned bucket: every object is its ``null`` version.

    A page starts after ``key-marker`` whether or not ``version-id-marker`` is given, as the
    ``null`` version is a key's only (hence last) version; any other version id names nothing.
    """
    req.bucket_for()
    encode = _encoder(req)
    prefix = req.params.get("prefix", "")
    delimiter = req.params.get("delimiter", "")
    key_marker = req.params.get("key-marker", "")
    version_marker = req.params.get("version-id-marker", "")
    if version_marker and not key_marker:
        raise invalid_argument("A version-id marker cannot be specified without a key marker.",
                               "version-id-marker", version_marker)
    if version_marker and version_marker != NULL_VERSION:
        raise invalid_argument("Invalid version id specified", "version-id-marker", version_marker)
    max_keys = _max_keys(req)
    listing = req.store.list(req.bucket, prefix=prefix, delimiter=delimiter, start_after=key_marker, limit=max_keys)
    children = [
        ("Name", req.bucket),
        ("Prefix", encode(prefix)),
        ("KeyMarker", encode(key_marker)),
        ("VersionIdMarker", version_marker),
    ]
    if listing.truncated:
        children.append(("NextKeyMarker", encode(listing.next_start_after)))
        if listing.next_start_after not in listing.common_prefixes:
            children.append(("NextVersionIdMarker", NULL_VERSION))
    children.append(("MaxKeys", max_keys))
    children += _listing_flags(req, delimiter, encode, listing)
    for info in listing.entries:
        item = [
            ("Key", encode(info.key)),
            ("VersionId", NULL_VERSION),
            ("IsLatest", True),
            ("LastModified", iso_time(info.mtime)),
            ("ETag", quote_etag(info.etag)),
            ("Size", info.size),
        ]
        item += [("ChecksumAlgorithm", algorithm.upper()) for algorithm in info.checksums]
        item += [("StorageClass", "STANDARD"), ("Owner", _owner(info.owner))]
        children.append(("Version", item))
    children += [("CommonPrefixes", [("Prefix", encode(p))]) for p in listing.common_prefixes]
    return Response.xml("ListVersionsResult", children)


def _encode_token(after: str) -> str:
    return base64.urlsafe_b64encode(b"k1:" + after.encode("utf-8")).decode("ascii")


def _decode_token(token: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(token.encode("ascii") + b"=" * (-len(token) % 4))
        if not raw.startswith(b"k1:"):
            raise ValueError(token)
        return raw[3:].decode("utf-8")
    except (binascii.Error, ValueError, UnicodeError):
        raise invalid_argument("The continuation token provided is incorrect", "continuation-token", token) from None
