"""Header values that are safe to store and send back: the content type, user metadata, and
the "system" headers S3 keeps (Content-Disposition, Cache-Control, ...).

Every protocol stores these values as the client gave them and later echoes them as response
headers, to other users and anonymous readers too. A value holding CR, LF, NUL or another
control character would let its writer add headers (``Set-Cookie``) or a whole second response
to someone else's download, so :class:`~cas.store.Store` refuses such a value on every path
that stores one (``put``, ``copy``, ``create_upload``) and the front ends check what they echo
from a request (S3's ``response-content-*``) with the same functions. The response side
(older records, security headers) is :mod:`cas.protocols.headers`.

Rules (RFC 9110 §5.5 field values, §8.3.1 media types):

* a value is a ``str`` of at most :data:`MAX_VALUE` characters with no control character
  other than HTAB (so no CR, LF, NUL or DEL); non-ASCII text is allowed (it is obs-text on
  the wire, and S3 metadata is UTF-8);
* a content type is ``type "/" subtype *( OWS ";" OWS parameter )`` with token names and
  token or quoted-string parameter values, at most :data:`MAX_CONTENT_TYPE` characters;
* user metadata names are tokens; names plus values take at most :data:`MAX_METADATA_BYTES`
  bytes of UTF-8 (S3's limit on user-defined metadata; its limit on the whole request header
  is 8 KiB, hence :data:`MAX_VALUE`).

Pure functions; thread-safe. Errors are :class:`~cas.errors.InvalidHeaderValue` (a
``BadRequest``: 400 in every protocol).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import InvalidHeaderValue

MAX_CONTENT_TYPE = 1024
MAX_VALUE = 8192
MAX_METADATA_BYTES = 2048

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_TOKEN_RE = re.compile(_TOKEN)
_QUOTED = r'"(?:[\t \x21\x23-\x5b\x5d-\x7e\x80-\U0010ffff]|\\[\t \x21-\x7e\x80-\U0010ffff])*"'
_MEDIA_TYPE = re.compile(rf"({_TOKEN})/({_TOKEN})")
_PARAMETER = re.compile(rf"[ \t]*;[ \t]*(?:({_TOKEN})=({_TOKEN}|{_QUOTED}))?")
_TRAILING_OWS = re.compile(r"[ \t]*")


@dataclass(frozen=True)
class ContentType:
    """A parsed media type; ``essence`` is ``type/subtype`` in lower case."""

    type: str
    subtype: str
    params: tuple[tuple[str, str], ...] = ()

    @property
    def essence(self) -> str:
        return f"{self.type}/{self.subtype}".lower()


def check_value(name: str, value: object, limit: int = MAX_VALUE) -> str:
    """``value`` when it can be stored and sent back as the header ``name``; else InvalidHeaderValue."""
    if not isinstance(value, str):
        raise InvalidHeaderValue(f"{name}: the value must be a string")
    if len(value) > limit:
        raise InvalidHeaderValue(f"{name}: the value is {len(value)} characters long; at most {limit} are allowed")
    if _CONTROL.search(value):
        raise InvalidHeaderValue(f"{name}: the value contains a control character (CR, LF, NUL, ...)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidHeaderValue(f"{name}: the value is not valid text") from None
    return value


def is_safe_value(value: object, limit: int = MAX_VALUE) -> bool:
    """Whether :func:`check_value` accepts ``value`` (for values read back from older records)."""
    try:
        check_value("value", value, limit)
    except InvalidHeaderValue:
        return False
    return True


def parse_content_type(value: object) -> ContentType:
    """The media type of a Content-Type value (RFC 9110 grammar); else InvalidHeaderValue."""
    text = check_value("Content-Type", value, MAX_CONTENT_TYPE)
    match = _MEDIA_TYPE.match(text)
    if match is None:
        raise InvalidHeaderValue(f"Content-Type: {text[:100]!r} is not a media type (type/subtype)")
    params = []
    pos = match.end()
    while pos < len(text):
        param = _PARAMETER.match(text, pos)
        if param is None or param.end() == pos:
            if _TRAILING_OWS.fullmatch(text, pos):
                break
            raise InvalidHeaderValue(f"Content-Type: {text[:100]!r} has a malformed parameter")
        if param.group(1):
            params.append((param.group(1), param.group(2)))
        pos = param.end()
    return ContentType(match.group(1), match.group(2), tuple(params))


def check_content_type(value: object) -> str | None:
    """``value`` unchanged when it is a valid Content-Type; None for None or ""; else InvalidHeaderValue."""
    if value is None or value == "":
        return None
    parse_content_type(value)
    return value  # type: ignore[return-value]  # parse_content_type checked it is a str


def check_name(name: object, what: str = "header") -> str:
    """``name`` when it is an HTTP field-name token."""
    if not isinstance(name, str) or not _TOKEN_RE.fullmatch(name):
        raise InvalidHeaderValue(f"{str(name)[:100]!r} is not a valid {what} name")
    return name


def check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """User metadata (names without ``x-amz-meta-``) that can be stored and sent back."""
    out: dict[str, str] = {}
    size = 0
    for name, value in (metadata or {}).items():
        check_name(name, "metadata")
        check_value(f"x-amz-meta-{name}", value)
        size += len(name.encode()) + len(value.encode())
        out[name] = value
    if size > MAX_METADATA_BYTES:
        raise InvalidHeaderValue(f"the user metadata takes {size} bytes; at most {MAX_METADATA_BYTES} are allowed")
    return out


def check_headers(headers: Mapping[str, str] | None) -> dict[str, str]:
    """Stored "system" headers (lower-case name -> value) that can be sent back."""
    out: dict[str, str] = {}
    for name, value in (headers or {}).items():
        check_name(name)
        out[name] = check_value(name, value)
    return out
