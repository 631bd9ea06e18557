"""S3BlockStore beyond the shared contract: URL parsing, error mapping, retry policy,
key layout, paged listings, prefixes and creation times (issue 5).

The first half needs no server (errors are built as botocore builds them); the rest
runs against the session's SeaweedFS (marked ``s3backend`` by the fixture).
"""

from __future__ import annotations

import os
import time

import botocore.exceptions as bce
import pytest

from cas.blocks.retry import RetryPolicy
from cas.blocks.s3 import S3BlockStore
from cas.blocks.s3bucket import map_error, parse_s3_url
from cas.errors import BlockNotFound, ConfigError, PermanentStoreError, TransientStoreError
from cas.ids import block_id

pytestmark = pytest.mark.unit


def _block(n: int = 500) -> tuple[bytes, bytes]:
    data = os.urandom(n)
    return block_id(data), data


def _client_error(code: str, status: int, op: str = "GetObject") -> bce.ClientError:
    return bce.ClientError(
        {"Error": {"Code": code, "Message": "m"}, "ResponseMetadata": {"HTTPStatusCode": status}}, op
    )


# -- no server ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3://bucket", ("bucket", "")),
        ("s3://bucket/", ("bucket", "")),
        ("s3://bucket/a/b/", ("bucket", "a/b")),
        ("s3://my-bucket/cas", ("my-bucket", "cas")),
    ],
)
def test_parse_s3_url(url, expected):
    assert parse_s3_url(url) == expected


@pytest.mark.parametrize("url", ["http://bucket/x", "s3:///x", "bucket/x", "s3://b/x?y=1", ""])
def test_parse_s3_url_rejects_other_forms(url):
    with pytest.raises(ConfigError):
        parse_s3_url(url)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (_client_error("NoSuchKey", 404), BlockNotFound),
        (_client_error("404", 404, "HeadObject"), BlockNotFound),
        (_client_error("SlowDown", 503), TransientStoreError),
        (_client_error("ServiceUnavailable", 503), TransientStoreError),
        (_client_error("InternalError", 500), TransientStoreError),
        (_client_error("503", 503, "HeadObject"), TransientStoreError),
        (_client_error("Throttling", 400), TransientStoreError),
        (_client_error("RequestTimeout", 400), TransientStoreError),
        (_client_error("TooManyRequests", 429), TransientStoreError),
        (_client_error("BadGateway", 502), TransientStoreError),
        (_client_error("AccessDenied", 403), PermanentStoreError),
        (_client_error("403", 403, "HeadObject"), PermanentStoreError),
        (_client_error("InvalidAccessKeyId", 403), PermanentStoreError),
        (_client_error("SignatureDoesNotMatch", 403), PermanentStoreError),
        (_client_error("NoSuchBucket", 404), PermanentStoreError),
        (_client_error("InvalidBucketName", 400), PermanentStoreError),
        (bce.EndpointConnectionError(endpoint_url="http://x"), TransientStoreError),
        (bce.ConnectTimeoutError(endpoint_url="http://x"), TransientStoreError),
        (bce.ReadTimeoutError(endpoint_url="http://x"), TransientStoreError),
        (bce.ConnectionClosedError(endpoint_url="http://x"), TransientStoreError),
        (bce.ResponseStreamingError(error="reset"), TransientStoreError),
        (bce.IncompleteReadError(actual_bytes=1, expected_bytes=2), TransientStoreError),
        (ConnectionResetError(104, "reset"), TransientStoreError),
        (bce.NoCredentialsError(), PermanentStoreError),
    ],
)
def test_error_mapping(exc, expected):
    mapped = map_error(exc, "S3 op")
    assert type(mapped) is expected
    assert str(mapped).startswith("S3 op: ")


def test_retry_policy_retries_transient_errors_with_capped_jittered_backoff():
    waits: list[float] = []
    calls = []
    policy = RetryPolicy(attempts=6, base=0.1, cap=0.5, sleep=waits.append, rand=lambda: 1.0)

    def flaky():
        calls.append(1)
        if len(calls) < 6:
            raise TransientStoreError("503")
        return "ok"

    assert policy.run("op", flaky) == "ok"
    assert waits == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])
    low = RetryPolicy(attempts=3, base=0.1, cap=0.5, rand=lambda: 0.0)
    assert [low.delay(n) for n in range(4)] == pytest.approx([0.05, 0.1, 0.2, 0.25])  # never below half


def test_retry_policy_gives_up_after_its_attempts():
    waits: list[float] = []
    calls = []

    def down():
        calls.append(1)
        raise TransientStoreError("connection refused")

    with pytest.raises(TransientStoreError, match="gave up after 4 attempts") as info:
        RetryPolicy(attempts=4, sleep=waits.append).run("op", down)
    assert len(calls) == 4 and len(waits) == 3
    assert isinstance(info.value.__cause__, TransientStoreError)


@pytest.mark.parametrize("exc", [PermanentStoreError("403"), BlockNotFound("gone"), ValueError("bug")])
def test_retry_policy_does_not_retry_other_errors(exc):
    calls = []

    def fail():
        calls.append(1)
        raise exc

    with pytest.raises(type(exc)):
        RetryPolicy(attempts=5, sleep=lambda s: None).run("op", fail)
    assert calls == [1]


def test_retry_policy_validates():
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


def test_key_layout_and_kind():
    bid = bytes(range(32))
    store = S3BlockStore("bkt", "/tenant/a/", endpoint="http://127.0.0.1:1", access_key="k", secret_key="s")
    try:
        assert store.key(bid) == "tenant/a/blocks/00/" + bid.hex()
        assert store.kind == "s3://bkt/tenant/a"
        assert store._id_of(store.key(bid)) == bid
        assert store._id_of("tenant/a/blocks/01/" + bid.hex()) is None  # wrong fan-out dir
        assert store._id_of("tenant/a/blocks/00/" + bid.hex() + ".tmp") is None
        assert store._id_of("tenant/b/blocks/00/" + bid.hex()) is None
    finally:
        store.close()
    bare = S3BlockStore.from_url("s3://bkt", endpoint="http://127.0.0.1:1", access_key="k", secret_key="s")
    assert bare.key(bid) == "blocks/00/" + bid.hex() and bare.kind == "s3://bkt"
    bare.close()


def test_constructor_rejects_half_credentials_and_bad_sizes():
    with pytest.raises(ConfigError):
        S3BlockStore("bkt", access_key="k")
    with pytest.raises(ConfigError):
        S3BlockStore("bkt", concurrency=0)
    with pytest.raises(ConfigError):
        S3BlockStore("")


# -- against SeaweedFS -------------------------------------------------------------------------


def test_objects_land_under_prefix_blocks_fanout(seaweed, s3_blockstore_factory):
    store = s3_blockstore_factory(prefix="layout-" + os.urandom(4).hex())
    bid, data = _block()
    store.put(bid, data)
    raw = seaweed.server.client()
    try:
        listed = raw.list_objects_v2(Bucket=seaweed.bucket, Prefix=store.prefix + "/")
        assert [o["Key"] for o in listed["Contents"]] == [f"{store.prefix}/blocks/{bid.hex()[:2]}/{bid.hex()}"]
        assert raw.get_object(Bucket=seaweed.bucket, Key=store.key(bid))["Body"].read() == data
    finally:
        raw.close()


def test_iter_ids_pages_and_ignores_stray_objects(seaweed, s3_blockstore_factory):
    store = s3_blockstore_factory(page_size=7)
    blocks = dict(_block(50) for _ in range(30))
    for bid, data in blocks.items():
        store.put(bid, data)
    raw = seaweed.server.client()
    try:  # things under the prefix that are not blocks are none of iter_ids' business
        raw.put_object(Bucket=seaweed.bucket, Key=f"{store.prefix}/blocks/zz/not-a-block", Body=b"x")
        raw.put_object(Bucket=seaweed.bucket, Key=f"{store.prefix}/manifests/abc", Body=b"x")
    finally:
        raw.close()
    before = store.request_counts().get("ListObjectsV2", 0)
    listed = dict(store.iter_ids())
    assert set(listed) == set(blocks)
    assert store.request_counts()["ListObjectsV2"] - before == 5  # ceil(31 keys / 7)
    now = time.time()
    assert all(abs(t - now) < 300 for t in listed.values())


def test_prefixes_isolate_stores(s3_blockstore_factory):
    a, b = s3_blockstore_factory(), s3_blockstore_factory()
    bid, data = _block()
    a.put(bid, data)
    assert not b.has(bid)
    assert list(b.iter_ids()) == []
    with pytest.raises(BlockNotFound):
        b.get(bid)


def test_reput_refreshes_creation_time(s3_blockstore_factory):
    # GC's minimum age counts from the last put, as with the local store's mtime.
    store = s3_blockstore_factory()
    bid, data = _block()
    store.put(bid, data)
    first = store.stat(bid).created
    time.sleep(1.1)  # S3 LastModified has one-second resolution; this is the server's clock
    store.put(bid, data)
    assert store.stat(bid).created > first
    assert store.get(bid) == data


def test_check_and_ensure_bucket(seaweed, s3_blockstore_factory):
    s3_blockstore_factory().check()
    name = "cas-new-" + os.urandom(4).hex()
    fresh = s3_blockstore_factory(bucket=name)
    fresh.ensure_bucket()
    fresh.ensure_bucket()  # idempotent
    fresh.check()
    bid, data = _block()
    fresh.put(bid, data)
    assert fresh.get(bid) == data


def test_delete_of_absent_block_and_get_after_delete(s3_blockstore_factory):
    store = s3_blockstore_factory()
    bid, data = _block()
    store.delete(bid)
    store.put(bid, data)
    store.delete(bid)
    with pytest.raises(BlockNotFound, match=bid.hex()[:12]):
        store.get(bid)
    with pytest.raises(BlockNotFound):
        store.stat(bid)


def test_sync_is_a_no_op_that_sends_nothing(s3_blockstore_factory):
    store = s3_blockstore_factory()
    bid, data = _block()
    store.put(bid, data)
    before = store.request_counts()
    store.sync([bid])
    assert store.request_counts() == before
