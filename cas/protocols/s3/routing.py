"""Which handler serves a request: by level (service, bucket, object), method and subresource.

S3 names an operation by its method plus the query's subresource (``?uploads``,
``?delete``, ``?location`` ...). Known subresources that cas does not implement get a clean
``NotImplemented`` (or, for reads of bucket configuration, the minimal valid answer a
bucket without that configuration gives), never a 500.
"""

from __future__ import annotations

from collections.abc import Callable

from cas.protocols.s3 import attributes, bucket, bucketconfig, multipart, tagging
from cas.protocols.s3 import object as obj
from cas.protocols.s3.error import S3Error, not_implemented
from cas.protocols.s3.request import Response, S3Request

Handler = Callable[[S3Request], Response]

#: every S3 subresource a request can name; those without a route are NotImplemented
SUBRESOURCES = frozenset(
    ["accelerate", "acl", "analytics", "attributes", "cors", "delete", "encryption", "intelligent-tiering", "inventory", "legal-hold", "lifecycle", "location", "logging", "metadataTable", "metrics", "notification", "object-lock", "ownershipControls", "partNumber", "policy", "policyStatus", "publicAccessBlock", "renameObject", "replication", "requestPayment", "restore", "retention", "select", "session", "tagging", "torrent", "uploadId", "uploads", "versioning", "versions", "website"]
)

_BUCKET_GET: dict[str, Handler] = {
    "location": bucket.get_location,
    "versioning": bucket.get_versioning,
    "uploads": multipart.list_uploads,
    "acl": bucket.get_acl,
    "logging": bucket.get_empty_config("BucketLoggingStatus"),
    "notification": bucket.get_empty_config("NotificationConfiguration"),
    "accelerate": bucket.get_empty_config("AccelerateConfiguration"),
    "requestPayment": lambda req: (req.bucket_for(), Response.xml("RequestPaymentConfiguration", [("Payer", "BucketOwner")]))[1],
    "tagging": tagging.get_bucket_tagging,
    "policy": bucket.get_missing_config("NoSuchBucketPolicy", "The bucket policy does not exist"),
    "cors": bucketconfig.get_cors,
    "lifecycle": bucket.get_missing_config("NoSuchLifecycleConfiguration", "The lifecycle configuration does not exist"),
    "website": bucket.get_missing_config("NoSuchWebsiteConfiguration", "The specified bucket does not have a website configuration"),
    "encryption": bucket.get_missing_config(
        "ServerSideEncryptionConfigurationNotFoundError", "The server side encryption configuration was not found"
    ),
    "object-lock": bucket.get_missing_config(
        "ObjectLockConfigurationNotFoundError", "Object Lock configuration does not exist for this bucket"
    ),
    "replication": bucket.get_missing_config(
        "ReplicationConfigurationNotFoundError", "The replication configuration was not found"
    ),
    "ownershipControls": bucket.get_missing_config(
        "OwnershipControlsNotFoundError", "The bucket ownership controls were not found"
    ),
    "publicAccessBlock": bucketconfig.get_public_access_block,
    "versions": bucket.list_object_versions,
}

_BUCKET_PUT: dict[str, Handler] = {
    "cors": bucketconfig.put_cors,
    "publicAccessBlock": bucketconfig.put_public_access_block,
    "tagging": tagging.put_bucket_tagging,
}

_BUCKET_DELETE: dict[str, Handler] = {
    "cors": bucketconfig.delete_cors,
    "publicAccessBlock": bucketconfig.delete_public_access_block,
    "tagging": tagging.delete_bucket_tagging,
}

#: operations that clients send and cas does not have yet, by the name S3 gives them
_OPERATION_NAMES = {
    ("PUT", "versioning"): "PutBucketVersioning (buckets are unversioned)",
}


def route(req: S3Request) -> Handler:
    """The handler for ``req`` (raises S3Error for what has none)."""
    subs = [name for name, _ in req.query if name in SUBRESOURCES]
    method = req.method
    if not req.bucket:
        if method == "GET" and not subs:
            return bucket.list_buckets
        raise _method_not_allowed(method, "the service")
    if not req.key:
        return _bucket_route(method, subs, req)
    return _object_route(method, subs, req)


def _bucket_route(method: str, subs: list[str], req: S3Request) -> Handler:
    sub = subs[0] if subs else None
    if method in ("GET", "HEAD") and sub is None:
        if method == "HEAD":
            return bucket.head_bucket
        if req.params.get("list-type") == "2":
            return bucket.list_objects_v2
        return bucket.list_objects_v1
    if method == "GET" and sub in _BUCKET_GET:
        return _BUCKET_GET[sub]
    if method == "PUT" and sub in _BUCKET_PUT:
        return _BUCKET_PUT[sub]
    if method == "DELETE" and sub in _BUCKET_DELETE:
        return _BUCKET_DELETE[sub]
    if method == "PUT" and sub is None:
        return bucket.create_bucket
    if method == "DELETE" and sub is None:
        return bucket.delete_bucket
    if method == "POST" and sub == "delete":
        return obj.delete_objects
    if sub is not None:
        raise not_implemented(_OPERATION_NAMES.get((method, sub), f"{method} ?{sub} on a bucket"))
    raise _method_not_allowed(method, "a bucket")


def _object_route(method: str, subs: list[str], req: S3Request) -> Handler:
    # partNumber goes with uploadId for UploadPart, and alone for GET/HEAD of a part.
    names = set(subs)
    if method == "PUT":
        if names == {"partNumber", "uploadId"}:
            return multipart.upload_part
        if names == {"tagging"}:
            return tagging.put_object_tagging
        if not names:
            return obj.put_object
    elif method == "GET":
        if names == {"uploadId"}:
            return multipart.list_parts
        if names == {"acl"}:
            return bucket.get_acl
        if names == {"tagging"}:
            return tagging.get_object_tagging
        if names == {"attributes"}:
            return attributes.get_object_attributes
        if not names or names == {"partNumber"}:
            return obj.get_object
    elif method == "HEAD":
        if not names or names == {"partNumber"}:
            return obj.head_object
    elif method == "DELETE":
        if names == {"uploadId"}:
            return multipart.abort_upload
        if names == {"tagging"}:
            return tagging.delete_object_tagging
        if not names:
            return obj.delete_object
    elif method == "POST":
        if names == {"uploads"}:
            return multipart.create_upload
        if names == {"uploadId"}:
            return multipart.complete_upload
    else:
        raise _method_not_allowed(method, "an object")
    if names:
        raise not_implemented(f"{method} ?{'&'.join(sorted(names))} on an object")
    raise _method_not_allowed(method, "an object")


def _method_not_allowed(method: str, what: str) -> S3Error:
    return S3Error("MethodNotAllowed", f"The specified method ({method}) is not allowed against {what}.", 405, Method=method)
