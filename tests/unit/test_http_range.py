"""The one Range parser (cas/protocols/http.py): RFC 9110 §14 cases, and a property check."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cas.errors import InvalidRange
from cas.protocols.http import ByteRange, parse_range, unsatisfied_content_range

pytestmark = pytest.mark.unit

SIZE = 10


@pytest.mark.parametrize("header, expected", [
    ("bytes=0-1", (0, 2)),
    ("bytes=5-", (5, 10)),
    ("bytes=-3", (7, 10)),
    ("bytes=-30", (0, 10)),  # a suffix longer than the object: all of it
    ("bytes=2-100", (2, 10)),  # last clipped to the end
    ("bytes=9-9", (9, 10)),
    ("BYTES=1-2", (1, 3)),  # the unit is case-insensitive
    (" bytes=1-2 ", (1, 3)),
    ("bytes=1-2,", (1, 3)),  # empty list elements are allowed and ignored
    ("bytes= 1-2", (1, 3)),
])
def test_one_satisfiable_range(header, expected):
    rng = parse_range(header, SIZE)
    assert isinstance(rng, ByteRange)
    assert (rng.start, rng.stop) == expected
    assert rng.size == SIZE and rng.length == expected[1] - expected[0]
    assert rng.content_range == f"bytes {expected[0]}-{expected[1] - 1}/{SIZE}"


@pytest.mark.parametrize("header", [
    None, "", "bytes", "bytes=", "bytes=,", "bytes=-", "bytes=a-b", "bytes=1", "bytes=1-2-3",
    "bytes=5-2",  # first > last: invalid, not the suffix "-2"
    "items=0-1",  # another unit
    "bytes 0-1", "bytes=+1-2", "bytes=1 -2", "bytes=0x1-2", "bytes=١-٢",  # non-ASCII digits
    "bytes=0-1,5-6",  # several ranges: the whole body, not the last one
    "bytes=0-1,-2", "bytes=0-1,5-2",
    "bytes=0-1;x", "b ytes=0-1", "=0-1",
])
def test_ignored_headers_mean_the_whole_body(header):
    assert parse_range(header, SIZE) is None


@pytest.mark.parametrize("header, size", [
    ("bytes=10-", 10), ("bytes=10-20", 10), ("bytes=99-", 10),
    ("bytes=-0", 10),  # a zero-length suffix
    ("bytes=0-0", 0), ("bytes=-1", 0),  # any range of an empty representation
])
def test_unsatisfiable_range_raises_invalid_range(header, size):
    with pytest.raises(InvalidRange):
        parse_range(header, size)


def test_unsatisfied_content_range():
    assert unsatisfied_content_range(123) == "bytes */123"


def test_hostile_header_is_ignored_quickly():
    assert parse_range("bytes=" + "0-1," * 100_000, SIZE) is None
    with pytest.raises(InvalidRange):  # more digits than int() converts: still a position
        parse_range("bytes=" + "9" * 5000 + "-", SIZE)
    assert parse_range("bytes=2-" + "9" * 5000, SIZE) == (2, SIZE, SIZE)
    assert parse_range("bytes=-" + "9" * 5000, SIZE) == (0, SIZE, SIZE)


@settings(max_examples=300, deadline=None)
@given(header=st.text(max_size=40), size=st.integers(0, 1 << 40))
def test_any_header_gives_a_range_inside_the_object_or_none(header, size):
    try:
        rng = parse_range(header, size)
    except InvalidRange:
        return
    if rng is not None:
        assert 0 <= rng.start < rng.stop <= size


@settings(max_examples=300, deadline=None)
@given(first=st.integers(0, 200), last=st.integers(0, 200), size=st.integers(1, 150))
def test_int_ranges_agree_with_slicing(first, last, size):
    data = bytes(range(size))
    header = f"bytes={first}-{last}"
    if last < first:
        assert parse_range(header, size) is None
    elif first >= size:
        with pytest.raises(InvalidRange):
            parse_range(header, size)
    else:
        rng = parse_range(header, size)
        assert data[rng.start:rng.stop] == data[first:last + 1]
