"""Tagging operations: Put/Get/DeleteObjectTagging and Put/Get/DeleteBucketTagging.

A tag set travels as a ``<Tagging><TagSet><Tag><Key/><Value/></Tag>...</TagSet></Tagging>``
document (parsed with ``defusedxml`` through ``xml.parse``; a document that is not one is
``MalformedXML``). Objects being written get theirs from the ``x-amz-tagging`` header
(``S3Request.tags``: PutObject, CreateMultipartUpload, CopyObject with
``x-amz-tagging-directive: REPLACE``), and GET/HEAD say how many they have in
``x-amz-tagging-count`` (``object.object_headers``). The rules a tag set keeps (how many, how
long, unique keys) are the Store's (``cas.store.tags.check_tags``: ``InvalidTag``). Changing tags
is a record-only change (``Store.set_tags``): whoever may write the object may tag it; whoever
may read it may read them.
"""

from __future__ import annotations

from cas.protocols.s3 import xml
from cas.protocols.s3.error import S3Error
from cas.protocols.s3.object import refuse_unsupported
from cas.protocols.s3.payload import read_small_body
from cas.protocols.s3.request import Response, S3Request

MAX_BODY = 256 * 1024  # 50 tags of 128 + 256 characters (4 UTF-8 bytes, or more as references) and markup


# -- the document


def parse_tagging(body: bytes) -> list[tuple[str, str]]:
    """A ``Tagging`` document as (key, value) pairs, in the order given (``MalformedXML`` if invalid)."""
    root = xml.parse(body, "Tagging")
    sets = xml.children(root, "TagSet")
    if len(sets) != 1:
        raise S3Error("MalformedXML", "The XML you provided was not well-formed or did not validate against our published schema.", 400)
    pairs = []
    for tag in xml.children(sets[0], "Tag"):
        key, value = xml.child_text(tag, "Key"), xml.child_text(tag, "Value")
        if key is None or value is None:
            raise S3Error("MalformedXML", "The XML you provided was not well-formed or did not validate against our published schema.", 400)
        pairs.append((key, value))
    return pairs


def _document(tags) -> Response:
    return Response.xml("Tagging", [("TagSet", [("Tag", [("Key", k), ("Value", v)]) for k, v in tags.items()])])


def _read_tags(req: S3Request) -> list[tuple[str, str]]:
    # S3 requires Content-MD5 or an x-amz-checksum-* on both Put*Tagging (every SDK sends one)
    return parse_tagging(read_small_body(req, MAX_BODY, require_integrity=True))


# -- object handlers


def get_object_tagging(req: S3Request) -> Response:
    refuse_unsupported(req)
    req.bucket_for()
    return _document(req.store.stat(req.bucket, req.key).tags)


def put_object_tagging(req: S3Request) -> Response:
    refuse_unsupported(req)
    req.bucket_for(write=True)
    tags = _read_tags(req)
    req.store.set_tags(req.bucket, req.key, tags, user=req.user)
    return Response(200, [("Content-Length", "0")])


def delete_object_tagging(req: S3Request) -> Response:
    refuse_unsupported(req)
    req.bucket_for(write=True)
    req.store.set_tags(req.bucket, req.key, {}, user=req.user)
    return Response(204)


# -- bucket handlers


def get_bucket_tagging(req: S3Request) -> Response:
    req.bucket_for()
    tags = req.store.bucket_tags(req.bucket)
    if tags is None:
        raise S3Error("NoSuchTagSet", "The TagSet does not exist", 404, BucketName=req.bucket)
    return _document(tags)


def put_bucket_tagging(req: S3Request) -> Response:
    req.bucket_for(write=True)
    tags = _read_tags(req)
    req.store.set_bucket_tags(req.bucket, tags, user=req.user)
    return Response(204)


def delete_bucket_tagging(req: S3Request) -> Response:
    req.bucket_for(write=True)
    req.store.set_bucket_tags(req.bucket, None, user=req.user)
    return Response(204)
