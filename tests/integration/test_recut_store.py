"""Completing a multipart upload gives a single PUT's manifest (``cas.recut`` through ``Store``).

Over every store kind: the same bytes by one PUT and by multipart with S3's usual part sizes
share one manifest id; an edited copy costs as many new blocks either way; completing reads a
few blocks per boundary; the re-cut's blocks are pinned like any writer's (GC between mark and
condemn, a block relied on whose last name goes meanwhile), and the parts' blocks no longer used
are garbage once the upload is gone.
"""

from __future__ import annotations

import hashlib

import pytest

from cas.blocks.packs.files import MemoryPackFiles
from cas.config import load_settings
from cas.errors import InvalidPart, UploadNotFound
from cas.gc.sweep import collect
from cas.store import Store
from tests.fixtures.core import bytes_of
from tests.fixtures.gc import BUCKET, assert_whole, block_ids, manifest_ids

pytestmark = pytest.mark.integration

MiB = 1 << 20


@pytest.fixture
def bucket(store):
    store.create_bucket("bkt")
    return "bkt"


def multipart(store, bucket: str, key: str, body: bytes, part_size: int, **kw):
    up = store.create_upload(bucket, key)
    parts = [store.upload_part(up, i + 1, body[pos:pos + part_size])
             for i, pos in enumerate(range(0, len(body), part_size))]
    return store.complete_upload(up, [(p.number, p.etag) for p in parts], **kw)


def test_single_put_and_multipart_share_one_manifest(store, bucket):
    body = bytes_of(13 * MiB + 4321, 1)
    one = store.put(bucket, "put", body)
    for part_size in (5 * MiB, 8 * MiB, 5 * MiB + 7):
        key = f"mp{part_size}"
        store.blocks.counters.reset()
        info = multipart(store, bucket, key, body, part_size)
        parts = -(-len(body) // part_size)
        assert info.manifest_id == one.manifest_id, part_size
        # the ETag stays S3's: MD5 of the parts' MD5s, -N
        md5s = b"".join(hashlib.md5(body[p:p + part_size]).digest() for p in range(0, len(body), part_size))
        assert info.etag == f"{hashlib.md5(md5s).hexdigest()}-{parts}" and info.size == len(body)
        # a few blocks per boundary, not the parts (a 5 MiB part is ~80 blocks)
        assert store.blocks.counters.gets <= 8 * (parts - 1)
        assert store.get_bytes(bucket, key) == body
    assert store.stat(bucket, "mp5242880").parts == 3


def test_parts_copied_from_objects_are_re_cut_too(store, bucket):
    src = bytes_of(6 * MiB, 2)
    store.put(bucket, "src", src)
    up = store.create_upload(bucket, "copied")
    first = store.upload_part_copy(up, 1, bucket, "src")  # bound as it is: the source's blocks
    second = store.upload_part_copy(up, 2, bucket, "src", range=(1000, 3 * MiB))
    info = store.complete_upload(up, [(1, first.etag), (2, second.etag)])
    whole = src + src[1000:3 * MiB]
    assert info.manifest_id == store.put(bucket, "whole", whole).manifest_id
    assert store.get_bytes(bucket, "copied") == whole


def small_store(tmp_path, name: str) -> Store:
    settings = load_settings(tmp_path / name, {"gc": {"min_age": 0}}, chunk_avg=4096, env={})
    s = Store.open_store(settings, blocks=MemoryPackFiles())
    s.create_bucket("bkt")
    return s


def test_tiny_parts_give_the_single_put_manifest(tmp_path):
    s = small_store(tmp_path, "tiny")
    try:
        body = bytes_of(70_000, 3) + bytes(40_000) + bytes_of(20_000, 4)
        one = s.put("bkt", "put", body)
        for part_size in (1, 999, 1024, 4096, 16_384, 16_385, 50_000):
            if part_size == 1:
                body_small = body[:1200]
                info = multipart(s, "bkt", "p1", body_small, 1, min_part_size=0)
                assert info.manifest_id == s.put("bkt", "p1-put", body_small).manifest_id
                continue
            info = multipart(s, "bkt", f"p{part_size}", body, part_size, min_part_size=0)
            assert info.manifest_id == one.manifest_id, part_size
            assert s.get_bytes("bkt", f"p{part_size}") == body
    finally:
        s.close()


def edit(body: bytes) -> bytes:
    """An edited copy: a few bytes changed, some inserted, some cut (as a document edit does)."""
    mid = len(body) // 2
    return body[:1000] + b"edited" + body[1000:mid] + b"inserted here" + body[mid + 5000:]


def test_an_edited_copy_dedups_as_well_by_multipart_as_by_single_put(tmp_path):
    original = bytes_of(12 * MiB, 5)
    edited = edit(original)
    new_blocks = {}
    for how in ("put", "multipart"):
        s = Store.open_store(load_settings(tmp_path / how, {"gc": {"min_age": 0}}, env={}), blocks=MemoryPackFiles())
        try:
            s.create_bucket("bkt")
            s.put("bkt", "original", original)
            before = s.stats()["unique_blocks"]
            if how == "put":
                s.put("bkt", "edited", edited)
            else:
                multipart(s, "bkt", "edited", edited, 5 * MiB)
                collect(s, delete=True, min_age=0)  # the parts' own boundary blocks are garbage now
            new_blocks[how] = s.stats()["unique_blocks"] - before
            assert s.get_bytes("bkt", "edited") == edited
        finally:
            s.close()
    assert new_blocks["multipart"] == new_blocks["put"]
    assert new_blocks["put"] <= 6  # the edits' neighbourhoods only


# -- GC: the re-cut's blocks are a writer's; the parts' leftovers are garbage ----------------------

def test_gc_reclaims_the_parts_blocks_the_object_no_longer_uses(gc_store):
    s = gc_store
    body = bytes_of(11 * MiB, 6)
    up = s.create_upload(BUCKET, "mp")
    parts = [s.upload_part(up, i + 1, body[p:p + 5 * MiB]) for i, p in enumerate(range(0, len(body), 5 * MiB))]
    with s.index.read() as t:
        from cas.manifest import Manifest

        part_blocks = {bid for p in parts for bid in Manifest.decode(t.get_manifest(p.manifest_id)).ids}
    s.complete_upload(up, [(p.number, p.etag) for p in parts])
    used = set(manifest_ids(s, BUCKET, "mp"))
    leftovers = part_blocks - used
    assert 1 <= len(leftovers) <= 3 * 2  # the blocks each side of the 2 boundaries
    collect(s, delete=True, min_age=0)
    assert not leftovers & block_ids(s) and used <= block_ids(s)
    assert_whole(s, {(BUCKET, "mp"): body})


def test_complete_between_mark_and_condemn_relying_on_a_doomed_block(gc_store):
    """The re-cut chunks are the blocks of a single PUT of the same bytes; that object goes and
    GC marks before the upload completes: the blocks the completion relies on must stay."""
    s = gc_store
    body = bytes_of(11 * MiB, 7)
    s.put(BUCKET, "single", body)
    up = s.create_upload(BUCKET, "mp")
    parts = [s.upload_part(up, i + 1, body[p:p + 5 * MiB]) for i, p in enumerate(range(0, len(body), 5 * MiB))]
    done = []

    def hook(point):
        if point == "after_mark" and not done:
            s.delete(BUCKET, "single")
            done.append(s.complete_upload(up, [(p.number, p.etag) for p in parts]))

    collect(s, delete=True, min_age=0, hook=hook)
    assert done
    collect(s, delete=True, min_age=0)
    assert set(manifest_ids(s, BUCKET, "mp")) <= block_ids(s)
    assert_whole(s, {(BUCKET, "mp"): body})


def test_a_part_replaced_or_an_upload_aborted_during_completion(tmp_path):
    s = small_store(tmp_path, "race")
    try:
        body = bytes_of(100_000, 8)
        up = s.create_upload("bkt", "mp")
        parts = [s.upload_part(up, i + 1, body[p:p + 30_000]) for i, p in enumerate(range(0, len(body), 30_000))]
        read = s._read_blocks

        def replace_part(ids):
            s.upload_part(up, 2, b"other bytes" * 3000)
            return read(ids)

        s._read_blocks = replace_part
        with pytest.raises(InvalidPart):
            s.complete_upload(up, [(p.number, p.etag) for p in parts], min_part_size=0)
        with s.index.read() as t:
            assert list(t.iter_pins()) == []  # the writer let go of the re-cut's blocks

        def abort(ids):
            s.abort_upload(up)
            return read(ids)

        parts[1] = s.upload_part(up, 2, body[30_000:60_000])
        s._read_blocks = abort
        with pytest.raises(UploadNotFound):
            s.complete_upload(up, [(p.number, p.etag) for p in parts], min_part_size=0)
        assert s.list("bkt").entries == []
    finally:
        s.close()
