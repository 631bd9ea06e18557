"""Validation of bucket names and object keys (S3 naming rules, plus our limits).

Both protocols map names through here, so a name that is refused is refused
the same way everywhere, and nothing like ``..``, ``//`` or NUL ever reaches a path.
Only names being written are checked: an object stored under a name refused
today (by an older cas) can still be read, copied away and deleted.
"""

from __future__ import annotations

import ipaddress
import re

from .errors import InvalidName, KeyTooLong
from .index.schema import max_key_bytes

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def check_bucket(name: str) -> str:
    """Return ``name`` when it is a valid S3 bucket name, else raise ``InvalidName``."""
    if not isinstance(name, str) or not _BUCKET_RE.match(name):
        raise InvalidName(
            f"invalid bucket name {name!r}: use 3-63 lower-case letters, digits, '.' or '-', "
            "starting and ending with a letter or digit"
        )
    if ".." in name or ".-" in name or "-." in name:
        raise InvalidName(f"invalid bucket name {name!r}: no '..', '.-' or '-.'")
    if name.startswith(("xn--", "sthree-")) or name.endswith(("-s3alias", "--ol-s3")):
        raise InvalidName(f"invalid bucket name {name!r}: reserved prefix or suffix")
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return name
    raise InvalidName(f"invalid bucket name {name!r}: must not look like an IP address")


def check_key(bucket: str, key: str) -> str:
    """Return ``key`` when it is a valid object key for ``bucket``, else raise ``InvalidName``."""
    if not isinstance(key, str) or not key:
        raise InvalidName("the object key is empty")
    if "\x00" in key:
        raise InvalidName("the object key contains a NUL character")
    try:
        raw = key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidName("the object key is not valid UTF-8") from None
    if key.startswith("/"):
        raise InvalidName(f"invalid key {key!r}: it must not start with '/'")
    segments = key.split("/")
    if any(seg in (".", "..") for seg in segments):
        raise InvalidName(f"invalid key {key!r}: '.' and '..' are not allowed as path segments")
    if "" in segments[:-1]:
        # as MinIO does: 'a//b' could never be reached as a WebDAV path (nor a file system one);
        # one trailing '/' stays allowed, it marks a folder ('dir/')
        raise InvalidName(f"invalid key {key!r}: empty path segments ('//') are not allowed")
    limit = max_key_bytes(bucket)
    if len(raw) > limit:
        raise KeyTooLong(f"the key is {len(raw)} bytes; at most {limit} are allowed in bucket {bucket!r}")
    return key
