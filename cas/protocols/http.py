"""HTTP helpers shared by every front end (S3, WebDAV, web API): one parser per header.

Range, Basic credentials and ETag conditions each have exactly one interpretation here
(``etag_matches`` is the Store's own rule for If-Match / If-None-Match on a stored ETag,
re-exported so that front ends and conditional writes can never disagree).

Range (RFC 9110 §14): :func:`parse_range` is the one interpretation of a
``Range`` header in cas. Its policy, the same for all front ends:

- no header, a unit other than ``bytes``, or any syntax error (including
  ``first > last``): the header is ignored, the answer is 200 with the whole
  body (RFC 9110 §14.2: a server MAY ignore a Range it does not understand);
- more than one range: ignored too (200 with the whole body). A correct
  ``multipart/byteranges`` answer is allowed but no client of ours needs it,
  and S3 itself ignores multi-range requests;
- one satisfiable range: 206 with exactly that range (``last`` clipped to the
  end of the representation);
- one range that is not satisfiable (starts at or beyond the end, a suffix of
  length 0, any range of an empty representation): :class:`~cas.errors.InvalidRange`,
  which every front end answers with 416 and ``Content-Range: bytes */SIZE``.

Pure functions only: no I/O, no state, safe from any thread.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import NamedTuple

from ..errors import InvalidRange
from ..store import etag_matches

__all__ = ["ByteRange", "etag_matches", "parse_basic", "parse_range", "unsatisfied_content_range"]

_DIGITS = re.compile(r"[0-9]+")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
#: bounds the work on a hostile header (the server caps header sizes anyway)
MAX_RANGE_HEADER = 8192
_HUGE = 1 << 80


class ByteRange(NamedTuple):
    """Bytes ``[start, stop)`` of a representation of ``size`` bytes (a half-open range,
    the form ``Store.open_store(range=...)`` takes)."""

    start: int
    stop: int
    size: int

    @property
    def length(self) -> int:
        return self.stop - self.start

    @property
    def content_range(self) -> str:
        """The ``Content-Range`` value of a 206 answer."""
        return f"bytes {self.start}-{self.stop - 1}/{self.size}"


def _position(digits: str) -> int:
    """A decimal position; longer numbers than any size are one huge value (Python refuses
    to convert more than a few thousand digits, and no object is that large)."""
    return int(digits) if len(digits) <= 20 else _HUGE


def unsatisfied_content_range(size: int) -> str:
    """The ``Content-Range`` value of a 416 answer (RFC 9110 §14.4)."""
    return f"bytes */{size}"


def parse_range(header: str | None, size: int) -> ByteRange | None:
    """The one range ``header`` asks for in a representation of ``size`` bytes.

    Returns None when the whole body is to be sent with 200 (no header, an
    unknown unit, invalid syntax, several ranges); raises ``InvalidRange``
    when the header asks for exactly one range and it is not satisfiable.
    """
    if header is None or size < 0:
        return None
    text = header.strip(" \t")
    if not text or len(text) > MAX_RANGE_HEADER:
        return None
    unit, eq, range_set = text.partition("=")
    if not eq or not _TOKEN.fullmatch(unit) or unit.lower() != "bytes":
        return None
    # a list (RFC 9110 §5.6.1): elements separated by commas with optional whitespace;
    # empty elements are allowed and ignored
    specs = [s.strip(" \t") for s in range_set.split(",")]
    specs = [s for s in specs if s]
    if not specs:
        return None
    parsed: list[tuple[int | None, int | None]] = []
    for spec in specs:
        first, dash, last = spec.partition("-")
        if not dash:
            return None
        if first == "":
            if not _DIGITS.fullmatch(last):
                return None
            parsed.append((None, _position(last)))  # suffix-range
            continue
        if not _DIGITS.fullmatch(first) or (last != "" and not _DIGITS.fullmatch(last)):
            return None
        a, b = _position(first), (_position(last) if last else None)
        if b is not None and b < a:
            return None  # RFC 9110 §14.1.1: invalid, so the whole header is ignored
        parsed.append((a, b))
    if len(parsed) != 1:
        return None  # several ranges: the whole body (see the module docstring)
    first_pos, last_pos = parsed[0]
    if first_pos is None:  # the last ``last_pos`` bytes
        if last_pos == 0 or size == 0:
            raise InvalidRange(f"the suffix range -{last_pos} is not satisfiable for {size} bytes")
        return ByteRange(max(0, size - last_pos), size, size)
    if first_pos >= size:
        raise InvalidRange(f"the range starts at {first_pos}, beyond the {size} bytes of the object")
    stop = size if last_pos is None else min(last_pos + 1, size)
    return ByteRange(first_pos, stop, size)


def parse_basic(header: str) -> tuple[str, str] | None:
    """(user, password) of a ``Basic`` Authorization header, or None if it is malformed.

    The credentials are UTF-8 (RFC 7617's ``charset="UTF-8"``); bytes that are not UTF-8 are
    read as latin-1, which is what older clients send.
    """
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value.strip():
        return None
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    user, sep, password = text.partition(":")
    if not sep or not user:
        return None
    return user, password
