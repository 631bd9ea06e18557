"""``cas verify --repair`` from the command line: exit codes, ``--json`` shape, and a kill -9
in the middle of a repair (named crash points), after which verify runs and repair can be rerun.
Also the safety of the ``damaged`` block state against GC and concurrent writers."""

from __future__ import annotations

import json

import pytest

from cas.errors import ObjectDamaged, TransientStoreError
from cas.gc.sweep import collect
from cas.gc.verify import verify
from cas.index.schema import DAMAGED, LIVE
from tests.fixtures.gc import (
    BUCKET,
    Background,
    Gate,
    assert_whole,
    block_rows,
    cas_env,
    data,
    delete_block_file,
    flip_byte,
    manifest_ids,
    run_cas,
)

pytestmark = pytest.mark.integration

REPORT_KEYS = {"deep", "findings", "objects", "parts", "manifests", "manifests_unreferenced", "blocks",
               "blocks_referenced", "blocks_unreferenced", "blocks_condemned", "blocks_deleting",
               "blocks_damaged", "marked_damaged", "orphans", "temp_files", "bytes_read", "packs", "packs_checked",
               "packs_open", "packs_abandoned", "packs_retired", "pack_bytes", "pack_bytes_read", "locations",
               "manifests_not_in_packs", "damaged_objects", "repaired", "mark_memory", "seconds", "clean"}
FINDING_KEYS = {"kind", "block", "objects", "detail", "repaired", "pack"}


def _json(proc) -> dict:
    out = json.loads(proc.stdout)
    assert set(out) == REPORT_KEYS, set(out) ^ REPORT_KEYS
    for f in out["findings"]:
        assert set(f) == FINDING_KEYS
    return out


def test_repair_cli_exit_codes_and_json(local_gc_store, tmp_path):
    s = local_gc_store
    x, y = data(900_000, 60), data(600_000, 61)
    s.put(BUCKET, "x", x)
    s.put(BUCKET, "y", y)
    d = s.settings.data_dir
    ok = run_cas(d, "verify", "--repair", "--json")
    assert ok.returncode == 0, ok.stderr
    out = _json(ok)
    assert out["clean"] is True and out["findings"] == [] and out["repaired"] == 0 and out["objects"] == 2

    gone, rotten = manifest_ids(s, BUCKET, "x")[2], manifest_ids(s, BUCKET, "y")[1]
    delete_block_file(s, gone)
    flip_byte(s, rotten)
    bad = run_cas(d, "verify", "--deep", "--repair", "--json")
    assert bad.returncode == 1, bad.stderr  # findings were found, even though they were repaired
    out = _json(bad)
    assert out["clean"] is False and out["repaired"] == 2 and out["marked_damaged"] == 2
    assert sorted((f["kind"], f["block"], f["objects"], f["repaired"]) for f in out["findings"]) == sorted([
        ("missing_block", gone.hex(), [f"{BUCKET}/x"], True),
        ("corrupt_block", rotten.hex(), [f"{BUCKET}/y"], True),
    ])
    assert out["damaged_objects"] == [f"{BUCKET}/x", f"{BUCKET}/y"]
    # repaired rows are dropped: verify still names the damaged objects (no row for their block)
    after = run_cas(d, "verify", "--json")
    assert after.returncode == 1
    out = _json(after)
    assert {(f["kind"], f["block"]) for f in out["findings"]} == {("missing_block_row", gone.hex()),
                                                                   ("missing_block_row", rotten.hex())}
    assert out["damaged_objects"] == [f"{BUCKET}/x", f"{BUCKET}/y"]
    # the bytes uploaded again (through the command line) heal both
    for key, body in (("x2", x), ("y2", y)):
        src = tmp_path / key
        src.write_bytes(body)
        assert run_cas(d, "put", str(src), f"{BUCKET}/{key}").returncode == 0
    text = run_cas(d, "verify", "--deep", "--repair")
    assert text.returncode == 0 and b"verify --deep: clean" in text.stdout, text.stdout
    got = run_cas(d, "get", f"{BUCKET}/x")
    assert got.returncode == 0 and got.stdout == x


CRASH_POINTS = ["verify.after_mark", "verify.repair.after_deleting", "verify.repair.after_block_delete"]


@pytest.mark.crash
@pytest.mark.parametrize("point", CRASH_POINTS)
def test_kill_during_repair_leaves_a_store_that_verify_reads_and_repair_finishes(local_gc_store, tmp_path, point):
    s = local_gc_store
    x = data(900_000, 62)
    s.put(BUCKET, "x", x)
    s.put(BUCKET, "x-copy", x)
    rotten = manifest_ids(s, BUCKET, "x")[3]
    flip_byte(s, rotten)
    d = s.settings.data_dir
    crashed = run_cas(d, "verify", "--deep", "--repair", env=cas_env(CAS_TESTONLY_CRASH_AT=point))
    assert crashed.returncode == -9, (crashed.returncode, crashed.stderr)
    # verify runs (the lock died with the process) and still names both damaged objects
    seen = run_cas(d, "verify", "--json", "--wait", "5s")
    assert seen.returncode == 1, seen.stderr
    assert _json(seen)["damaged_objects"] == [f"{BUCKET}/x", f"{BUCKET}/x-copy"]
    # a second repair finishes the job; nothing it leaves is dangling or half-deleted
    again = run_cas(d, "verify", "--deep", "--repair", "--json")
    assert again.returncode == 1
    assert all(f["repaired"] for f in _json(again)["findings"]), again.stdout
    rows = block_rows(s)
    assert rotten not in rows or rows[rotten].state == DAMAGED
    src = tmp_path / "x"
    src.write_bytes(x)
    assert run_cas(d, "put", str(src), f"{BUCKET}/x-again").returncode == 0
    assert_whole(s, {(BUCKET, "x"): x, (BUCKET, "x-copy"): x, (BUCKET, "x-again"): x})


# -- the damaged state against GC and writers (in-process) ------------------------------------------


def test_gc_never_condemns_a_damaged_block_and_verify_names_its_objects_until_healed(gc_store):
    s = gc_store
    x = data(900_000, 63)
    s.put(BUCKET, "x", x)
    bid = manifest_ids(s, BUCKET, "x")[1]
    delete_block_file(s, bid)
    with pytest.raises(ObjectDamaged):
        s.get_bytes(BUCKET, "x")
    assert block_rows(s)[bid].state == DAMAGED
    s.clock.advance(10 * 86400)
    collect(s, delete=True, min_age=0)
    assert block_rows(s)[bid].state == DAMAGED  # still referenced: GC leaves it alone
    r = verify(s)
    assert [(f.kind, f.objects) for f in r.findings] == [("missing_block", (f"{BUCKET}/x",))]
    s.put(BUCKET, "y", x)
    assert block_rows(s)[bid].state == LIVE
    collect(s, delete=True, min_age=0)
    assert_whole(s, {(BUCKET, "x"): x, (BUCKET, "y"): x})


def test_a_writer_that_relied_on_a_block_marked_damaged_meanwhile_does_not_commit(gc_store):
    s = gc_store
    x = data(900_000, 64)
    s.put(BUCKET, "x", x)
    bid = manifest_ids(s, BUCKET, "x")[2]
    gate = Gate()
    writer = Background(s.put, BUCKET, "y", x, before_commit=gate)  # dedups: relies on every block
    assert gate.reached.wait(30)
    delete_block_file(s, bid)
    with pytest.raises(ObjectDamaged):
        s.get_bytes(BUCKET, "x")  # marks the block damaged while the writer waits to commit
    gate.release.set()
    with pytest.raises(TransientStoreError):
        writer.result()
    s.put(BUCKET, "y", x)  # the retry writes the block again
    assert_whole(s, {(BUCKET, "x"): x, (BUCKET, "y"): x})


def test_a_stale_damage_mark_is_reported_and_repaired(gc_store):
    s = gc_store
    x = data(500_000, 65)
    s.put(BUCKET, "x", x)
    bid = manifest_ids(s, BUCKET, "x")[0]
    with s.index.write() as t:  # as if a read had failed while a writer was replacing the block
        row = t.get_block(bid)
        t.put_block(bid, row.__class__(DAMAGED, row.stored_size, row.raw_len, row.created, row.state_time))
    r = verify(s, repair=True)
    assert [(f.kind, f.repaired) for f in r.findings] == [("stale_damage_mark", True)]
    assert r.damaged_objects == []
    assert block_rows(s)[bid].state == LIVE
    assert_whole(s, {(BUCKET, "x"): x})
