"""Chunker cut points, manifest round trips and block encoding (property tests)."""

from __future__ import annotations

import io

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cas.chunker import Chunker, ChunkerParams
from cas.codec import HEADER_LEN, Codec, CodecParams
from cas.errors import ConfigError, IntegrityError
from cas.ids import block_id
from cas.manifest import Manifest
from tests.fixtures.core import bytes_of

pytestmark = pytest.mark.unit

SMALL = ChunkerParams.for_average(1024)  # small chunks so hypothesis sizes span many of them


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(min_size=0, max_size=40_000), piece=st.integers(1, 5000))
def test_chunks_reassemble_and_respect_bounds(data, piece):
    chunker = Chunker(SMALL)
    pieces = [data[i:i + piece] for i in range(0, len(data), piece)]
    chunks = [bytes(c) for c in chunker.chunks(iter(pieces))]
    assert b"".join(chunks) == data
    for c in chunks[:-1]:
        assert SMALL.min <= len(c) <= SMALL.max
    if chunks:
        assert 0 < len(chunks[-1]) <= SMALL.max


def test_cut_points_do_not_depend_on_read_sizes():
    data = bytes_of(3 << 20, seed=7)
    chunker = Chunker()
    whole = [bytes(c) for c in chunker.chunk_buffer(data)]
    streamed = [bytes(c) for c in chunker.chunks(io.BufferedReader(io.BytesIO(data), buffer_size=4099))]
    assert whole == streamed
    assert all(ChunkerParams().min <= len(c) <= ChunkerParams().max for c in whole[:-1])


def test_insertion_near_start_keeps_later_chunks():
    data = bytes_of(4 << 20, seed=3)
    chunker = Chunker()
    a = {block_id(bytes(c)) for c in chunker.chunk_buffer(data)}
    b = {block_id(bytes(c)) for c in chunker.chunk_buffer(data[:1000] + b"inserted!" + data[1000:])}
    assert len(a & b) >= len(a) - 2


@pytest.mark.parametrize("avg", [100, 8 << 20])
def test_invalid_chunker_params_are_config_errors(avg):
    with pytest.raises(ConfigError):
        Chunker(ChunkerParams.for_average(avg))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.binary(min_size=32, max_size=32), st.integers(0, 2**32 - 1)), max_size=50))
def test_manifest_round_trip(entries):
    m = Manifest.of(entries)
    back = Manifest.decode(m.encode())
    assert back == m and back.id == m.id
    assert back.size == sum(n for _, n in entries)


@settings(max_examples=100, deadline=None)
@given(lengths=st.lists(st.integers(1, 1000), min_size=1, max_size=30), data=st.data())
def test_manifest_span_covers_exactly_the_needed_blocks(lengths, data):
    m = Manifest.of((bytes([i]) * 32, n) for i, n in enumerate(lengths))
    start = data.draw(st.integers(0, m.size - 1))
    stop = data.draw(st.integers(start + 1, m.size))
    first, last, offset = m.span(start, stop)
    ends = [sum(lengths[: i + 1]) for i in range(len(lengths))]
    needed = [i for i in range(len(lengths)) if ends[i] > start and ends[i] - lengths[i] < stop]
    assert list(range(first, last)) == needed
    assert offset == (ends[first - 1] if first else 0)


def test_damaged_manifest_is_integrity_error():
    raw = Manifest.of([(b"x" * 32, 5)]).encode()
    with pytest.raises(IntegrityError):
        Manifest.decode(raw[:-1])


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=70_000))
def test_codec_round_trip(data):
    codec = Codec()
    bid = block_id(data)
    assert codec.decode(bid, codec.encode(data)) == data


def test_codec_compresses_text_and_keeps_random_raw():
    codec = Codec()
    text = b"the same words again and again " * 2000
    assert len(codec.encode(text)) < len(text) // 10
    rnd = bytes_of(65536, seed=1)
    assert len(codec.encode(rnd)) == len(rnd) + HEADER_LEN
    assert len(Codec(CodecParams("none")).encode(text)) == len(text) + HEADER_LEN


@pytest.mark.parametrize("damage", ["flip", "truncate", "header"])
def test_damaged_block_is_integrity_error(damage):
    codec = Codec()
    data = b"hello world " * 1000
    bid = block_id(data)
    enc = bytearray(codec.encode(data))
    if damage == "flip":
        enc[-5] ^= 0x40
    elif damage == "truncate":
        del enc[HEADER_LEN + 3:]
    else:
        enc[0:2] = b"XX"
    with pytest.raises(IntegrityError):
        codec.decode(bid, bytes(enc))


def test_block_with_wrong_id_is_integrity_error():
    codec = Codec()
    with pytest.raises(IntegrityError):
        codec.decode(block_id(b"other"), codec.encode(b"content"))


@pytest.mark.parametrize("bad", ["zstd", "zstd:99", "lz4:1", "gzip"])
def test_invalid_compression_is_config_error(bad):
    with pytest.raises(ConfigError):
        Codec(CodecParams(bad))
