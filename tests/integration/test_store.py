"""The Store API over every block backend: put/get/range/list/copy/move/delete, uploads, errors."""

from __future__ import annotations

import hashlib
import io
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


from cas.errors import (
    BadDigest,
    BucketAlreadyExists,
    BucketNotEmpty,
    BucketNotFound,
    EntityTooSmall,
    IncompleteBody,
    IntegrityError,
    InvalidName,
    InvalidPart,
    InvalidPartOrder,
    InvalidRange,
    KeyTooLong,
    ObjectNotFound,
    PreconditionFailed,
    UploadNotFound,
)
from tests.fixtures.core import bytes_of, stream_of
from tests.fixtures.gc import flip_byte

pytestmark = pytest.mark.integration


@pytest.fixture
def bucket(store):
    store.create_bucket("bkt")
    return "bkt"


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(size=st.one_of(st.integers(0, 2000), st.integers(2000, 3 << 20)), seed=st.integers(0, 2**32), data=st.data())
def test_any_bytes_round_trip_whole_and_ranges(store, size, seed, data):
    if "bkt" not in [b.name for b in store.buckets()]:
        store.create_bucket("bkt")
    body = bytes_of(size, seed)
    info = store.put("bkt", f"obj-{seed}-{size}", io.BytesIO(body))
    assert info.size == size and info.etag == hashlib.md5(body).hexdigest()
    assert store.get_bytes("bkt", info.key) == body
    if size:
        start = data.draw(st.integers(0, size - 1))
        stop = data.draw(st.integers(start + 1, size + 10))
        assert store.get_bytes("bkt", info.key, range=(start, stop)) == body[start:stop]


def test_body_kinds_bytes_file_iterator(store, bucket):
    body = bytes_of(300_000, 5)
    for name, b in [("bytes", body), ("file", io.BytesIO(body)), ("iter", iter([body[:7], body[7:]]))]:
        assert store.put(bucket, name, b).etag == hashlib.md5(body).hexdigest()
        assert store.get_bytes(bucket, name) == body


def test_range_reads_only_the_blocks_it_touches(store, bucket):
    body = bytes_of(8 << 20, 9)
    store.put(bucket, "big", body)
    before = store.blocks.counters.snapshot()["gets"]
    assert store.get_bytes(bucket, "big", range=(4 << 20, (4 << 20) + 100)) == body[4 << 20:(4 << 20) + 100]
    assert store.blocks.counters.snapshot()["gets"] - before <= 2


@pytest.mark.parametrize("rng", [(10, 5), (-1, 4), (100, 200)])
def test_unsatisfiable_ranges(store, bucket, rng):
    store.put(bucket, "small", b"x" * 100)
    with pytest.raises(InvalidRange):
        store.open(bucket, "small", range=rng)


def test_metadata_round_trips(store, bucket):
    store.put(bucket, "m", b"data", content_type="text/plain", metadata={"colour": "blue"},
              headers={"content-disposition": "attachment"}, mtime=1_700_000_000.0)
    info = store.stat(bucket, "m")
    assert (info.content_type, info.metadata, info.headers, info.mtime) == (
        "text/plain", {"colour": "blue"}, {"content-disposition": "attachment"}, 1_700_000_000.0)


def test_overwrite_replaces_and_counts_once(store, bucket):
    store.put(bucket, "k", b"one")
    store.put(bucket, "k", b"second version")
    assert store.get_bytes(bucket, "k") == b"second version"
    s = store.stats()
    assert s["objects"] == 1 and s["logical_bytes"] == len(b"second version")


def test_identical_files_share_one_manifest(store, bucket):
    body = bytes_of(1 << 20, 2)
    a = store.put(bucket, "a", body)
    b = store.put(bucket, "b", body)
    assert a.manifest_id == b.manifest_id


def test_list_sorted_paginated_with_delimiter(store, bucket):
    keys = ["a", "b/1", "b/2", "b/c/3", "c", "d/", "é", "z/y"]
    for k in keys:
        store.put(bucket, k, k.encode())
    flat = store.list(bucket)
    assert [o.key for o in flat.entries] == sorted(keys, key=str.encode) and not flat.truncated
    grouped = store.list(bucket, delimiter="/")
    assert [o.key for o in grouped.entries] == ["a", "c", "é"]
    assert grouped.common_prefixes == ["b/", "d/", "z/"]
    sub = store.list(bucket, prefix="b/", delimiter="/")
    assert [o.key for o in sub.entries] == ["b/1", "b/2"] and sub.common_prefixes == ["b/c/"]
    seen, after, pages = [], "", 0
    while True:
        page = store.list(bucket, delimiter="/", start_after=after, limit=2)
        seen += [o.key for o in page.entries] + page.common_prefixes
        pages += 1
        if not page.truncated:
            break
        after = page.next_start_after
    assert sorted(seen, key=str.encode) == ["a", "b/", "c", "d/", "z/", "é"] and pages == 3
    assert [o.key for o in store.list(bucket, start_after="b/2").entries][:2] == ["b/c/3", "c"]


def test_copy_and_move_are_metadata_only(store, bucket):
    # 1 GiB object (all zeros: its 4096 manifest entries share one block, so the test stays quick)
    zeros = bytes(1 << 20)
    store.put(bucket, "big", (zeros for _ in range(1024)))
    store.blocks.counters.reset()
    c = store.copy(bucket, "big", bucket, "big-copy")
    m = store.move(bucket, "big-copy", bucket, "moved/big")
    assert store.blocks.counters.snapshot() == {"puts": 0, "gets": 0, "deletes": 0, "bytes_put": 0, "bytes_got": 0}
    assert c.size == m.size == 1 << 30
    with pytest.raises(ObjectNotFound):
        store.stat(bucket, "big-copy")
    assert store.stat(bucket, "moved/big").etag == store.stat(bucket, "big").etag


def test_copy_replaces_metadata_when_asked(store, bucket):
    store.put(bucket, "src", b"x", metadata={"a": "1"}, content_type="text/plain")
    kept = store.copy(bucket, "src", bucket, "kept")
    new = store.copy(bucket, "src", bucket, "new", metadata={"b": "2"}, content_type="image/png")
    assert kept.metadata == {"a": "1"} and kept.content_type == "text/plain"
    assert new.metadata == {"b": "2"} and new.content_type == "image/png"


def test_move_without_overwrite_refuses(store, bucket):
    store.put(bucket, "x", b"1")
    store.put(bucket, "y", b"2")
    with pytest.raises(PreconditionFailed):
        store.move(bucket, "x", bucket, "y", overwrite=False)
    assert store.get_bytes(bucket, "y") == b"2"


def test_conditional_put(store, bucket):
    first = store.put(bucket, "c", b"v1", if_none_match="*")
    with pytest.raises(PreconditionFailed):
        store.put(bucket, "c", b"v2", if_none_match="*")
    with pytest.raises(PreconditionFailed):
        store.put(bucket, "c", b"v2", if_match='"0123"')
    store.put(bucket, "c", b"v2", if_match=f'"{first.etag}"')
    assert store.get_bytes(bucket, "c") == b"v2"


def test_expected_digest_and_size(store, bucket):
    with pytest.raises(BadDigest):
        store.put(bucket, "d", b"data", expected_md5=hashlib.md5(b"other").digest())
    with pytest.raises(IncompleteBody):
        store.put(bucket, "d", b"data", expected_size=10)
    with pytest.raises(ObjectNotFound):
        store.stat(bucket, "d")


def test_before_commit_can_refuse_and_record_checksums(store, bucket):
    def refuse(result):
        raise BadDigest("trailer checksum mismatch")

    with pytest.raises(BadDigest):
        store.put(bucket, "t", b"abc", before_commit=refuse)
    with pytest.raises(ObjectNotFound):
        store.stat(bucket, "t")
    sha = hashlib.sha256()
    info = store.put(bucket, "t", b"abc", hashers={"sha256": sha},
                     before_commit=lambda r: {"sha256": r.digests["sha256"].hex()})
    assert info.checksums == {"sha256": hashlib.sha256(b"abc").hexdigest()}


def test_delete_and_buckets(store, bucket):
    store.put(bucket, "k", b"v")
    with pytest.raises(BucketNotEmpty):
        store.delete_bucket(bucket)
    store.delete(bucket, "k")
    with pytest.raises(ObjectNotFound):
        store.delete(bucket, "k")
    store.delete_bucket(bucket)
    with pytest.raises(BucketNotFound):
        store.put(bucket, "k", b"v")
    store.create_bucket("owned-by-a", owner="alice")
    with pytest.raises(BucketAlreadyExists):
        store.create_bucket("owned-by-a", owner="bob")
    assert [b.name for b in store.buckets(owner="alice")] == ["owned-by-a"]
    assert store.buckets(owner="bob") == []


@pytest.mark.parametrize("name", ["ab", "A-bucket", "bad_name", "-lead", "a..b", "192.168.1.1", "x" * 64, "xn--a"])
def test_invalid_bucket_names(store, name):
    with pytest.raises(InvalidName):
        store.create_bucket(name)


@pytest.mark.parametrize("key", ["", "../etc/passwd", "a/../b", "a/./b", "nul\x00byte", "/abs", "bad\udc80"])
def test_invalid_keys(store, bucket, key):
    with pytest.raises(InvalidName):
        store.put(bucket, key, b"x")


def test_overlong_key(store, bucket):
    with pytest.raises(KeyTooLong, match="at most 507 are allowed"):
        store.put(bucket, "k" * 600, b"x")
    store.put(bucket, "é" * 253, b"x")  # 506 bytes of UTF-8 fits


def test_missing_things(store, bucket):
    with pytest.raises(ObjectNotFound):
        store.open(bucket, "nope")
    with pytest.raises(BucketNotFound):
        store.stat("no-such-bucket", "k")
    with pytest.raises(UploadNotFound):
        store.upload_part("nope", 1, b"x")


def test_multipart_upload(store, bucket):
    parts = [bytes_of(5 << 20, 1), bytes_of(5 << 20, 2), b"tail"]
    uid = store.create_upload(bucket, "mp", content_type="video/mp4", metadata={"k": "v"})
    infos = [store.upload_part(uid, i + 1, p) for i, p in enumerate(parts)]
    assert [p.number for p in store.list_parts(uid)] == [1, 2, 3]
    assert [u.upload_id for u in store.list_uploads(bucket)] == [uid]
    with pytest.raises(InvalidPartOrder):
        store.complete_upload(uid, [(2, infos[1].etag), (1, infos[0].etag)])
    with pytest.raises(InvalidPart):
        store.complete_upload(uid, [(1, "0" * 32)])
    with pytest.raises(EntityTooSmall):
        store.complete_upload(uid, [(3, infos[2].etag), (4, "x")], min_part_size=5)
    info = store.complete_upload(uid, [(i.number, f'"{i.etag}"') for i in infos])
    md5s = b"".join(hashlib.md5(p).digest() for p in parts)
    assert info.etag == f"{hashlib.md5(md5s).hexdigest()}-3" and info.content_type == "video/mp4"
    assert store.get_bytes(bucket, "mp") == b"".join(parts)
    assert store.get_bytes(bucket, "mp", range=((5 << 20) - 3, (5 << 20) + 3)) == b"".join(parts)[(5 << 20) - 3:(5 << 20) + 3]
    with pytest.raises(UploadNotFound):
        store.list_parts(uid)


def test_complete_upload_reads_only_the_blocks_at_the_boundary(store, bucket):
    # each part was hashed once as it arrived; completing re-cuts the chunks around the part
    # boundary (cas.recut: a few blocks read and written) and combines the parts' digests
    parts = [bytes_of(5 << 20, 5), bytes_of(300_000, 6)]
    uid = store.create_upload(bucket, "once")
    infos = [store.upload_part(uid, i + 1, p) for i, p in enumerate(parts)]
    store.blocks.counters.reset()
    info = store.complete_upload(uid, [(i.number, i.etag) for i in infos])
    counters = store.blocks.counters
    assert 1 <= counters.gets <= 8 and counters.bytes_got <= 8 * store.chunker.params.max
    assert counters.puts <= 4
    assert info.etag == hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest() + "-2"
    assert store.get_bytes(bucket, "once") == b"".join(parts)


def test_upload_part_copy_and_abort(store, bucket):
    src = bytes_of(200_000, 4)
    store.put(bucket, "src", src)
    uid = store.create_upload(bucket, "dst")
    whole = store.upload_part_copy(uid, 1, bucket, "src")
    part = store.upload_part_copy(uid, 2, bucket, "src", range=(1000, 5000))
    assert part.size == 4000 and part.etag == hashlib.md5(src[1000:5000]).hexdigest()
    store.complete_upload(uid, [(1, whole.etag), (2, part.etag)], min_part_size=0)
    assert store.get_bytes(bucket, "dst") == src + src[1000:5000]
    uid2 = store.create_upload(bucket, "gone")
    store.upload_part(uid2, 1, b"abc")
    store.abort_upload(uid2)
    with pytest.raises(UploadNotFound):
        store.complete_upload(uid2, [(1, hashlib.md5(b"abc").hexdigest())])


def test_expire_uploads(store, bucket):
    uid = store.create_upload(bucket, "old")
    assert store.expire_uploads(3600) == 0
    assert store.expire_uploads(-1) == 1
    with pytest.raises(UploadNotFound):
        store.upload(uid)


def test_props_and_touch(store, bucket):
    store.put(bucket, "p", b"x")
    store.set_props(bucket, "p", {"{DAV:}x": "1", "{ns}y": "2"})
    info = store.set_props(bucket, "p", remove=["{ns}y"])
    assert info.props == {"{DAV:}x": "1"}
    moved = store.move(bucket, "p", bucket, "q")
    assert moved.props == {"{DAV:}x": "1"}
    assert store.touch(bucket, "q", 1234.5).mtime == 1234.5


def test_events_journal(store, bucket):
    store.put(bucket, "e", b"12345", user="alice")
    store.copy(bucket, "e", bucket, "f", user="alice")
    store.delete(bucket, "e", user="bob")
    evs = store.events()
    assert [(e.op, e.key, e.user) for e in evs][-3:] == [("put", "e", "alice"), ("copy", "f", "alice"),
                                                          ("delete", "e", "bob")]
    assert evs[-3].size == 5 and evs[-3].etag == hashlib.md5(b"12345").hexdigest()
    assert [e.seq for e in evs] == sorted(e.seq for e in evs)
    assert store.events(after=evs[-2].seq) == evs[-1:]


def test_kv(store):
    store.kv_put("locks", "a/1", b"one")
    store.kv_put("locks", "a/2", b"two")
    store.kv_put("other", "a/3", b"three")
    assert store.kv_scan("locks", "a/") == [("a/1", b"one"), ("a/2", b"two")]
    assert store.kv_delete("locks", "a/1") and store.kv_get("locks", "a/1") is None


def test_corrupted_block_file_fails_loudly(local_store):
    local_store.create_bucket("bkt")
    body = bytes_of(300_000, 8)
    info = local_store.put("bkt", "k", body)
    from cas.manifest import Manifest

    with local_store.index.read() as t:
        manifest = Manifest.decode(t.get_manifest(info.manifest_id))
    flip_byte(local_store, manifest.ids[1], offset=1000)
    with pytest.raises(IntegrityError):
        local_store.get_bytes("bkt", "k")
    assert local_store.get_bytes("bkt", "k", range=(0, 10)) == body[:10]  # undamaged blocks still read


def test_store_reopens_with_its_own_params_and_refuses_others(tmp_path):
    from cas.config import load_settings
    from cas.errors import ConfigError
    from cas.store import Store

    d = tmp_path / "s"
    with Store.open_store(load_settings(d, chunk_avg="32K", compression="none", env={})) as s:
        s.create_bucket("bkt")
        s.put("bkt", "k", os.urandom(100_000))
    with Store.open_store(load_settings(d, env={})) as s:
        assert s.settings.chunker.avg == 32768 and s.settings.codec.compression == "none"
    with pytest.raises(ConfigError, match="cannot be opened"):
        Store.open_store(load_settings(d, chunk_avg="64K", env={}))


def test_large_stream_round_trip(store, bucket):
    n = 20 << 20
    info = store.put(bucket, "stream", stream_of(n, 11))
    h = hashlib.md5()
    for part in store.open(bucket, "stream"):
        h.update(part)
    assert info.size == n and h.hexdigest() == info.etag
