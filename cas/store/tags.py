"""Tags: S3's key/value labels on objects and buckets, and the rules a tag set must keep.

An object's tags live in its index record (``ObjectInfo.tags``, record field ``tags``), so they
move, copy and die with it, reach the metadata log with every change of the record, and need no
block I/O to change: ``set_tags`` rewrites the record in one write txn, as WebDAV properties do.
A bucket's tags live in the bucket-keyed kv namespace ``buckettags`` (``records.BUCKET_KEYED_KV``):
logged, and deleted in the bucket's delete txn. A mixin of ``Store``.

The rules are S3's (``check_tags``): at most 10 tags on an object and 50 on a bucket; keys of
1-128 and values of 0-256 Unicode characters, without control characters; keys unique and not
in the reserved ``aws:`` prefix. A breach is ``InvalidTag``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import replace

from ..errors import InvalidTag
from .records import ObjectInfo

MAX_OBJECT_TAGS = 10
MAX_BUCKET_TAGS = 50
MAX_KEY_CHARS = 128
MAX_VALUE_CHARS = 256
#: kv namespace: bucket name -> JSON [[key, value], ...] (order kept, as the client gave it)
NS_BUCKET_TAGS = "buckettags"

_CONTROL = re.compile("[\x00-\x1f\x7f]")

Tags = Mapping[str, str] | Iterable[tuple[str, str]]


def check_tags(tags: Tags, *, limit: int = MAX_OBJECT_TAGS) -> dict[str, str]:
    """``tags`` (a mapping or (key, value) pairs) as a dict, if it keeps S3's rules; else ``InvalidTag``."""
    pairs = list(tags.items()) if isinstance(tags, Mapping) else list(tags)
    if len(pairs) > limit:
        what = "Object" if limit == MAX_OBJECT_TAGS else "Bucket"
        raise InvalidTag(f"{what} tags cannot be greater than {limit}")
    out: dict[str, str] = {}
    for key, value in pairs:
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidTag("The TagKey and TagValue you have provided must be strings")
        if not key or _CONTROL.search(key):
            raise InvalidTag("The TagKey you have provided is invalid")
        if len(key) > MAX_KEY_CHARS:
            raise InvalidTag(f"The TagKey you have provided is too long, max {MAX_KEY_CHARS}")
        if _CONTROL.search(value):
            raise InvalidTag("The TagValue you have provided is invalid")
        if len(value) > MAX_VALUE_CHARS:
            raise InvalidTag(f"The TagValue you have provided is too long, max {MAX_VALUE_CHARS}")
        if key.lower().startswith("aws:"):
            raise InvalidTag("Your TagKey cannot be prefixed with aws:")
        if key in out:
            raise InvalidTag("Cannot provide multiple Tags with the same key")
        out[key] = value
    return out


class TagsMixin:
    """Object and bucket tags (see the module docstring); mixed into ``Store``."""

    def set_tags(self, bucket: str, key: str, tags: Tags, *, user: str = "") -> ObjectInfo:
        """Replace the object's tags (empty: remove them); a record-only change, no block is touched."""
        checked = check_tags(tags)
        return self._update(bucket, key, "tagging", user, lambda info: replace(info, tags=checked))

    def bucket_tags(self, bucket: str) -> dict[str, str] | None:
        """The bucket's tags; None when it has none (S3's NoSuchTagSet)."""
        with self.index.read() as t:
            self._require_bucket(t, bucket)
            raw = t.kv_get(NS_BUCKET_TAGS, bucket)
        return None if raw is None else dict(json.loads(bytes(raw)))

    def set_bucket_tags(self, bucket: str, tags: Tags | None, *, user: str = "") -> None:
        """Replace the bucket's tags; None or an empty set removes them."""
        checked = check_tags(tags or (), limit=MAX_BUCKET_TAGS)
        with self.index.write() as t:
            self._require_bucket(t, bucket)
            if not checked:
                t.kv_delete(NS_BUCKET_TAGS, bucket)
            else:
                t.kv_put(NS_BUCKET_TAGS, bucket, json.dumps(list(checked.items())).encode())
            self._event(t, t.next_seq(), user, "bucket_tags", bucket, "")
        self._notify()
