"""Bucket configurations kept by cas: CORS (``?cors``) and PublicAccessBlock (``?publicAccessBlock``).

Each is one JSON record in a bucket-keyed kv namespace (``cas.store.records.BUCKET_KEYED_KV``):
written to the metadata log like any name, so ``cas recover`` brings it back, and deleted in the
bucket's own delete txn, so a bucket created again under the name starts without it. A write
checks, in its kv txn, that the bucket is still the incarnation the caller was allowed to use.

Only the bucket's owner (or root) reads or changes a configuration: the anonymous reader gets
AccessDenied even for a GET. The CORS rules take effect in :mod:`cas.protocols.s3.cors`. The
PublicAccessBlock is stored and answered but not yet enforced: cas has no public ACLs or bucket
policies for it to override (it will bind them when they arrive).
"""

from __future__ import annotations

import json

from cas.errors import BucketNotFound
from cas.protocols.s3 import cors, xml
from cas.protocols.s3.error import S3Error
from cas.protocols.s3.payload import read_small_body
from cas.protocols.s3.request import Response, S3Request

#: kv namespace of the buckets' PublicAccessBlock configurations (bucket name -> JSON)
NS_PUBLIC_ACCESS_BLOCK = "s3pab"
PUBLIC_ACCESS_FLAGS = ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")
MAX_CONFIG_BYTES = 64 * 1024
_MALFORMED = "The XML you provided was not well-formed or did not validate against our published schema"


def _owned_bucket(req: S3Request):
    """The request's bucket if the caller may configure it (its owner or root; never anonymous)."""
    info = req.bucket_for()
    if req.principal.anonymous:
        raise S3Error("AccessDenied", "Access Denied", 403)
    return info


def _save(req: S3Request, info, ns: str, value: bytes) -> None:
    with req.store.kv_write() as kv:
        now = kv.bucket(req.bucket)
        if now is None or now.id != info.id:  # deleted (and maybe created again) since the check
            raise BucketNotFound(f"bucket {req.bucket!r} does not exist")
        kv.put(ns, req.bucket, value)


# -- CORS


def put_cors(req: S3Request) -> Response:
    info = _owned_bucket(req)
    body = read_small_body(req, MAX_CONFIG_BYTES, require_integrity=True)
    rules = cors.parse_configuration(body)
    _save(req, info, cors.NS_CORS, cors.rules_to_json(rules))
    return Response(200, [("Content-Length", "0")])


def get_cors(req: S3Request) -> Response:
    _owned_bucket(req)
    raw = req.store.kv_get(cors.NS_CORS, req.bucket)
    if raw is None:
        raise S3Error("NoSuchCORSConfiguration", "The CORS configuration does not exist", 404, BucketName=req.bucket)
    return cors.configuration_xml(cors.rules_from_json(raw))


def delete_cors(req: S3Request) -> Response:
    _owned_bucket(req)
    req.store.kv_delete(cors.NS_CORS, req.bucket)
    return Response(204)


# -- PublicAccessBlock


def put_public_access_block(req: S3Request) -> Response:
    info = _owned_bucket(req)
    body = read_small_body(req, MAX_CONFIG_BYTES, require_integrity=True)
    flags = parse_public_access_block(body)
    _save(req, info, NS_PUBLIC_ACCESS_BLOCK, json.dumps(flags).encode())
    return Response(200, [("Content-Length", "0")])


def get_public_access_block(req: S3Request) -> Response:
    _owned_bucket(req)
    raw = req.store.kv_get(NS_PUBLIC_ACCESS_BLOCK, req.bucket)
    if raw is None:
        raise S3Error("NoSuchPublicAccessBlockConfiguration", "The public access block configuration was not found",
                      404, BucketName=req.bucket)
    flags = json.loads(raw)
    return Response.xml("PublicAccessBlockConfiguration", [(name, bool(flags.get(name))) for name in PUBLIC_ACCESS_FLAGS])


def delete_public_access_block(req: S3Request) -> Response:
    _owned_bucket(req)
    req.store.kv_delete(NS_PUBLIC_ACCESS_BLOCK, req.bucket)
    return Response(204)


def parse_public_access_block(body: bytes) -> dict[str, bool]:
    """The four flags of a PutPublicAccessBlock body (an absent one is false, as in S3)."""
    root = xml.parse(body, "PublicAccessBlockConfiguration")
    flags = dict.fromkeys(PUBLIC_ACCESS_FLAGS, False)
    seen = set()
    for child in root:
        name = xml.local_name(child)
        text = (child.text or "").strip().lower()
        if name not in flags or name in seen or len(child) or text not in ("true", "false"):
            raise S3Error("MalformedXML", _MALFORMED, 400)
        seen.add(name)
        flags[name] = text == "true"
    return flags
