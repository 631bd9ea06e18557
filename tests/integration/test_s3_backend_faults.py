"""S3BlockStore under faults, against a real SeaweedFS (issue 5).

- a loopback proxy that answers 503 / resets / truncates a fraction of requests:
  every operation still succeeds through retries, and the concurrency bound holds;
- every request failing, or stalling past the read timeout: a clean
  ``TransientStoreError`` after the policy's attempts, in bounded time;
- the S3 server killed while blocks are being written: ``TransientStoreError``
  (never ``BlockNotFound`` or a false ``has``), then after a restart every
  acknowledged block reads back and writing resumes;
- bad credentials or a missing bucket: ``PermanentStoreError`` at once, one request.
"""

from __future__ import annotations

import os
import threading
import time

import pytest

from cas.blocks import innermost, packs_of
from cas.blocks.retry import RetryPolicy
from cas.errors import BlockNotFound, PermanentStoreError, TransientStoreError
from cas.ids import block_id
from tests.fixtures.seaweed import FaultProxy

pytestmark = [pytest.mark.integration, pytest.mark.s3backend]

FAST = RetryPolicy(attempts=3, base=0.05, cap=0.2)


def _block(n: int = 2000) -> tuple[bytes, bytes]:
    data = os.urandom(n)
    return block_id(data), data


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def _run_threads(fn, n: int, timeout: float = 120) -> list[BaseException]:
    errors: list[BaseException] = []

    def wrapped(i: int) -> None:
        try:
            fn(i)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted by the caller
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    assert not any(t.is_alive() for t in threads), "worker threads hung"
    return errors


def test_operations_succeed_through_injected_503s_resets_and_truncations(seaweed, s3_blockstore_factory):
    with FaultProxy(_port(seaweed.endpoint), rate=0.3, faults=("503", "reset", "truncate"), seed=5) as proxy:
        store = s3_blockstore_factory(
            endpoint=proxy.endpoint, concurrency=4, retry=RetryPolicy(attempts=12, base=0.01, cap=0.1)
        )
        blocks = [_block(n) for n in [0, 1, 300_000] + [4000] * 45]

        def put_share(i: int) -> None:
            for bid, data in blocks[i::4]:
                store.put(bid, data)

        assert _run_threads(put_share, 4) == []
        for bid, data in blocks:
            assert store.get(bid) == data
            assert store.has(bid)
            assert store.stat(bid).size == len(data)
        assert {bid for bid, _ in store.iter_ids()} == {bid for bid, _ in blocks}
        gone = blocks[:10]
        for bid, _ in gone:
            store.delete(bid)
        assert not any(store.has(bid) for bid, _ in gone)

    assert proxy.stats["503"] > 0 and proxy.stats["reset"] > 0 and proxy.stats["truncate"] > 0
    sent = sum(innermost(store).request_counts().values())
    assert sent == sum(proxy.stats.values())  # every attempt went through the proxy once
    assert store.counters.puts == len(blocks)  # retried requests count once as operations


def test_concurrent_requests_are_bounded(seaweed, s3_blockstore_factory):
    # Every request stalls for 2 s: while the first ones hang, the proxy must have seen
    # exactly `concurrency` of them although 8 threads are asking.
    with FaultProxy(_port(seaweed.endpoint), rate=1.0, faults=("stall",), stall_seconds=2) as proxy:
        store = s3_blockstore_factory(endpoint=proxy.endpoint, concurrency=2, retry=RetryPolicy(attempts=1))
        blocks = [_block(100) for _ in range(8)]
        seen: list[int] = []
        sampler = threading.Timer(1.0, lambda: seen.append(proxy.stats["stall"]))
        sampler.start()
        errors = _run_threads(lambda i: store.get(blocks[i][0]), 8)
        sampler.join()
    assert seen == [2]
    assert len(errors) == 8 and all(isinstance(e, TransientStoreError) for e in errors)
    assert proxy.stats["stall"] == 8


def test_every_request_failing_gives_up_with_transient_error(seaweed, s3_blockstore_factory):
    with FaultProxy(_port(seaweed.endpoint), rate=1.0, faults=("503", "reset")) as proxy:
        store = s3_blockstore_factory(endpoint=proxy.endpoint, retry=FAST)
        bid, data = _block()
        t0 = time.monotonic()
        with pytest.raises(TransientStoreError, match="gave up after 3 attempts"):
            store.put(bid, data)
        with pytest.raises(TransientStoreError):
            store.get(bid)
        with pytest.raises(TransientStoreError):
            store.has(bid)  # an unreachable backend is not "the block is absent"
        with pytest.raises(TransientStoreError):
            list(store.iter_ids())
        with pytest.raises(TransientStoreError):
            store.check()
        assert time.monotonic() - t0 < 10
    counts = innermost(store).request_counts()
    assert counts["PutObject"] == counts["GetObject"] == counts["HeadObject"] == 3
    assert counts["HeadBucket"] == 1  # check() reports the current state, no retries
    assert store.counters.puts == 0


def test_stalled_backend_times_out_as_transient(seaweed, s3_blockstore_factory):
    with FaultProxy(_port(seaweed.endpoint), rate=1.0, faults=("stall",), stall_seconds=10) as proxy:
        store = s3_blockstore_factory(
            endpoint=proxy.endpoint, read_timeout=0.5, connect_timeout=0.5, retry=RetryPolicy(attempts=2, base=0.01)
        )
        t0 = time.monotonic()
        with pytest.raises(TransientStoreError):
            store.get(_block()[0])
        assert time.monotonic() - t0 < 5
        assert proxy.stats["stall"] == 2


def test_server_killed_mid_write_then_recovers_after_restart(seaweed_private, s3_blockstore_factory):
    server = seaweed_private.server
    store = s3_blockstore_factory(
        endpoint=seaweed_private.endpoint,
        access_key=seaweed_private.access_key,
        secret_key=seaweed_private.secret_key,
        retry=FAST,
        connect_timeout=1,
        read_timeout=5,
    )
    acked: list[tuple[bytes, bytes]] = []
    failure: list[BaseException] = []
    enough = threading.Event()

    def writer() -> None:
        for _ in range(5000):  # bounded; the server dies long before
            bid, data = _block(8000)
            try:
                store.put(bid, data)
            except BaseException as exc:  # noqa: BLE001 - what the writer sees is the point of the test
                failure.append(exc)
                return
            acked.append((bid, data))
            if len(acked) >= 20:
                enough.set()

    t = threading.Thread(target=writer)
    t.start()
    assert enough.wait(60), "no writes went through before the stop"
    server.stop(kill=True)
    killed_at = time.monotonic()
    t.join(timeout=60)
    assert not t.is_alive()
    assert len(failure) == 1 and isinstance(failure[0], TransientStoreError), failure
    assert time.monotonic() - killed_at < 15

    bid, data = acked[0]
    for op in (store.get, store.has, store.stat, store.delete):
        with pytest.raises(TransientStoreError):
            op(bid)
    with pytest.raises(TransientStoreError):
        store.put(*_block())
    with pytest.raises(TransientStoreError):
        store.check()

    server.start()
    store.check()
    for bid, data in acked:  # every acknowledged put survived the crash
        assert store.get(bid) == data
    new = _block()
    store.put(*new)
    assert store.get(new[0]) == new[1]
    assert {b for b, _ in acked} | {new[0]} <= {b for b, _ in store.iter_ids()}


def test_wrong_secret_is_permanent_and_not_retried(seaweed, s3_blockstore_factory):
    store = s3_blockstore_factory(secret_key="not-the-secret")
    bid, data = _block()
    t0 = time.monotonic()
    with pytest.raises(PermanentStoreError, match="SignatureDoesNotMatch"):
        store.put(bid, data)
    with pytest.raises(PermanentStoreError):
        store.get(bid)
    with pytest.raises(PermanentStoreError):
        store.has(bid)  # 403 is not "absent"
    with pytest.raises(PermanentStoreError):
        store.check()
    assert time.monotonic() - t0 < 3
    assert innermost(store).request_counts() == {"PutObject": 1, "GetObject": 1, "HeadObject": 1, "HeadBucket": 1}


def test_unknown_access_key_is_permanent(seaweed, s3_blockstore_factory):
    store = s3_blockstore_factory(access_key="nobody", secret_key="nothing")
    with pytest.raises(PermanentStoreError, match="InvalidAccessKeyId"):
        store.put(*_block())
    assert innermost(store).request_counts() == {"PutObject": 1}


def test_missing_bucket_is_permanent(seaweed, s3_blockstore_factory):
    store = s3_blockstore_factory(bucket="cas-no-such-bucket")
    with pytest.raises(PermanentStoreError, match="does not exist"):
        store.check()
    with pytest.raises(PermanentStoreError, match="NoSuchBucket"):
        store.get(_block()[0])
    with pytest.raises(PermanentStoreError):
        list(store.iter_ids())
    assert innermost(store).request_counts() == {"HeadBucket": 1, "GetObject": 1, "ListObjectsV2": 1}


def test_nothing_listening_is_transient(s3_blockstore_factory):
    from tests.fixtures.seaweed import free_ports

    store = s3_blockstore_factory(endpoint=f"http://127.0.0.1:{free_ports(1)[0]}", retry=FAST, connect_timeout=1)
    with pytest.raises(TransientStoreError):
        store.put(*_block())
    with pytest.raises(TransientStoreError):
        store.get(_block()[0])
    assert innermost(store).request_counts() == {"PutObject": 3, "GetObject": 3}


def test_missing_block_is_an_error_not_silence(seaweed, s3_blockstore_factory):
    store = s3_blockstore_factory()
    bid, data = _block()
    store.put(bid, data)
    raw = seaweed.server.client()
    raw.delete_object(Bucket=seaweed.bucket, Key=store.key(bid))  # behind cas's back
    raw.close()
    with pytest.raises(BlockNotFound, match=bid.hex()[:12]):
        store.get(bid)
    assert not store.has(bid)


# -- the Store over an S3 backend (settings -> open_packfiles -> packs in S3PackFiles) ----------------


def _open_store(tmp_path, info, *, endpoint: str | None = None, retries: int = 2):
    from cas.config import load_settings
    from cas.store import Store

    blocks = {
        "url": f"s3://{info.bucket}/store-{os.urandom(4).hex()}",
        "endpoint": endpoint or info.endpoint,
        "access_key": info.access_key,
        "secret_key": info.secret_key,
        "retries": retries,
    }
    settings = load_settings(tmp_path / "data", {"blocks": blocks, "gc": {"min_age": 0}}, env={})
    return Store.open_store(settings)


def _stream(n: int, seed: int, piece: int = 1 << 20, on_piece=None):
    from tests.fixtures.core import stream_of

    for i, chunk in enumerate(stream_of(n, seed, piece)):
        if on_piece is not None:
            on_piece(i)
        yield chunk


def test_store_round_trips_through_a_flaky_backend(tmp_path, seaweed):
    from cas.gc.verify import verify
    from tests.fixtures.core import bytes_of

    with FaultProxy(_port(seaweed.endpoint), rate=0.2, faults=("503", "reset", "truncate"), seed=11) as proxy:
        store = _open_store(tmp_path, seaweed, endpoint=proxy.endpoint, retries=10)
        try:
            assert store.blocks.kind.startswith("s3://")
            store.create_bucket("bkt")
            store.put("bkt", "big", _stream(6 << 20, seed=1))
            store.put("bkt", "copy", _stream(6 << 20, seed=1))  # dedup: no block is written again
            data = bytes_of(6 << 20, seed=1)
            assert store.get_bytes("bkt", "big") == data
            assert store.get_bytes("bkt", "copy", range=(1_000_000, 3_500_000)) == data[1_000_000:3_500_000]
            report = verify(store, deep=True)
            assert report.clean, [str(f) for f in report.findings]
        finally:
            store.close()
    assert proxy.stats["503"] + proxy.stats["reset"] + proxy.stats["truncate"] > 0


def test_store_put_fails_cleanly_when_backend_dies_mid_upload_and_recovers(tmp_path, seaweed_private):
    from cas.errors import ObjectNotFound, StoreError
    from cas.gc.verify import verify
    from tests.fixtures.core import bytes_of

    server = seaweed_private.server
    store = _open_store(tmp_path, seaweed_private)
    try:
        store.create_bucket("bkt")
        store.put("bkt", "before", _stream(2 << 20, seed=2))

        def kill_after_two_pieces(i: int) -> None:
            if i == 2:
                server.stop(kill=True)

        t0 = time.monotonic()
        with pytest.raises(StoreError) as info:
            store.put("bkt", "during", _stream(8 << 20, seed=3, on_piece=kill_after_two_pieces))
        assert isinstance(info.value, TransientStoreError)  # a 503-class error for the protocols
        assert time.monotonic() - t0 < 30
        with pytest.raises(ObjectNotFound):
            store.stat("bkt", "during")  # nothing partial is visible
        assert store.stat("bkt", "before").size == 2 << 20  # the index still answers
        assert store.health()["status"] == "degraded"

        server.start()
        assert store.health()["status"] == "ok"
        store.put("bkt", "during", _stream(8 << 20, seed=3))
        assert store.get_bytes("bkt", "during") == bytes_of(8 << 20, seed=3)
        assert store.get_bytes("bkt", "before") == bytes_of(2 << 20, seed=2)
        report = verify(store, deep=True)
        assert report.clean, [str(f) for f in report.findings]
    finally:
        store.close()


def test_block_deleted_behind_cas_back_is_reported(tmp_path, seaweed):
    from cas.errors import IntegrityError
    from cas.gc.verify import verify
    from cas.manifest import Manifest

    store = _open_store(tmp_path, seaweed)
    try:
        store.create_bucket("bkt")
        store.put("bkt", "victim", _stream(1 << 20, seed=4))
        store.put("bkt", "bystander", _stream(1 << 20, seed=5))
        info = store.stat("bkt", "victim")
        with store.index.read() as t:
            manifest = Manifest.decode(t.get_manifest(info.manifest_id))
        gone = manifest.ids[len(manifest.ids) // 2]
        packs = packs_of(store.blocks)
        victim_pack = packs.location(gone).pack
        other = store.stat("bkt", "bystander")
        with store.index.read() as t:
            spared = Manifest.decode(t.get_manifest(other.manifest_id)).ids
        assert all(packs.location(b).pack != victim_pack for b in spared)  # each put sealed its own pack
        raw = seaweed.server.client()
        raw.delete_object(Bucket=seaweed.bucket, Key=packs.files.key(victim_pack))  # behind cas's back
        raw.close()

        with pytest.raises((BlockNotFound, IntegrityError)):
            store.get_bytes("bkt", "victim")
        assert store.get_bytes("bkt", "bystander")
        report = verify(store)
        kinds = {f.kind for f in report.findings}
        assert "missing_pack" in kinds and "missing_block" in kinds
        assert {f.block for f in report.findings if f.block} <= {b.hex() for b in manifest.ids}
        assert gone.hex() in {f.block for f in report.findings}
        assert report.damaged_objects == ["bkt/victim"]
    finally:
        store.close()
