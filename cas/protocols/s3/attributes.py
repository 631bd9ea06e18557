"""GetObjectAttributes (``GET /bucket/key?attributes``): an object's facts without its bytes.

The client names what it wants in ``x-amz-object-attributes`` (comma-separated: ``ETag``,
``Checksum``, ``ObjectParts``, ``StorageClass``, ``ObjectSize``); an unknown name is
``InvalidArgument``, a missing header ``InvalidRequest``. Everything comes from the object's
record (one index read, no block I/O). As in S3, the ETag is unquoted, ``Checksum`` and
``ObjectParts`` appear only for objects that have a checksum or were uploaded in parts, and a
COMPOSITE checksum is given without its ``-N`` suffix (``ChecksumType`` says which kind it is).
cas does not keep each part's size and checksum once an upload is complete, so ``ObjectParts``
carries the part count (``PartsCount``) and no ``Part`` list.
"""

from __future__ import annotations

from cas.protocols.s3 import checksum, xml
from cas.protocols.s3.error import S3Error, invalid_argument
from cas.protocols.s3.object import refuse_unsupported
from cas.protocols.s3.request import Response, S3Request, non_negative_int

HEADER = "x-amz-object-attributes"
ATTRIBUTES = ("ETag", "Checksum", "ObjectParts", "StorageClass", "ObjectSize")
MAX_PARTS = 1000


def _wanted(req: S3Request) -> set[str]:
    text = req.headers.get(HEADER)
    if text is None or not text.strip():
        raise S3Error("InvalidRequest", f"Missing required header for this request: {HEADER}", 400)
    names = {name.strip() for name in text.split(",") if name.strip()}
    unknown = sorted(names - set(ATTRIBUTES))
    if unknown:
        raise invalid_argument("Invalid attribute name specified.", HEADER, unknown[0])
    return names


def get_object_attributes(req: S3Request) -> Response:
    refuse_unsupported(req)
    req.bucket_for()
    wanted = _wanted(req)
    max_parts = min(non_negative_int(req.headers.get("x-amz-max-parts"), "x-amz-max-parts", MAX_PARTS), MAX_PARTS)
    marker = non_negative_int(req.headers.get("x-amz-part-number-marker"), "x-amz-part-number-marker", 0)
    info = req.store.stat(req.bucket, req.key)
    children: list = []
    if "ETag" in wanted:
        children.append(("ETag", info.etag))
    if "Checksum" in wanted and info.checksums:
        sums: list = []
        for algorithm, value in info.checksums.items():
            sums.append(("Checksum" + algorithm.upper(), value.split("-")[0]))
        kind = checksum.COMPOSITE if any("-" in v for v in info.checksums.values()) else checksum.FULL_OBJECT
        children.append(("Checksum", [*sums, ("ChecksumType", kind)]))
    if "ObjectParts" in wanted and info.parts:
        children.append(("ObjectParts", [
            ("PartsCount", info.parts),
            ("PartNumberMarker", marker),
            ("NextPartNumberMarker", marker),
            ("MaxParts", max_parts),
            ("IsTruncated", False),
        ]))
    if "StorageClass" in wanted:
        children.append(("StorageClass", "STANDARD"))
    if "ObjectSize" in wanted:
        children.append(("ObjectSize", info.size))
    return Response.xml("GetObjectAttributesOutput", children, headers=[("Last-Modified", xml.http_time(info.mtime))])
