"""The pinned chunker cuts where it always cut.

Dedup across the life of a store depends on FastCDC cutting the same bytes at the same places
forever: a new pyfastcdc build, another FastCDC implementation or a changed parameter default
would silently stop new uploads from deduplicating against old ones. These vectors were recorded
with pyfastcdc 0.3.1 (pinned in pyproject.toml); if this test fails, the cut points changed.
"""

from __future__ import annotations

import hashlib

import pytest

from cas.chunker import Chunker, ChunkerParams
from cas.ids import block_id

pytestmark = pytest.mark.unit

#: 3 MiB of reproducible pseudo-random bytes (SHAKE-256 never changes)
DATA = hashlib.shake_256(b"cas pinned cut points v1").digest(3 << 20)

DEFAULT_CUTS = [65787, 76725, 91015, 49007, 75147, 35955, 68441, 123261, 91955, 68177, 161501, 29159,
                134852, 132225, 21107, 120470, 79615, 31961, 88748, 71903, 83982, 83837, 82350, 75750,
                37805, 51180, 72824, 125292, 33829, 88054, 69267, 46188, 17769, 100356, 32455, 62159,
                67371, 89435, 57970, 79258, 96206, 70022, 5358]
SMALL_CUTS = [4749, 2368, 6001, 5176, 7449, 4219, 2898, 9225, 8080, 11770, 3852, 7629, 1035, 6179, 1350,
              2529, 9347, 1392, 1268, 1272, 5805, 3539, 1462, 5403, 11448, 1736, 9615, 5716, 5671, 5841,
              1328, 5471, 4580, 4185, 4003, 6333, 6230, 9526, 4320]
FIRST_BLOCK_ID = "3fae2a8bc11d94f2c6c2b74a5f3f6c8f37f157008cc84a022eeb76afdb35a5a5"


def test_default_parameters_are_the_documented_ones():
    p = ChunkerParams()
    assert (p.min, p.avg, p.max) == (16 << 10, 64 << 10, 256 << 10)


def test_default_cut_points_are_pinned():
    lengths = [len(c) for c in Chunker(ChunkerParams()).chunk_buffer(DATA)]
    assert lengths == DEFAULT_CUTS


def test_streamed_cut_points_are_the_same_as_in_memory():
    lengths = [len(c) for c in Chunker(ChunkerParams()).chunks(iter([DATA[i:i + 7777] for i in
                                                                     range(0, len(DATA), 7777)]))]
    assert lengths == DEFAULT_CUTS


def test_small_average_cut_points_are_pinned():
    lengths = [len(c) for c in Chunker(ChunkerParams.for_average(4096)).chunk_buffer(DATA[:200_000])]
    assert lengths == SMALL_CUTS


def test_block_ids_are_blake3_of_the_raw_chunk():
    first = bytes(next(iter(Chunker(ChunkerParams()).chunk_buffer(DATA))))
    assert block_id(first).hex() == FIRST_BLOCK_ID
