"""S3PackFiles beyond the shared PackFiles contract: key layout, settings, request counts,
parallel parts within the concurrency and per-sink bounds, the memory bound of a sink, multipart uploads
left behind, and the bucket (issue 12). Against the session's SeaweedFS except the first tests.

Faults (503s, resets, cut responses, a dead server) are in
tests/integration/test_s3_pack_faults.py.
"""

from __future__ import annotations

import os
import threading
import time
import tracemalloc

import pytest

from cas.blocks.packs.s3files import S3PackFiles
from cas.config import BlocksSettings
from cas.blocks.retry import RetryPolicy
from cas.errors import BlockNotFound, ConfigError, PermanentStoreError, TransientStoreError
from tests.fixtures.core import bytes_of, stream_of
from tests.fixtures.seaweed import FaultProxy

pytestmark = pytest.mark.unit

MiB = 1 << 20


def _pid() -> bytes:
    return os.urandom(16)


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def _write(files, size: int, seed: int, piece: int = MiB, pack_id: bytes | None = None):
    pid = pack_id or _pid()
    sink = files.create(pid)
    for chunk in stream_of(size, seed, piece):
        sink.write(chunk)
    return pid, sink


# -- no server ---------------------------------------------------------------------------------


def test_key_layout_and_kind():
    pid = bytes(range(16))
    files = S3PackFiles("bkt", "/tenant/a/", endpoint="http://127.0.0.1:1", access_key="k", secret_key="s")
    try:
        assert files.key(pid) == "tenant/a/packs/00/" + pid.hex()
        assert files.kind == "s3://bkt/tenant/a"
        assert not files.can_flush
        assert files._id_of(files.key(pid)) == pid
        assert files._id_of("tenant/a/packs/01/" + pid.hex()) is None  # wrong fan-out dir
        assert files._id_of("tenant/a/packs/00/" + pid.hex() + "00") is None  # a block id's length
        assert files._id_of("tenant/a/blocks/00/" + pid.hex()) is None
    finally:
        files.close()
    bare = S3PackFiles.from_url("s3://bkt", endpoint="http://127.0.0.1:1", access_key="k", secret_key="s")
    assert bare.key(pid) == "packs/00/" + pid.hex() and bare.kind == "s3://bkt"
    bare.close()


@pytest.mark.parametrize(
    "kwargs",
    [{"part_size": 5 * MiB - 1}, {"parts_per_sink": 0}, {"concurrency": 0}, {"page_size": 0},
     {"access_key": "k"}],
)
def test_constructor_rejects_bad_settings(kwargs):
    with pytest.raises(ConfigError):
        S3PackFiles("bkt", endpoint="http://127.0.0.1:1", **kwargs)
    with pytest.raises(ConfigError):
        S3PackFiles("")


def test_from_settings_takes_url_keys_concurrency_and_retries():
    settings = BlocksSettings(url="s3://bkt/some/prefix", endpoint="http://127.0.0.1:1", access_key="k",
                              secret_key="s", region="eu-west-1", concurrency=3, retries=4)
    files = S3PackFiles.from_settings(settings)
    try:
        assert (files.bucket, files.prefix, files.endpoint) == ("bkt", "some/prefix", "http://127.0.0.1:1")
        assert files.concurrency == 3 and files.retry.attempts == 5
        assert files._client.meta.region_name == "eu-west-1"
    finally:
        files.close()


# -- against SeaweedFS -------------------------------------------------------------------------


def test_packs_land_under_prefix_packs_fanout(seaweed, s3_packfiles_factory):
    files = s3_packfiles_factory(prefix="layout-" + os.urandom(4).hex())
    data = bytes_of(1000, seed=1)
    pid, sink = _write(files, len(data), seed=1)
    sink.finish()
    raw = seaweed.server.client()
    try:
        listed = raw.list_objects_v2(Bucket=seaweed.bucket, Prefix=files.prefix + "/")
        assert [o["Key"] for o in listed["Contents"]] == [f"{files.prefix}/packs/{pid.hex()[:2]}/{pid.hex()}"]
        assert raw.get_object(Bucket=seaweed.bucket, Key=files.key(pid))["Body"].read() == data
    finally:
        raw.close()


def test_iter_packs_pages_and_ignores_stray_objects(seaweed, s3_packfiles_factory):
    files = s3_packfiles_factory(page_size=3)
    packs = {}
    for i in range(8):
        pid, sink = _write(files, 100 + i, seed=i)
        sink.finish()
        packs[pid] = 100 + i
    raw = seaweed.server.client()
    try:  # things under the prefix that are not packs are none of iter_packs' business
        raw.put_object(Bucket=seaweed.bucket, Key=f"{files.prefix}/packs/zz/not-a-pack", Body=b"x")
        raw.put_object(Bucket=seaweed.bucket, Key=f"{files.prefix}/packs/{'ab' * 16}.tmp", Body=b"x")
        raw.put_object(Bucket=seaweed.bucket, Key=f"{files.prefix}/blocks/00/{'00' * 32}", Body=b"x")
    finally:
        raw.close()
    before = files.request_counts().get("ListObjectsV2", 0)
    listed = list(files.iter_packs())
    assert [(pid, size) for pid, size, _ in listed] == sorted(packs.items())
    assert files.request_counts()["ListObjectsV2"] - before == 4  # ceil(10 keys under packs/ / 3)


def test_prefixes_isolate_stores(s3_packfiles_factory):
    a, b = s3_packfiles_factory(), s3_packfiles_factory()
    pid, sink = _write(a, 10, seed=2)
    sink.finish()
    assert list(b.iter_packs()) == []
    with pytest.raises(BlockNotFound):
        b.read(pid, 0, 10)


def test_a_small_pack_is_one_put_and_a_read_one_ranged_get(s3_packfiles_factory):
    files = s3_packfiles_factory(part_size=5 * MiB)
    pid, sink = _write(files, 5 * MiB - 1, seed=3)
    sink.finish()
    assert files.request_counts() == {"PutObject": 1}
    assert files.read(pid, 1000, 2 * MiB) == bytes_of(5 * MiB - 1, seed=3)[1000:1000 + 2 * MiB]
    assert files.request_counts() == {"PutObject": 1, "GetObject": 1}


@pytest.mark.parametrize(("size", "parts"), [(20 * MiB, 4), (20 * MiB + 1, 5), (5 * MiB, 1)])
def test_a_large_pack_is_one_multipart_upload(s3_packfiles_factory, size, parts):
    files = s3_packfiles_factory(part_size=5 * MiB)
    pid, sink = _write(files, size, seed=4, piece=3 * MiB + 1)
    sink.finish()
    assert files.request_counts() == {"CreateMultipartUpload": 1, "UploadPart": parts, "CompleteMultipartUpload": 1}
    assert files.size(pid) == size
    assert files.read(pid, 0, size) == bytes_of(size, seed=4)
    assert list(files.iter_uploads()) == []


@pytest.mark.parametrize(
    ("sinks", "parts_per_sink", "concurrency", "in_flight"),
    [(1, 3, 8, 3), (2, 3, 4, 4), (3, 1, 8, 3)],
    ids=["one-pack-parallel-parts", "bounded-by-concurrency", "bounded-per-sink"],
)
def test_parts_upload_in_parallel_within_both_bounds(seaweed, s3_packfiles_factory, sinks, parts_per_sink,
                                                     concurrency, in_flight):
    # Every UploadPart stalls for 1.5 s and then fails: while the first ones hang, the proxy
    # must see exactly min(sinks * parts_per_sink, concurrency) of them, however much is written.
    with FaultProxy(_port(seaweed.endpoint), rate=1.0, faults=("stall",), stall_seconds=1.5,
                    match=lambda line: b"partNumber=" in line) as proxy:
        files = s3_packfiles_factory(endpoint=proxy.endpoint, part_size=5 * MiB, parts_per_sink=parts_per_sink,
                                     concurrency=concurrency, read_timeout=5, retry=RetryPolicy(attempts=1))
        errors: list[BaseException] = []

        def one_pack(seed: int) -> None:
            try:
                _, sink = _write(files, 40 * MiB, seed=seed)
                sink.finish()
            except BaseException as exc:  # noqa: BLE001 - what the writer sees is asserted below
                errors.append(exc)

        seen: list[int] = []
        sampler = threading.Timer(0.8, lambda: seen.append(proxy.stats["stall"]))
        sampler.start()
        threads = [threading.Thread(target=one_pack, args=(seed,)) for seed in range(sinks)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        sampler.join()
        assert list(files.iter_uploads()) == []  # each failed upload was aborted
    assert seen == [in_flight]
    assert len(errors) == sinks and all(isinstance(e, TransientStoreError) for e in errors), errors


def test_a_sink_holds_at_most_its_bound_in_memory(s3_packfiles_factory):
    part, pending = 5 * MiB, 2
    files = s3_packfiles_factory(part_size=part, parts_per_sink=pending)
    pid = _pid()
    sink = files.create(pid)
    pieces = stream_of(64 * MiB, seed=7, piece=MiB)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        for chunk in pieces:
            sink.write(chunk)
            del chunk
        sink.finish()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    bound = (pending + 1) * part
    assert pending * part <= sink.peak_buffered <= bound  # the parts did queue up, and no further
    assert sink.buffered_bytes == 0
    # plus the copy that makes a part bytes, and botocore's buffers: still far below 64 MiB
    assert peak < bound + part + 4 * MiB, f"{peak / MiB:.1f} MiB traced while writing 64 MiB"
    assert files.size(pid) == 64 * MiB
    assert files.request_counts()["UploadPart"] == 13


def test_abort_mid_upload_leaves_no_multipart_upload(s3_packfiles_factory):
    files = s3_packfiles_factory(part_size=5 * MiB)
    pid, sink = _write(files, 16 * MiB, seed=8)
    assert [(p, initiated > 0) for p, _, initiated in files.iter_uploads()] == [(pid, True)]
    sink.abort()
    assert list(files.iter_uploads()) == []
    assert files.request_counts()["AbortMultipartUpload"] == 1
    with pytest.raises(BlockNotFound):
        files.size(pid)


def test_abort_of_a_finished_pack_deletes_it(s3_packfiles_factory):
    files = s3_packfiles_factory()
    pid, sink = _write(files, 1000, seed=9)
    sink.finish()
    sink.abort()
    with pytest.raises(BlockNotFound):
        files.size(pid)


def test_abort_stale_uploads_aborts_only_old_uploads_of_packs(seaweed, s3_packfiles_factory):
    files = s3_packfiles_factory(part_size=5 * MiB)
    # what a process killed mid-pack leaves behind: an upload with parts, never completed
    left, _sink = _write(files, 11 * MiB, seed=10)
    raw = seaweed.server.client()
    stray = f"{files.prefix}/packs/zz/not-a-pack"
    stray_id = raw.create_multipart_upload(Bucket=seaweed.bucket, Key=stray)["UploadId"]
    try:
        assert [p for p, _, _ in files.iter_uploads()] == [left]
        assert files.abort_stale_uploads(3600) == 0  # young: a live writer may still finish it
        assert [p for p, _, _ in files.iter_uploads()] == [left]
        assert files.abort_stale_uploads(60, now=time.time() + 120) == 1
        assert list(files.iter_uploads()) == []
        with pytest.raises(BlockNotFound):
            files.size(left)
        uploads = raw.list_multipart_uploads(Bucket=seaweed.bucket, Prefix=files.prefix + "/").get("Uploads", [])
        assert [u["Key"] for u in uploads] == [stray]  # not a pack: not ours to abort
    finally:
        raw.abort_multipart_upload(Bucket=seaweed.bucket, Key=stray, UploadId=stray_id)
        raw.close()


def test_abort_stale_uploads_finds_more_than_a_page(s3_packfiles_factory):
    # SeaweedFS pages ListMultipartUploads wrongly (the first page only); listing again after
    # each round of aborts still reaches every upload
    files = s3_packfiles_factory(part_size=5 * MiB, page_size=2)
    sinks = [_write(files, 5 * MiB, seed=20 + i) for i in range(5)]
    assert files.abort_stale_uploads(0, now=time.time() + 120) == 5
    assert list(files.iter_uploads()) == []
    assert all(p not in {q for q, _, _ in files.iter_packs()} for p, _ in sinks)


def test_an_upload_found_gone_is_judged_by_the_object(s3_packfiles_factory):
    # A retried CompleteMultipartUpload or AbortMultipartUpload may find its upload gone because
    # the first attempt did the work and only its answer was lost (AWS answers NoSuchUpload).
    files = s3_packfiles_factory(part_size=5 * MiB)
    pid, sink = _write(files, 6 * MiB, seed=12)
    sink.finish()
    key = files.key(pid)
    files._complete_upload(key, "no-such-upload", ["etag"], 6 * MiB)  # the object is there: done
    with pytest.raises(PermanentStoreError, match="NoSuchUpload"):
        files._complete_upload(key, "no-such-upload", ["etag"], 6 * MiB + 1)  # not the object we sent
    with pytest.raises(PermanentStoreError, match="NoSuchUpload"):
        files._complete_upload(files.key(_pid()), "no-such-upload", ["etag"], 6 * MiB)  # no object at all
    files._abort_upload(key, "no-such-upload")  # gone is what an abort wants
    assert files.read(pid, 0, 6 * MiB) == bytes_of(6 * MiB, seed=12)


def test_check_and_prepare(s3_packfiles_factory):
    s3_packfiles_factory().check()
    fresh = s3_packfiles_factory(bucket="cas-packs-" + os.urandom(4).hex())
    with pytest.raises(PermanentStoreError, match="does not exist"):
        fresh.check()
    fresh.prepare()
    fresh.prepare()  # idempotent
    fresh.check()
    pid, sink = _write(fresh, 6 * MiB, seed=11)
    sink.finish()
    assert fresh.read(pid, 6 * MiB - 10, 10) == bytes_of(6 * MiB, seed=11)[-10:]
