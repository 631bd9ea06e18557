"""Verify over packs: each pack's footer against the index, packs missing, cut short, unknown or
retired under a location, live figures, deep reads in pack order, and what repair does about each."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from cas.blocks import packs_of
from cas.blocks.packs import format as fmt
from cas.gc.sweep import collect
from cas.gc.verify import verify
from cas.index.schema import KIND_DATA, KIND_MANIFEST, PACK_RETIRED, PACK_SEALED, Loc
from tests.fixtures.gc import BUCKET, assert_whole, block_rows, data, flip_pack_byte, manifest_ids

pytestmark = pytest.mark.integration


def _packs(s):
    return packs_of(s.blocks)


def _seal(s) -> None:
    """Seal the store's open pack (footer written, row SEALED), as at close or once it is full."""
    _packs(s).flush_all()


def _pack_of(s, bid: bytes, kind: int = KIND_DATA) -> bytes:
    return _packs(s).location(bid, kind).pack


def _pack_rows(s) -> dict:
    with s.index.read() as t:
        return dict(t.iter_packs())


def _kinds(report) -> list[str]:
    return sorted(f.kind for f in report.findings)


def _put_sealed(s, key: str, body: bytes) -> bytes:
    """``key`` with its blocks and manifest alone in one sealed pack (its id)."""
    _seal(s)
    s.put(BUCKET, key, body)
    _seal(s)
    pid = _pack_of(s, manifest_ids(s, BUCKET, key)[0])
    assert {_pack_of(s, bid) for bid in manifest_ids(s, BUCKET, key)} == {pid}
    return pid


def test_sealed_packs_are_checked_and_figures_reported(local_gc_store):
    s = local_gc_store
    x, y = data(700_000, 90), data(300_000, 91)
    _put_sealed(s, "x", x)
    s.put(BUCKET, "y", y)  # stays in the open pack
    r = verify(s)
    assert r.clean, [str(f) for f in r.findings]
    assert (r.packs, r.packs_checked, r.packs_open, r.packs_retired) == (2, 1, 1, 0)
    assert r.locations == r.blocks + 2  # every block and both manifests
    assert r.pack_bytes == sum(row.size for row in _pack_rows(s).values())
    assert r.manifests_not_in_packs == 0
    assert "2 packs" in r.summary()


def test_deep_verify_reads_packs_in_a_few_ranges_not_block_by_block(local_gc_store):
    s = local_gc_store
    x = data(3_000_000, 92)
    pid = _put_sealed(s, "x", x)
    files = _packs(s).files
    reads = []
    orig = files.read

    def counting(pack_id, offset, length):
        reads.append((pack_id, offset, length))
        return orig(pack_id, offset, length)

    files.read = counting
    try:
        r = verify(s, deep=True)
    finally:
        del files.read
    assert r.clean and r.blocks > 30
    assert r.bytes_read == s.stats()["stored_bytes"]
    # two ranged reads of the footer in each of the pack passes, then the entries in one range
    block_reads = [rd for rd in reads if rd[2] > fmt.TRAILER_LEN and rd[1] == fmt.HEADER_LEN + fmt.ENTRY_HEADER_LEN]
    assert len(reads) == 5 and len(block_reads) == 1 and block_reads[0][0] == pid
    assert r.pack_bytes_read >= r.bytes_read


def test_bit_rot_in_a_sealed_pack_is_found_by_deep_only(local_gc_store):
    s = local_gc_store
    x = data(900_000, 93)
    _put_sealed(s, "x", x)
    bid = manifest_ids(s, BUCKET, "x")[4]
    loc = _packs(s).location(bid)
    flip_pack_byte(_packs(s).files, loc.pack, loc.offset + loc.length // 2)
    assert verify(s).clean
    r = verify(s, deep=True)
    assert [(f.kind, f.block, f.objects) for f in r.findings] == [("corrupt_block", bid.hex(), (f"{BUCKET}/x",))]
    assert r.marked_damaged == 1


def test_a_damaged_manifest_copy_is_found_by_deep_and_put_again_from_the_index(local_gc_store):
    s = local_gc_store
    x = data(300_000, 94)
    _put_sealed(s, "x", x)
    mid = s.stat(BUCKET, "x").manifest_id
    loc = _packs(s).location(mid, KIND_MANIFEST)
    flip_pack_byte(_packs(s).files, loc.pack, loc.offset + 3)
    assert verify(s).clean
    r = verify(s, deep=True, repair=True)
    assert [(f.kind, f.repaired) for f in r.findings] == [("damaged_manifest_copy", True)]
    assert r.damaged_objects == []  # readers use the index's copy
    assert _packs(s).location(mid, KIND_MANIFEST).pack != loc.pack
    assert_whole(s, {(BUCKET, "x"): x})


def test_missing_pack_names_its_objects_and_repair_then_reupload_heals(local_gc_store):
    s = local_gc_store
    a, b, c = data(400_000, 95), data(300_000, 96), data(300_000, 97)
    _seal(s)
    s.put(BUCKET, "a", a)
    s.put(BUCKET, "b", b)
    _seal(s)
    s.put(BUCKET, "c", c)
    pid = _pack_of(s, manifest_ids(s, BUCKET, "a")[0])
    os.unlink(_packs(s).files.path(pid))
    lost = set(manifest_ids(s, BUCKET, "a")) | set(manifest_ids(s, BUCKET, "b"))
    r = verify(s)
    (pack_finding,) = [f for f in r.findings if f.kind == "missing_pack"]
    assert pack_finding.pack == pid.hex() and pack_finding.objects == (f"{BUCKET}/a", f"{BUCKET}/b")
    assert "2 manifest copies" in pack_finding.detail
    missing = {bytes.fromhex(f.block) for f in r.findings if f.kind == "missing_block"}
    assert missing == lost and all(f.pack == pid.hex() for f in r.findings)
    assert r.damaged_objects == [f"{BUCKET}/a", f"{BUCKET}/b"] and r.marked_damaged == len(lost)
    r = verify(s, repair=True)
    assert r.findings and all(f.repaired for f in r.findings), [str(f) for f in r.findings if not f.repaired]
    assert _pack_rows(s)[pid].live_entries == 0  # gc retires it and deletes it (nothing to delete)
    s.put(BUCKET, "a2", a)
    s.put(BUCKET, "b2", b)
    collect(s, delete=True, min_age=0)
    assert pid not in _pack_rows(s)
    assert_whole(s, {(BUCKET, k): v for k, v in (("a", a), ("b", b), ("c", c), ("a2", a))})


def test_pack_cut_short_loses_only_the_blocks_past_the_cut(local_gc_store):
    s = local_gc_store
    x = data(900_000, 98)
    pid = _put_sealed(s, "x", x)
    ids = manifest_ids(s, BUCKET, "x")
    gone = max(ids, key=lambda bid: _packs(s).location(bid).offset)  # blocks land in the order they are done
    last = _packs(s).location(gone)
    os.truncate(_packs(s).files.path(pid), last.offset + last.length // 2)  # the last block, manifest, footer
    for deep in (False, True):
        r = verify(s, deep=deep)
        assert _kinds(r) == ["missing_block", "pack_size_mismatch"], [str(f) for f in r.findings]
        cut = next(f for f in r.findings if f.kind == "pack_size_mismatch")
        assert cut.objects == (f"{BUCKET}/x",)
        assert next(f for f in r.findings if f.kind == "missing_block").block == gone.hex()
    r = verify(s, deep=True, repair=True)
    assert all(f.repaired for f in r.findings), [str(f) for f in r.findings]
    # every block that was still there moved to another pack, and the manifest was put again
    assert all(_pack_of(s, bid) != pid for bid in ids if bid != gone)
    assert _pack_of(s, s.stat(BUCKET, "x").manifest_id, KIND_MANIFEST) != pid
    s.put(BUCKET, "again", x)
    collect(s, delete=True, min_age=0)
    assert pid not in _pack_rows(s) and not _packs(s).files.path(pid).exists()
    assert_whole(s, {(BUCKET, "x"): x, (BUCKET, "again"): x})


def test_damaged_footer_is_reported_and_repair_moves_every_entry_out(local_gc_store):
    s = local_gc_store
    x = data(600_000, 99)
    pid = _put_sealed(s, "x", x)
    size = _pack_rows(s)[pid].size
    flip_pack_byte(_packs(s).files, pid, size - fmt.TRAILER_LEN - 5)  # inside the table
    r = verify(s, deep=True)
    assert [(f.kind, f.pack, f.objects) for f in r.findings] == [("pack_footer_damaged", pid.hex(), ())]
    assert "checksum" in r.findings[0].detail
    assert r.bytes_read == s.stats()["stored_bytes"]  # its blocks were still read, through their locations
    r = verify(s, repair=True)
    assert r.findings[0].repaired and _pack_rows(s)[pid].live_entries == 0
    collect(s, delete=True, min_age=0)
    assert_whole(s, {(BUCKET, "x"): x})


def test_a_location_at_no_footer_entry_is_found_and_moved(local_gc_store):
    s = local_gc_store
    x = data(600_000, 100)
    _put_sealed(s, "x", x)
    a, b = manifest_ids(s, BUCKET, "x")[:2]
    la, lb = _packs(s).location(a), _packs(s).location(b)
    with s.index.write() as t:  # a's location now points at b's entry (same length: live figures agree)
        t.put_loc(KIND_DATA, a, Loc(la.pack, lb.offset, la.length, la.raw_len, la.created))
    r = verify(s)
    assert [(f.kind, f.block) for f in r.findings] == [("location_not_in_footer", a.hex())]
    assert r.findings[0].objects == (f"{BUCKET}/x",)
    r = verify(s, deep=True)
    assert _kinds(r) == ["corrupt_block", "location_not_in_footer"]


def test_a_location_in_a_retired_pack_is_found_and_moved_before_gc_deletes_it(local_gc_store):
    s = local_gc_store
    x = data(500_000, 101)
    pid = _put_sealed(s, "x", x)
    with s.index.write() as t:  # as if gc had retired it while something still pointed into it
        t.put_pack(pid, replace(t.get_pack(pid), state=PACK_RETIRED))
    r = verify(s, repair=True)
    assert set(_kinds(r)) == {"location_in_retired_pack"} and len(r.findings) == len(manifest_ids(s, BUCKET, "x")) + 1
    assert all(f.repaired for f in r.findings) and r.packs_retired == 1
    collect(s, delete=True, min_age=0)
    assert pid not in _pack_rows(s)
    assert_whole(s, {(BUCKET, "x"): x})


def test_live_figures_that_disagree_with_the_locations_are_found_and_set_right(local_gc_store):
    s = local_gc_store
    x = data(500_000, 102)
    pid = _put_sealed(s, "x", x)
    good = _pack_rows(s)[pid]
    with s.index.write() as t:  # gc would retire a pack whose row says nothing in it is live
        t.put_pack(pid, replace(good, live_entries=0, live_bytes=0))
    r = verify(s, repair=True)
    assert [(f.kind, f.pack, f.repaired) for f in r.findings] == [("pack_live_mismatch", pid.hex(), True)]
    assert _pack_rows(s)[pid] == good
    collect(s, delete=True, min_age=0)
    assert_whole(s, {(BUCKET, "x"): x})


def test_unknown_pack_is_a_finding_and_never_deleted(local_gc_store):
    s = local_gc_store
    x = data(300_000, 103)
    s.put(BUCKET, "x", x)
    stray = os.urandom(fmt.PACK_ID_LEN)
    sink = _packs(s).files.create(stray)  # a pack no row knows (e.g. copied in by hand)
    sink.write(fmt.header(stray) + fmt.footer([], fmt.HEADER_LEN))
    sink.finish()
    r = verify(s, repair=True)
    assert [(f.kind, f.pack, f.repaired) for f in r.findings] == [("unknown_pack", stray.hex(), False)]
    collect(s, delete=True, min_age=0)
    assert _packs(s).files.path(stray).exists()


def test_sealed_pack_rows_stay_sealed_through_a_clean_verify(local_gc_store):
    s = local_gc_store
    x = data(500_000, 104)
    pid = _put_sealed(s, "x", x)
    before = _pack_rows(s)
    assert verify(s, deep=True, repair=True).clean
    assert _pack_rows(s) == before and before[pid].state == PACK_SEALED
    assert set(block_rows(s)) == set(manifest_ids(s, BUCKET, "x"))
