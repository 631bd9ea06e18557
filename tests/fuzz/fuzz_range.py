"""Fuzz target: the HTTP Range header parser.

Input: ``<size>\\n<Range header>`` (latin-1, as a WSGI header arrives). Property: the parser
returns None (serve the whole object) or a (start, stop) with 0 <= start < stop, or raises
a :class:`~cas.errors.CasError` (InvalidRange); never another exception, never a hang.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cas.errors import CasError
from cas.protocols.http import parse_range as _parse_range

MAX_SIZE = 1 << 63


def parse_range(header: str, size: int):
    """The parser under test: the one Range parser all front ends share, as (start, stop)."""
    r = _parse_range(header, size)
    if r is not None:
        assert r.stop <= size and r.length == r.stop - r.start, r
    return None if r is None else (r.start, r.stop)


SEEDS = [
    b"100\nbytes=0-9",
    b"100\nbytes=-10",
    b"100\nbytes=90-",
    b"0\nbytes=-1",
    b"100\nbytes=5-4",
    b"100\nbytes=0-0,5-6",
    b"100\nitems=0-1",
    b"1000\n bytes = 10 - 20 ",
    b"18446744073709551616\nbytes=18446744073709551615-",
]


def one_input(data: bytes) -> None:
    size_text, _, header = data.decode("latin-1").partition("\n")
    size = int(size_text) if size_text.isascii() and size_text.isdigit() and len(size_text) < 20 else 0
    size = min(size, MAX_SIZE)
    try:
        result = parse_range(header, size)
    except CasError:
        return
    if result is None:
        return
    start, stop = result
    assert isinstance(start, int) and isinstance(stop, int), result
    assert 0 <= start < stop, result


if __name__ == "__main__":
    from tests.fuzz.harness import main

    main(one_input, SEEDS, "range")
