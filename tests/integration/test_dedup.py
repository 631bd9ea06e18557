"""Dedup: a second copy, and a copy with bytes inserted near the start, cost almost nothing."""

from __future__ import annotations

import pytest

from tests.fixtures.core import bytes_of

pytestmark = pytest.mark.integration

MiB = 1 << 20


def test_second_copy_and_shifted_copy_grow_stored_bytes_by_under_5_percent(local_store):
    s = local_store
    s.create_bucket("bkt")
    body = bytes_of(50 * MiB, seed=42)  # incompressible: stored bytes measure dedup alone
    s.put("bkt", "one", body)
    after_first = s.stats()["stored_bytes"]
    assert after_first >= 50 * MiB  # random data does not compress
    s.put("bkt", "two", body)
    after_second = s.stats()["stored_bytes"]
    assert after_second - after_first < 0.05 * len(body)
    shifted = body[:1234] + b"a few inserted bytes" + body[1234:]
    s.put("bkt", "three", shifted)
    after_third = s.stats()["stored_bytes"]
    assert after_third - after_second < 0.05 * len(shifted)
    st = s.stats()
    assert st["objects"] == 3 and st["logical_bytes"] == 2 * len(body) + len(shifted)
    assert st["dedup_ratio"] > 2.9
    for key, expected in (("one", body), ("two", body), ("three", shifted)):
        assert s.get_bytes("bkt", key) == expected


def test_duplicate_upload_writes_no_blocks(local_store):
    s = local_store
    s.create_bucket("bkt")
    body = bytes_of(10 * MiB, seed=1)
    s.put("bkt", "a", body)
    s.blocks.counters.reset()
    s.put("bkt", "b", body)
    assert s.blocks.counters.snapshot()["puts"] == 0
