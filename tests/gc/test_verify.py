"""Verify: bit rot, missing blocks, index damage, repair, and the command line."""

from __future__ import annotations

import json

import pytest

from cas.gc.verify import verify
from cas.index.schema import CONDEMNED, BlockRow
from tests.fixtures.gc import (
    BUCKET,
    assert_whole,
    block_rows,
    data,
    delete_block_file,
    flip_byte,
    manifest_ids,
    run_cas,
)

pytestmark = pytest.mark.integration


def _shared_block(s, a: bytes, b: bytes) -> bytes:
    s.put(BUCKET, "a", a)
    s.put(BUCKET, "b", b)
    shared = set(manifest_ids(s, BUCKET, "a")) & set(manifest_ids(s, BUCKET, "b"))
    assert shared
    return sorted(shared)[0]


def test_clean_store_verifies_clean_plain_and_deep(gc_store):
    s = gc_store
    x = data(800_000, 40)
    s.put(BUCKET, "x", x)
    up = s.create_upload(BUCKET, "mp")
    s.upload_part(up, 1, data(100_000, 41))
    for deep in (False, True):
        r = verify(s, deep=deep)
        assert r.clean and r.objects == 1 and r.parts == 1 and r.blocks == r.blocks_referenced > 0
    assert r.bytes_read == s.stats()["stored_bytes"]


def test_bit_rot_deep_names_exactly_that_block_and_its_objects(local_gc_store):
    s = local_gc_store
    x = data(900_000, 42)
    bid = _shared_block(s, x, x + data(300_000, 43))
    s.put(BUCKET, "other", data(300_000, 44))
    flip_byte(s, bid)
    assert verify(s).clean  # same size: only reading the bytes shows it
    r = verify(s, deep=True)
    assert [(f.kind, f.block) for f in r.findings] == [("corrupt_block", bid.hex())]
    assert r.findings[0].objects == (f"{BUCKET}/a", f"{BUCKET}/b")
    assert r.damaged_objects == [f"{BUCKET}/a", f"{BUCKET}/b"]


def test_deleted_block_plain_verify_reports_it_and_its_objects(gc_store):
    s = gc_store
    x = data(900_000, 45)
    bid = _shared_block(s, x, x + data(300_000, 46))
    delete_block_file(s, bid)
    r = verify(s)
    assert [(f.kind, f.block) for f in r.findings] == [("missing_block", bid.hex())]
    assert set(r.findings[0].objects) == {f"{BUCKET}/a", f"{BUCKET}/b"}


def test_repair_drops_the_row_of_a_missing_block_and_a_reupload_heals(gc_store):
    s = gc_store
    x = data(900_000, 47)
    bid = _shared_block(s, x, x + data(300_000, 48))
    delete_block_file(s, bid)
    r = verify(s, repair=True)
    assert not r.clean and r.repaired == 1 and r.findings[0].repaired
    assert r.damaged_objects == [f"{BUCKET}/a", f"{BUCKET}/b"]
    assert bid not in block_rows(s)
    s.put(BUCKET, "again", x)  # the writer holds those bytes again and writes the block
    assert_whole(s, {(BUCKET, "a"): x, (BUCKET, "again"): x})


def test_repair_of_a_corrupt_block_deletes_it_and_a_reupload_heals(local_gc_store):
    s = local_gc_store
    x = data(900_000, 49)
    bid = _shared_block(s, x, x)
    flip_byte(s, bid, 20)
    r = verify(s, deep=True, repair=True)
    assert [f.kind for f in r.findings] == ["corrupt_block"] and r.findings[0].repaired
    assert not s.blocks.has(bid)
    s.put(BUCKET, "again", x)
    assert_whole(s, {(BUCKET, "a"): x, (BUCKET, "b"): x})


def test_a_location_whose_length_differs_from_the_row_is_a_size_mismatch(local_gc_store):
    s = local_gc_store
    x = data(500_000, 50)
    s.put(BUCKET, "x", x)
    bid = manifest_ids(s, BUCKET, "x")[0]
    with s.index.write() as t:  # the row says 10 bytes more than the block has
        row = t.get_block(bid)
        t.put_block(bid, BlockRow(row.state, row.stored_size + 10, row.raw_len, row.created, row.state_time))
        t.add_counter("stored_bytes", 10)
    assert [f.kind for f in verify(s).findings] == ["size_mismatch"]
    r = verify(s, deep=True, repair=True)  # it decodes: the row is wrong, and set right
    assert [(f.kind, f.repaired) for f in r.findings] == [("size_mismatch", True)]
    assert_whole(s, {(BUCKET, "x"): x})


def test_index_damage_is_reported_and_safe_parts_repaired(gc_store):
    s = gc_store
    x, y = data(500_000, 51), data(500_000, 52)
    s.put(BUCKET, "x", x)
    s.put(BUCKET, "y", y)
    xid = manifest_ids(s, BUCKET, "x")[0]
    yinfo = s.stat(BUCKET, "y")
    with s.index.write() as t:
        row = t.get_block(xid)
        t.put_block(xid, BlockRow(CONDEMNED, row.stored_size, row.raw_len, row.created, row.state_time))
        t.add_counter("objects", 3)
        t.delete_manifest(yinfo.manifest_id)
    r = verify(s, repair=True)
    kinds = sorted(f.kind for f in r.findings)
    assert kinds == ["counter_mismatch", "missing_manifest", "referenced_condemned"]
    assert {f.kind for f in r.findings if f.repaired} == {"counter_mismatch", "referenced_condemned"}
    assert r.damaged_objects == [f"{BUCKET}/y"]
    r2 = verify(s)
    assert sorted(f.kind for f in r2.findings) == ["missing_manifest"]


def test_missing_row_of_a_present_block_is_recreated(gc_store):
    s = gc_store
    x = data(500_000, 53)
    s.put(BUCKET, "x", x)
    bid = manifest_ids(s, BUCKET, "x")[1]
    with s.index.write() as t:
        row = t.get_block(bid)
        t.delete_block(bid)
        t.add_counter("unique_blocks", -1)
        t.add_counter("stored_bytes", -row.stored_size)
        t.add_counter("raw_bytes", -row.raw_len)
    r = verify(s, repair=True)
    assert [f.kind for f in r.findings] == ["missing_block_row"] and r.findings[0].repaired
    assert_whole(s, {(BUCKET, "x"): x})


def test_orphans_are_counted_not_findings(local_gc_store):
    s = local_gc_store
    s.blocks.put(b"\x01" * 32, b"junk")
    s.blocks.sync([b"\x01" * 32])
    r = verify(s)
    assert r.clean and r.orphans == 1


def test_cli_verify_exit_codes_and_json(local_gc_store):
    s = local_gc_store
    x = data(500_000, 54)
    s.put(BUCKET, "x", x)
    ok = run_cas(s.settings.data_dir, "verify", "--deep", "--rate-limit", "100M")
    assert ok.returncode == 0, ok.stderr
    assert b"verify --deep: clean" in ok.stdout
    bid = manifest_ids(s, BUCKET, "x")[0]
    delete_block_file(s, bid)
    bad = run_cas(s.settings.data_dir, "verify", "--json")
    assert bad.returncode == 1
    out = json.loads(bad.stdout)
    assert out["clean"] is False
    assert out["findings"][0] == {"kind": "missing_block", "block": bid.hex(), "objects": [f"{BUCKET}/x"],
                                  "detail": "not in any pack", "repaired": False, "pack": ""}
    text = run_cas(s.settings.data_dir, "verify")
    assert text.returncode == 1 and bid.hex()[:12].encode() in text.stdout and b"gcb/x" in text.stdout
