"""``cas.recut``: parts chunked one by one, re-cut at their boundaries, give the single stream's cuts.

The module docstring proves it; these tests check the proof against the pinned chunker, on the
cases it distinguishes: content-defined cuts, ``max`` cuts (runs of one byte), parts shorter than
the least chunk, a part that is one block, empty parts, the last part, and how many blocks a
re-cut reads.
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cas.chunker import Chunker, ChunkerParams
from cas.ids import block_id
from cas.manifest import Manifest
from cas.recut import Recut

pytestmark = pytest.mark.unit

SMALL = Chunker(ChunkerParams.for_average(4096))  # min 1 KiB, avg 4 KiB, max 16 KiB: many cuts, fast
DEFAULT = Chunker(ChunkerParams())


def noise(n: int, seed: int = 0) -> bytes:
    return hashlib.shake_256(seed.to_bytes(8, "big")).digest(n)


class Blocks:
    """Chunks by id, with a count of the blocks read (what a store's ``read_blocks`` would fetch)."""

    def __init__(self):
        self.data: dict[bytes, bytes] = {}
        self.reads = 0

    def manifest(self, chunker: Chunker, body: bytes) -> Manifest:
        entries = []
        for view in chunker.chunk_buffer(body):
            chunk = bytes(view)
            self.data[block_id(chunk)] = chunk
            entries.append((block_id(chunk), len(chunk)))
        return Manifest.of(entries)

    def read(self, ids: list[bytes]) -> list[bytes]:
        self.reads += len(ids)
        return [self.data[i] for i in ids]


def split(body: bytes, sizes) -> list[bytes]:
    parts, pos = [], 0
    for n in sizes:
        parts.append(body[pos:pos + n])
        pos += n
    if pos < len(body):
        parts.append(body[pos:])
    return parts


def recut(chunker: Chunker, parts: list[bytes]) -> tuple[Manifest, Recut, Blocks]:
    """The re-cut manifest of ``parts`` (each chunked alone, as uploaded), with the recut and reads."""
    blocks = Blocks()
    manifests = [blocks.manifest(chunker, p) for p in parts]
    blocks.reads = 0
    r = Recut(manifests, blocks.read, chunker)
    written = Manifest.of((block_id(c), len(c)) for c in r.chunks())
    return r.manifest(written), r, blocks


def single(chunker: Chunker, body: bytes) -> Manifest:
    return Manifest.of((block_id(bytes(c)), len(c)) for c in chunker.chunk_buffer(body))


def assert_single(chunker: Chunker, body: bytes, sizes) -> Recut:
    parts = split(body, sizes)
    assert b"".join(parts) == body
    m, r, _ = recut(chunker, parts)
    want = single(chunker, body)
    assert m.lengths == want.lengths
    assert m.id == want.id
    return r


def test_per_part_chunking_differs_and_the_recut_does_not():
    body = noise(3 << 20, 1)
    parts = split(body, [1 << 20, 1 << 20])
    concatenated = Manifest().concat(Blocks().manifest(DEFAULT, p) for p in parts)
    assert concatenated.id != single(DEFAULT, body).id  # what multipart gave before the re-cut
    assert_single(DEFAULT, body, [1 << 20, 1 << 20])


@pytest.mark.parametrize("sizes", [
    [5 << 20],                      # two parts
    [5 << 20, 5 << 20, 5 << 20],    # the last one shorter
    [8 << 20, 8 << 20],
    [(5 << 20) + 1, (5 << 20) + 12345],
])
def test_default_parameters_and_s3_part_sizes(sizes):
    assert_single(DEFAULT, noise(21 << 20, 2), sizes)


def test_a_single_part_is_kept_as_it_is_and_nothing_is_read():
    m, r, blocks = recut(DEFAULT, [noise(1 << 20, 3)])
    assert m.id == single(DEFAULT, noise(1 << 20, 3)).id
    assert (blocks.reads, r.cut, r.regions) == (0, 0, 0)


def test_tiny_parts_shorter_than_the_least_chunk():
    body = noise(40_000, 4)
    assert_single(SMALL, body, [1, 2, 3, 500, 1023, 1024, 1025, 10, 7000])
    assert_single(SMALL, body, [100] * 400)
    assert_single(SMALL, body, [1] * 3000)


def test_a_part_that_is_one_block_and_empty_parts():
    body = noise(60_000, 5)
    one = len(next(iter(SMALL.chunk_buffer(body[5000:]))))  # part 2 is exactly one block
    assert_single(SMALL, body, [5000, one, 0, 0, 9000, 0])
    assert_single(SMALL, body, [0, 60_000])
    assert_single(SMALL, body, [60_000, 0])


def test_max_cuts_in_runs_of_one_byte():
    # no content-defined cut in zeros: the single stream cuts every ``max`` bytes
    body = bytes(200_000) + noise(30_000, 6) + b"\xff" * 100_000 + noise(7000, 7)
    mx = SMALL.params.max
    r = assert_single(SMALL, body, [mx * 3, mx * 2, mx * 4])  # parts on max cuts: nothing to re-cut in the zeros
    assert r.regions <= 2
    assert_single(SMALL, body, [mx * 3 + 1, 777, mx * 5 - 3])  # off the max cuts: re-cut until the noise
    assert_single(SMALL, body, [mx * 3 - 1, mx * 2 + 1])  # a part's last block one byte short of max
    assert_single(SMALL, bytes(300_000), [50_000, 12_345, 99_999])  # never in sync again: re-cut to the end


def test_data_with_repeats():
    base = noise(50_000, 8)
    body = base * 6 + noise(1000, 9) + base[:30_000] * 3
    for sizes in ([50_000] * 8, [49_999, 50_001, 13, 70_000], [20_000] * 20):
        assert_single(SMALL, body, sizes)


def test_a_boundary_reads_a_few_blocks_not_the_parts():
    body = noise(21 << 20, 10)
    sizes = [5 << 20] * 4
    _, r, blocks = recut(DEFAULT, split(body, sizes))
    boundaries = len(sizes)
    assert r.regions == boundaries
    avg_blocks = len(single(DEFAULT, body)) / len(body) * (5 << 20)  # blocks in a part, ~80
    assert blocks.reads <= 8 * boundaries < avg_blocks
    assert blocks.reads == r.blocks_read


def test_the_written_chunks_must_have_the_cut_lengths():
    blocks = Blocks()
    parts = split(noise(100_000, 11), [30_000])
    r = Recut([blocks.manifest(SMALL, p) for p in parts], blocks.read, SMALL)
    chunks = list(r.chunks())
    from cas.errors import IntegrityError

    with pytest.raises(IntegrityError):
        r.manifest(Manifest.of((block_id(c), len(c) + 1) for c in chunks))
    with pytest.raises(IntegrityError):
        r.manifest(Manifest.of([(block_id(c), len(c)) for c in chunks] + [(b"\0" * 32, 1)]))


segment = st.one_of(
    st.tuples(st.just("noise"), st.integers(1, 40_000), st.integers(0, 1000)),
    st.tuples(st.just("run"), st.integers(1, 40_000), st.integers(0, 255)),
    st.tuples(st.just("repeat"), st.integers(1, 30_000), st.integers(1, 4)),
)


def build(segments) -> bytes:
    out = bytearray()
    for kind, n, x in segments:
        if kind == "noise":
            out += noise(n, x)
        elif kind == "run":
            out += bytes([x]) * n
        else:
            out += (bytes(out[-n:]) or noise(n)) * x
    return bytes(out)


@settings(max_examples=150, deadline=None)
@given(segments=st.lists(segment, min_size=1, max_size=6),
       sizes=st.lists(st.one_of(st.integers(0, 2000), st.integers(2000, 60_000)), min_size=1, max_size=12))
def test_any_bytes_any_part_sizes(segments, sizes):
    assert_single(SMALL, build(segments), sizes)
