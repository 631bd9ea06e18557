"""Response headers of an object, safe to send: the one helper S3, WebDAV and the web API use.

What a client stored is checked on the way in (:mod:`cas.headers`), but records written by
older versions may hold anything. So every front end builds the headers of an object response
through here:

* :func:`content_type` -- the stored content type if it is a valid media type, else
  ``application/octet-stream`` (never a value with CR/LF/NUL, never one a browser might guess);
* :func:`value` -- a stored header or metadata value as it goes on the wire, or None to drop
  it; text that latin-1 cannot carry goes as its UTF-8 bytes (PEP 3333 wants "bytes as str");
* :func:`security_headers` -- ``X-Content-Type-Options: nosniff`` on every object response and,
  on the UI's origin (the ``--http`` listener: UI, /api, /dav), a sandboxing
  ``Content-Security-Policy``, so that an uploaded page can neither run script nor reach the
  UI's storage even when a browser is sent to it;
* :func:`renders_actively` -- whether a browser would render or run a type (HTML, SVG, XML,
  script, PDF, ... : anything not on a short list of passive types); those are served as
  downloads (:func:`attachment`) on the UI's origin.

Pure functions; thread-safe.
"""

from __future__ import annotations

import logging
import re
import urllib.parse
from collections.abc import Iterator, Mapping

from cas.errors import InvalidHeaderValue
from cas.headers import check_name, is_safe_value, parse_content_type

log = logging.getLogger(__name__)

FALLBACK_CONTENT_TYPE = "application/octet-stream"
#: for object bodies served on the UI's origin: no script, no subresources, an opaque origin
OBJECT_CSP = "default-src 'none'; sandbox"
NOSNIFF = ("X-Content-Type-Options", "nosniff")

#: types a browser shows without running anything (everything else may be a page or a script)
_PASSIVE = frozenset({
    "application/octet-stream", "application/json", "application/zip", "application/gzip",
    "application/x-directory", "text/plain", "text/csv",
    "image/png", "image/jpeg", "image/gif", "image/webp", "image/avif", "image/bmp",
})
_PASSIVE_FAMILIES = ("audio/", "video/", "font/")


def content_type(stored: str | None) -> str:
    """The Content-Type to send for a stored one (the fallback when it is missing or not valid)."""
    try:
        parse_content_type(stored)
    except InvalidHeaderValue:
        return FALLBACK_CONTENT_TYPE
    return stored  # type: ignore[return-value]


def value(stored: object) -> str | None:
    """A stored header value as it goes on the wire, or None when it must not be sent."""
    if not is_safe_value(stored):
        return None
    text: str = stored  # type: ignore[assignment]
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8").decode("latin-1")
    return text


def stored_pairs(stored: Mapping[str, str]) -> Iterator[tuple[str, str]]:
    """(name, wire value) of stored metadata or headers; a pair that is not safe is left out."""
    for name, text in stored.items():
        wire = value(text)
        try:
            check_name(name)
        except InvalidHeaderValue:
            wire = None
        if wire is None:
            log.debug("not sending a stored header that is not safe: %.40r", name)
            continue
        yield name, wire


def renders_actively(ctype: str | None) -> bool:
    """Whether a browser could render (HTML, SVG, XML) or run (script) a body of this type."""
    try:
        essence = parse_content_type(ctype).essence
    except InvalidHeaderValue:
        return False  # sent as the fallback type, which is passive
    return essence not in _PASSIVE and not essence.startswith(_PASSIVE_FAMILIES)


def security_headers(*, ui_origin: bool) -> list[tuple[str, str]]:
    """Headers every object response carries (see the module docstring)."""
    if ui_origin:
        return [NOSNIFF, ("Content-Security-Policy", OBJECT_CSP)]
    return [NOSNIFF]


def is_attachment(disposition: str) -> bool:
    """Whether a Content-Disposition value makes the body a download."""
    return disposition.split(";", 1)[0].strip().lower() == "attachment"


def attachment(filename: str) -> str:
    """``Content-Disposition: attachment`` keeping ``filename`` (RFC 6266: ASCII + RFC 5987 forms)."""
    name = filename or "download"
    ascii_name = re.sub(r"[^A-Za-z0-9._ -]", "_", name)
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{urllib.parse.quote(name, safe='')}"


__all__ = ["FALLBACK_CONTENT_TYPE", "OBJECT_CSP", "attachment", "content_type",
           "is_attachment", "renders_actively", "security_headers", "stored_pairs", "value"]
