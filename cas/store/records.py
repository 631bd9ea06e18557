"""What the Store hands out and keeps: bucket, object, upload, part and event records.

The dataclasses front ends receive (``BucketInfo``, ``ObjectInfo``, ``Listing``, ``UploadInfo``,
``PartInfo``, ``Event``), the JSON layout of an object's index record (``object_record`` /
``ObjectInfo.from_record``), bucket incarnation ids, and the ETag condition rule. One owner of
these layouts: the index stores them as given (``cas/index/schema.py`` packs keys and rows).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

log = logging.getLogger(__name__)


DEFAULT_CONTENT_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class BucketInfo:
    name: str
    owner: str
    created: float
    #: this incarnation of the name: a bucket deleted and created again (by anyone) gets a new id,
    #: so state that outlives a bucket (events, locks, properties) is never taken for the new one's
    id: str = ""

    @classmethod
    def from_record(cls, name: str, rec: dict) -> BucketInfo:
        return cls(name, rec["owner"], rec["created"], bucket_id(rec))


def bucket_id(rec: dict) -> str:
    """The incarnation id of a bucket record (records from before ids: told apart by creation time)."""
    return rec.get("id") or f"t{rec['created']!r}"


#: kv namespaces keyed by a bucket's name whose entries die with the bucket (WebDAV's properties
#: of a bucket, its S3 CORS rules, PublicAccessBlock and tags); deleted in the bucket's delete txn,
#: whichever protocol or command deletes it, and logged to the metadata log (``cas recover``)
BUCKET_KEYED_KV = ("davprops", "s3cors", "s3pab", "buckettags")


@dataclass(slots=True)  # not frozen: listings build thousands of these, and frozen init is 3x slower
class ObjectInfo:
    bucket: str
    key: str
    size: int
    etag: str
    content_type: str
    mtime: float
    metadata: Mapping[str, str] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)
    checksums: Mapping[str, str] = field(default_factory=dict)
    props: Mapping[str, str] = field(default_factory=dict)
    owner: str = ""
    seq: int = 0
    manifest_id: bytes = b""
    parts: int = 0
    #: S3 object tags (key -> value); they travel with the object (copy, move, the metadata log)
    tags: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_record(cls, bucket: str, key: str, r: dict) -> ObjectInfo:
        return cls(
            bucket, key, r["size"], r["etag"], r.get("ct") or DEFAULT_CONTENT_TYPE, r["mtime"],
            r.get("meta", {}), r.get("hdr", {}), r.get("ck", {}), r.get("props", {}),
            r.get("owner", ""), r.get("seq", 0), bytes.fromhex(r["m"]), r.get("parts", 0), r.get("tags", {}),
        )


def object_record(info: ObjectInfo) -> dict:
    r = {"size": info.size, "etag": info.etag, "ct": info.content_type, "mtime": info.mtime,
         "owner": info.owner, "seq": info.seq, "m": info.manifest_id.hex()}
    for name, value in (("meta", info.metadata), ("hdr", info.headers), ("ck", info.checksums),
                        ("props", info.props), ("parts", info.parts), ("tags", info.tags)):
        if value:
            r[name] = dict(value) if isinstance(value, Mapping) else value
    return r


@dataclass(frozen=True)
class Listing:
    entries: list[ObjectInfo]
    common_prefixes: list[str]
    truncated: bool
    next_start_after: str


@dataclass(frozen=True)
class UploadInfo:
    upload_id: str
    bucket: str
    key: str
    owner: str
    initiated: float
    content_type: str
    metadata: Mapping[str, str]
    headers: Mapping[str, str]
    #: the checksum the client declared for the whole object (e.g. "crc32", "COMPOSITE"), if any
    checksum_algorithm: str | None = None
    checksum_type: str | None = None
    #: the tags the object gets when the upload completes
    tags: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PartInfo:
    number: int
    size: int
    etag: str
    checksums: Mapping[str, str]
    mtime: float
    manifest_id: bytes = b""


@dataclass(frozen=True)
class Event:
    seq: int
    time: float
    user: str
    op: str
    bucket: str
    key: str
    size: int
    etag: str
    bucket_id: str = ""  # the bucket's incarnation (empty in events from before ids)
    owner: str = ""  # the bucket's owner when the event happened

    def to_dict(self) -> dict:
        return {"seq": self.seq, "time": self.time, "user": self.user, "op": self.op,
                "bucket": self.bucket, "key": self.key, "size": self.size, "etag": self.etag,
                "bucket_id": self.bucket_id}


def _norm_etag(etag: str) -> str:
    etag = etag.strip()
    if etag.startswith("W/"):
        etag = etag[2:]
    return etag.strip('"')


def etag_matches(condition: str, etag: str) -> bool:
    """Whether an If-Match / If-None-Match list (``"a", W/"b"`` or ``*``) names ``etag``."""
    return any(c.strip() == "*" or _norm_etag(c) == etag for c in condition.split(","))
