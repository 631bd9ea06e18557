"""Multipart uploads: Create, UploadPart, UploadPartCopy, Complete, Abort, ListParts, ListMultipartUploads.

Parts become blocks as they arrive (``Store.upload_part``); completing binds them as one
object (``Store.complete_upload``, which re-cuts the few blocks around each part boundary so
the manifest is a single PUT's; no part is read whole). The checksum the client declares when it creates the
upload (``x-amz-checksum-algorithm`` / ``-type``) is kept on the upload. The object's
checksum is computed from the parts' checksums: COMPOSITE (checksum of checksums, ``-N``)
or FULL_OBJECT (CRCs combined with the parts' lengths, no data read again).

Uploads older than ``gc.upload_expiry`` are aborted (checked from CreateMultipartUpload, at
most once an hour or once per expiry period if shorter); their blocks become garbage for GC.
"""

from __future__ import annotations

import threading
import time

from cas.errors import InvalidPart, UploadNotFound
from cas.protocols.s3 import checksum, xml
from cas.protocols.s3.error import S3Error, invalid_argument
from cas.protocols.s3.object import (
    _write_conditions,
    check_read_conditions,
    parse_copy_source,
    refuse_unsupported,
)
from cas.protocols.s3.payload import Payload, read_small_body
from cas.protocols.s3.request import Response, S3Request, quote_etag

MAX_PARTS = 10_000
_expiry_lock = threading.Lock()
_last_expiry = [0.0]
EXPIRY_EVERY = 3600.0


def _owner(name: str) -> list:
    return [("ID", name), ("DisplayName", name)]


def _upload_for(req: S3Request, upload_id: str):
    """The upload, if it exists under this request's bucket and key and the user may use it."""
    req.bucket_for()
    try:
        info = req.store.upload(upload_id)
    except UploadNotFound:
        raise S3Error("NoSuchUpload", "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.", 404, UploadId=upload_id) from None
    if info.bucket != req.bucket or info.key != req.key:
        raise S3Error("NoSuchUpload", "The specified upload does not exist for this key.", 404, UploadId=upload_id)
    return info


def _part_number(req: S3Request) -> int:
    text = req.params.get("partNumber", "")
    try:
        number = int(text)
    except ValueError:
        number = 0
    if not 1 <= number <= MAX_PARTS:
        raise invalid_argument("Part number must be an integer between 1 and 10000, inclusive", "partNumber", text)
    return number


def _expire_old_uploads(req: S3Request) -> None:
    max_age = req.settings.gc.upload_expiry
    now = time.monotonic()
    with _expiry_lock:
        if _last_expiry[0] and now - _last_expiry[0] < min(EXPIRY_EVERY, max_age):
            return
        _last_expiry[0] = now
    req.store.expire_uploads(max_age)


# -- handlers


def create_upload(req: S3Request) -> Response:
    refuse_unsupported(req)
    req.bucket_for(write=True)
    _expire_old_uploads(req)
    algorithm = (req.headers.get("x-amz-checksum-algorithm") or "").lower() or None
    kind = (req.headers.get("x-amz-checksum-type") or "").upper() or None
    if algorithm is not None and not checksum.is_algorithm(algorithm):
        raise invalid_argument("Checksum algorithm provided is unsupported.", "x-amz-checksum-algorithm", algorithm)
    if kind is not None and kind not in (checksum.FULL_OBJECT, checksum.COMPOSITE):
        raise invalid_argument("Value for x-amz-checksum-type header is invalid.", "x-amz-checksum-type", kind)
    if kind is not None and algorithm is None:
        raise S3Error("InvalidRequest", "The x-amz-checksum-type header can only be used with the x-amz-checksum-algorithm header.", 400)
    if algorithm is not None and kind is None:
        kind = checksum.FULL_OBJECT if algorithm == "crc64nvme" else checksum.COMPOSITE
    if kind == checksum.FULL_OBJECT and not checksum.supports_full_object(algorithm):
        raise S3Error("InvalidRequest", f"The FULL_OBJECT checksum type cannot be used with the {algorithm.upper()} checksum algorithm.", 400)
    if kind == checksum.COMPOSITE and algorithm == "crc64nvme":
        raise S3Error("InvalidRequest", "The COMPOSITE checksum type cannot be used with the CRC64NVME checksum algorithm.", 400)
    upload_id = req.store.create_upload(
        req.bucket,
        req.key,
        user=req.user,
        content_type=req.headers.get("content-type"),
        metadata=req.metadata(),
        headers=req.stored_headers(),
        checksum_algorithm=algorithm,
        checksum_type=kind,
        tags=req.tags(),
    )
    headers = []
    if algorithm is not None:
        headers = [("x-amz-checksum-algorithm", algorithm.upper()), ("x-amz-checksum-type", kind)]
    return Response.xml(
        "InitiateMultipartUploadResult",
        [("Bucket", req.bucket), ("Key", req.key), ("UploadId", upload_id)],
        headers=headers,
    )


def upload_part(req: S3Request) -> Response:
    if "x-amz-copy-source" in req.headers:
        return upload_part_copy(req)
    refuse_unsupported(req)
    upload_id = req.params["uploadId"]
    number = _part_number(req)
    req.bucket_for(write=True)
    declared = _upload_for(req, upload_id).checksum_algorithm
    payload = Payload(req, default_algorithm=declared or "crc64nvme")
    if declared is not None and payload.algorithm != declared:
        raise S3Error(
            "InvalidRequest",
            f"Checksum Type mismatch occurred, expected checksum Type: {declared}, actual checksum Type: {payload.algorithm}",
            400,
        )
    try:
        part = req.store.upload_part(
            upload_id,
            number,
            payload.reader,
            expected_md5=payload.expected_md5,
            expected_size=payload.size,
            hashers=payload.hashers,
            before_commit=payload.before_commit,
        )
    except UploadNotFound:
        raise S3Error("NoSuchUpload", "The specified upload does not exist.", 404, UploadId=upload_id) from None
    headers = [("ETag", quote_etag(part.etag)), ("Content-Length", "0")]
    headers += payload.response_headers(part.checksums)
    return Response(200, headers)


def upload_part_copy(req: S3Request) -> Response:
    refuse_unsupported(req)
    upload_id = req.params["uploadId"]
    number = _part_number(req)
    src_bucket, src_key = parse_copy_source(req)
    req.bucket_for(src_bucket)
    req.bucket_for(write=True)
    upload = _upload_for(req, upload_id)
    src = req.store.stat(src_bucket, src_key)
    if check_read_conditions(req.headers, src, "x-amz-copy-source-") is not None:
        raise S3Error("PreconditionFailed", "At least one of the pre-conditions you specified did not hold", 412)
    byte_range = _copy_range(req.headers.get("x-amz-copy-source-range"), src.size)
    declared = upload.checksum_algorithm
    if byte_range is None and (declared is None or _full_object_value(src, declared) is not None):
        # Whole object: the store binds the source's manifest (no block I/O).
        checksums = {declared: _full_object_value(src, declared)} if declared is not None else None
        part = req.store.upload_part_copy(upload_id, number, src_bucket, src_key, checksums=checksums)
    else:
        # A range (or a checksum the source lacks): streamed through the write path.
        algorithm = declared or "crc64nvme"
        part = req.store.upload_part_copy(
            upload_id,
            number,
            src_bucket,
            src_key,
            range=byte_range,
            hashers={algorithm: checksum.new_hasher(algorithm)},
            before_commit=lambda result: {algorithm: checksum.b64(result.digests[algorithm])},
        )
    checksums = part.checksums
    children = [("ETag", quote_etag(part.etag)), ("LastModified", xml.iso_time(part.mtime))]
    for algorithm, value in checksums.items():
        children.append(("Checksum" + algorithm.upper(), value))
    return Response.xml("CopyPartResult", children, headers=[("x-amz-copy-source-version-id", "null")])


def _full_object_value(info, algorithm: str) -> str | None:
    value = info.checksums.get(algorithm)
    return value if value is not None and "-" not in value else None


def _copy_range(text: str | None, size: int) -> tuple[int, int] | None:
    if text is None:
        return None
    message = (
        "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are "
        "the zero-based offsets of the first and last bytes to copy"
    )
    unit, _, spec = text.strip().partition("=")
    first, dash, last = spec.partition("-")
    try:
        if unit != "bytes" or not dash:
            raise ValueError(text)
        start, stop = int(first), int(last) + 1
    except ValueError:
        raise invalid_argument(message, "x-amz-copy-source-range", text) from None
    if start < 0 or stop <= start:
        raise invalid_argument(message, "x-amz-copy-source-range", text)
    if stop > size:
        raise invalid_argument(f"Range specified is not valid for source object of size: {size}", "x-amz-copy-source-range", text)
    return (start, stop)


def parse_complete_request(body: bytes) -> list[tuple[int, str, dict[str, str]]]:
    """A CompleteMultipartUpload body as [(part number, ETag, {algorithm: checksum})].

    Raises S3Error or MalformedXML if the body is not a valid list of parts.
    """
    root = xml.parse(body, "CompleteMultipartUpload")
    requested = []
    for element in xml.children(root, "Part"):
        number_text = xml.child_text(element, "PartNumber")
        etag = xml.child_text(element, "ETag")
        if number_text is None or etag is None:
            raise S3Error("MalformedXML", "Every Part must have a PartNumber and an ETag.", 400)
        try:
            number = int(number_text)
        except ValueError:
            raise S3Error("MalformedXML", "PartNumber must be an integer.", 400) from None
        sums = {}
        for algorithm in checksum.ALGORITHMS:
            value = xml.child_text(element, "Checksum" + algorithm.upper())
            if value is not None:
                sums[algorithm] = value.strip()
        requested.append((number, etag.strip(), sums))
    if not requested:
        raise S3Error("MalformedXML", "You must specify at least one part.", 400)
    if len(requested) > MAX_PARTS:
        raise S3Error("MalformedXML", f"At most {MAX_PARTS} parts.", 400)
    return requested


def complete_upload(req: S3Request) -> Response:
    upload_id = req.params["uploadId"]
    req.bucket_for(write=True)
    upload = _upload_for(req, upload_id)
    body = read_small_body(req, 4 << 20)
    requested = parse_complete_request(body)
    declared, kind = upload.checksum_algorithm, upload.checksum_type
    stored = {p.number: p for p in req.store.list_parts(upload_id)}
    part_sums = []
    for number, etag, sums in requested:
        part = stored.get(number)
        if part is None:
            continue  # the store reports the missing part as InvalidPart
        have = dict(part.checksums)
        for algorithm, value in sums.items():
            if have.get(algorithm) is not None and have[algorithm] != value:
                raise InvalidPart(f"The {algorithm.upper()} of part {number} does not match the uploaded part.")
        part_sums.append((have, part.size))
    final = _object_checksum(declared, kind, part_sums, len(requested))
    claimed = checksum.requested_checksums(req.headers)
    for algorithm, value in claimed.items():
        if final.get(algorithm) is not None and final[algorithm].split("-")[0] != value.split("-")[0]:
            raise S3Error("BadDigest", f"The {algorithm.upper()} you specified did not match the calculated checksum.", 400)
    size_claim = req.headers.get("x-amz-mp-object-size")
    if (size_claim is not None and len(part_sums) == len(requested)
            and size_claim != str(sum(size for _, size in part_sums))):
        raise S3Error("InvalidRequest", "The provided x-amz-mp-object-size does not match the parts.", 400)
    if_match, if_none_match = _write_conditions(req)
    info = req.store.complete_upload(
        upload_id,
        [(number, etag) for number, etag, _ in requested],
        user=req.user,
        checksums=final,
        if_match=if_match,
        if_none_match=if_none_match,
    )
    children = [
        ("Location", f"/{req.bucket}/{req.key}"),
        ("Bucket", req.bucket),
        ("Key", req.key),
        ("ETag", quote_etag(info.etag)),
    ]
    for algorithm, value in info.checksums.items():
        children.append(("Checksum" + algorithm.upper(), value))
        children.append(("ChecksumType", checksum.COMPOSITE if "-" in value else checksum.FULL_OBJECT))
    return Response.xml("CompleteMultipartUploadResult", children)


def _object_checksum(declared, kind, part_sums, count: int) -> dict[str, str]:
    """The whole object's checksum from its parts' (see the module docstring)."""
    if len(part_sums) != count or not part_sums:
        return {}
    if declared is not None:
        values = [have.get(declared) for have, _ in part_sums]
        if any(v is None or "-" in v for v in values):
            return {}
        if kind == checksum.COMPOSITE:
            return {declared: checksum.composite(declared, values)}
        return {declared: checksum.combine(declared, [(v, size) for v, (_, size) in zip(values, part_sums)])}
    # Nothing declared: if every part has the same CRC, the object gets the combined CRC.
    common = set.intersection(*(set(have) for have, _ in part_sums))
    for algorithm in ("crc64nvme", "crc32c", "crc32"):
        if algorithm in common:
            values = [have[algorithm] for have, _ in part_sums]
            if all("-" not in v for v in values):
                return {algorithm: checksum.combine(algorithm, [(v, size) for v, (_, size) in zip(values, part_sums)])}
    return {}


def abort_upload(req: S3Request) -> Response:
    upload_id = req.params["uploadId"]
    req.bucket_for(write=True)
    _upload_for(req, upload_id)
    try:
        req.store.abort_upload(upload_id)
    except UploadNotFound:
        raise S3Error("NoSuchUpload", "The specified upload does not exist.", 404, UploadId=upload_id) from None
    return Response(204)


def list_parts(req: S3Request) -> Response:
    upload_id = req.params["uploadId"]
    upload = _upload_for(req, upload_id)
    marker = _int_param(req, "part-number-marker", 0)
    max_parts = min(_int_param(req, "max-parts", 1000), 1000)
    declared, kind = upload.checksum_algorithm, upload.checksum_type
    parts = [p for p in req.store.list_parts(upload_id) if p.number > marker]
    page, truncated = parts[:max_parts], len(parts) > max_parts
    children = [
        ("Bucket", req.bucket),
        ("Key", req.key),
        ("UploadId", upload_id),
        ("Initiator", _owner(upload.owner)),
        ("Owner", _owner(upload.owner)),
        ("StorageClass", "STANDARD"),
        ("PartNumberMarker", marker),
        ("NextPartNumberMarker", page[-1].number if page else marker),
        ("MaxParts", max_parts),
        ("IsTruncated", truncated),
    ]
    if declared is not None:
        children += [("ChecksumAlgorithm", declared.upper()), ("ChecksumType", kind)]
    for part in page:
        item = [
            ("PartNumber", part.number),
            ("LastModified", xml.iso_time(part.mtime)),
            ("ETag", quote_etag(part.etag)),
            ("Size", part.size),
        ]
        for algorithm, value in part.checksums.items():
            item.append(("Checksum" + algorithm.upper(), value))
        children.append(("Part", item))
    return Response.xml("ListPartsResult", children)


def list_uploads(req: S3Request) -> Response:
    req.bucket_for()
    prefix = req.params.get("prefix", "")
    delimiter = req.params.get("delimiter", "")
    key_marker = req.params.get("key-marker", "")
    id_marker = req.params.get("upload-id-marker", "")
    max_uploads = min(_int_param(req, "max-uploads", 1000), 1000)
    encode = (lambda t: t) if req.params.get("encoding-type") is None else _url
    uploads = req.store.list_uploads(req.bucket, prefix)
    entries: list = []
    prefixes: list[str] = []
    truncated = False
    next_key = next_id = ""
    for up in uploads:
        if key_marker and (up.key < key_marker or (up.key == key_marker and (not id_marker or up.upload_id <= id_marker))):
            continue
        if delimiter:
            rest = up.key[len(prefix):]
            cut = rest.find(delimiter)
            if cut >= 0:
                common = prefix + rest[: cut + len(delimiter)]
                if common not in prefixes:
                    if len(entries) + len(prefixes) >= max_uploads:
                        truncated = True
                        break
                    prefixes.append(common)
                continue
        if len(entries) + len(prefixes) >= max_uploads:
            truncated = True
            break
        entries.append(up)
        next_key, next_id = up.key, up.upload_id
    children = [
        ("Bucket", req.bucket),
        ("KeyMarker", encode(key_marker)),
        ("UploadIdMarker", id_marker),
        ("NextKeyMarker", encode(next_key)),
        ("NextUploadIdMarker", next_id),
        ("MaxUploads", max_uploads),
        ("IsTruncated", truncated),
    ]
    if prefix:
        children.append(("Prefix", encode(prefix)))
    if delimiter:
        children.append(("Delimiter", encode(delimiter)))
    if "encoding-type" in req.params:
        children.append(("EncodingType", "url"))
    for up in entries:
        children.append(
            (
                "Upload",
                [
                    ("Key", encode(up.key)),
                    ("UploadId", up.upload_id),
                    ("Initiator", _owner(up.owner)),
                    ("Owner", _owner(up.owner)),
                    ("StorageClass", "STANDARD"),
                    ("Initiated", xml.iso_time(up.initiated)),
                ],
            )
        )
    children += [("CommonPrefixes", [("Prefix", encode(p))]) for p in prefixes]
    return Response.xml("ListMultipartUploadsResult", children)


def _url(text: str) -> str:
    from urllib.parse import quote

    return quote(text.encode("utf-8"), safe="/")


def _int_param(req: S3Request, name: str, default: int) -> int:
    text = req.params.get(name)
    if text is None:
        return default
    try:
        value = int(text)
    except ValueError:
        raise invalid_argument(f"Provided {name} not an integer or within integer range", name, text) from None
    if value < 0:
        raise invalid_argument(f"Provided {name} must be non-negative", name, text)
    return value
