"""The BlockStore contract (cas/blocks/base.py), run against every implementation."""

from __future__ import annotations

import os
import threading

import pytest

from cas.blocks import BlockStoreLayer, CountingBlockStore, RetryingBlockStore
from cas.blocks.retry import RetryPolicy
from cas.errors import BlockNotFound, TransientStoreError
from cas.ids import block_id

pytestmark = pytest.mark.unit


def _block(n: int = 1000, seed: bytes = b"") -> tuple[bytes, bytes]:
    data = seed + os.urandom(n)
    return block_id(data), data


def test_put_then_get_returns_same_bytes(blockstore):
    bid, data = _block()
    blockstore.put(bid, data)
    assert blockstore.get(bid) == data
    assert blockstore.has(bid)


def test_get_missing_raises_block_not_found(blockstore):
    bid, _ = _block()
    with pytest.raises(BlockNotFound):
        blockstore.get(bid)
    assert not blockstore.has(bid)
    with pytest.raises(BlockNotFound):
        blockstore.stat(bid)


def test_put_is_idempotent(blockstore):
    bid, data = _block()
    blockstore.put(bid, data)
    blockstore.put(bid, data)
    assert blockstore.get(bid) == data
    blockstore.sync([bid])
    assert [i for i, _ in blockstore.iter_ids()].count(bid) == 1


def test_delete_removes_and_is_idempotent(blockstore):
    bid, data = _block()
    blockstore.put(bid, data)
    blockstore.delete(bid)
    assert not blockstore.has(bid)
    blockstore.delete(bid)
    with pytest.raises(BlockNotFound):
        blockstore.get(bid)


def test_stat_reports_stored_size_and_creation_time(blockstore):
    bid, data = _block(4321)
    blockstore.put(bid, data)
    st = blockstore.stat(bid)
    assert st.size == len(data)
    assert st.created > 1_600_000_000


def test_iter_ids_lists_every_block(blockstore):
    blocks = dict(_block(100) for _ in range(40))
    for bid, data in blocks.items():
        blockstore.put(bid, data)
    blockstore.sync(list(blocks))
    listed = dict(blockstore.iter_ids())
    assert set(listed) == set(blocks)
    assert all(t > 1_600_000_000 for t in listed.values())


def test_sync_accepts_written_blocks(blockstore):
    pairs = [_block(200) for _ in range(20)]
    for bid, data in pairs:
        blockstore.put(bid, data)
    blockstore.sync([bid for bid, _ in pairs])
    blockstore.sync([])
    assert all(blockstore.get(bid) == data for bid, data in pairs)


def test_empty_and_large_blocks(blockstore):
    for n in (0, 1, 300_000):
        bid, data = _block(n)
        blockstore.put(bid, data)
        assert blockstore.get(bid) == data


def test_concurrent_puts_of_same_and_different_blocks(blockstore):
    shared_id, shared = _block(50_000)
    own = [_block(5_000) for _ in range(8)]
    errors = []

    def work(i):
        try:
            for _ in range(5):
                blockstore.put(shared_id, shared)
                blockstore.put(*own[i])
                assert blockstore.get(shared_id) == shared
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    for bid, data in own:
        assert blockstore.get(bid) == data
    blockstore.sync([shared_id] + [bid for bid, _ in own])
    listed = [bid for bid, _ in blockstore.iter_ids()]
    assert sorted(listed) == sorted({shared_id, *(bid for bid, _ in own)})
    assert blockstore.get(shared_id) == shared


def test_get_many_returns_blocks_in_order(blockstore):
    pairs = [_block(3000 + i) for i in range(30)]
    for bid, data in pairs:
        blockstore.put(bid, data)
    blockstore.sync([bid for bid, _ in pairs])
    order = [bid for bid, _ in pairs][::2] + [pairs[3][0], pairs[3][0]]
    want = dict(pairs)
    assert list(blockstore.get_many(order)) == [want[b] for b in order]
    with pytest.raises(BlockNotFound):
        list(blockstore.get_many([pairs[0][0], _block()[0]]))


def test_counters_count_io(blockstore):
    counted = CountingBlockStore(blockstore)  # counting is a layer around any backend
    bid, data = _block(1234)
    before = counted.counters.snapshot()
    counted.put(bid, data)
    counted.get(bid)
    after = counted.counters.snapshot()
    assert after["puts"] - before["puts"] == 1
    assert after["gets"] - before["gets"] == 1
    assert after["bytes_got"] - before["bytes_got"] == len(data)


def test_iter_ids_come_in_order_and_resume_after_an_id(blockstore):
    """Ids come in ascending order and ``start_after`` skips up to an id: a listing can resume."""
    blocks = [_block(10 + i) for i in range(12)]
    for bid, data in blocks:
        blockstore.put(bid, data)
    blockstore.sync([bid for bid, _ in blocks])
    ids = sorted(bid for bid, _ in blocks)
    listed = [bid for bid, _ in blockstore.iter_ids()]
    assert listed == sorted(listed) and set(ids) <= set(listed)
    middle = ids[5]
    assert [bid for bid, _ in blockstore.iter_ids(middle)] == [b for b in listed if b > middle]
    assert list(blockstore.iter_ids(listed[-1])) == []


def test_a_retrying_layer_resumes_a_failing_listing_where_it_broke(blockstore):
    """The retry layer reopens a listing after the last id it yielded: nothing twice, nothing lost."""
    ids = []
    for i in range(20):
        bid, data = _block(100 + i)
        blockstore.put(bid, data)
        ids.append(bid)
    blockstore.sync(ids)
    expected = [bid for bid, _ in blockstore.iter_ids()]
    opened: list = []

    class Flaky(BlockStoreLayer):
        def iter_ids(self, start_after=None):
            opened.append(start_after)
            for n, item in enumerate(self.inner.iter_ids(start_after)):
                if len(opened) < 4 and n == 5:
                    raise TransientStoreError("listing broke")
                yield item

    retrying = RetryingBlockStore(Flaky(blockstore), RetryPolicy(attempts=3, base=0, sleep=lambda s: None))
    assert [bid for bid, _ in retrying.iter_ids()] == expected
    assert opened[0] is None and opened[1:] == [expected[4], expected[9], expected[14]]
