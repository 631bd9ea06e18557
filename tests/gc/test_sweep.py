"""GC behaviour that is not a race: what is reclaimed, dry runs, counters, uploads, locking, the CLI."""

from __future__ import annotations

import json
import os
import threading
import time

import pytest

from cas.errors import Conflict
from cas.gc.mark import MarkSet
from cas.gc.sweep import collect, run_periodic
from cas.gc.verify import verify
from cas.ids import block_id
from cas.manifest import Manifest
from tests.fixtures.gc import (
    BUCKET,
    assert_whole,
    block_ids,
    block_rows,
    cas_env,
    data,
    manifest_ids,
    run_cas,
    stored_ids,
)

# -- mark sets -------------------------------------------------------------------------------------

@pytest.mark.unit
def test_markset_membership_is_exact_for_random_ids_and_costs_8_bytes_each():
    ids = [block_id(i.to_bytes(4, "big")) for i in range(50_000)]
    m = MarkSet()
    for bid in ids + ids[:5000]:
        m.add(bid)
    assert len(m) == len(ids)
    assert all(bid in m for bid in ids)
    assert not any(block_id(b"x" + i.to_bytes(4, "big")) in m for i in range(20_000))
    assert m.nbytes() <= 8.6 * len(ids)
    late = block_id(b"late")
    m.add(late)  # after freezing: stays sorted
    assert late in m and len(m) == len(ids) + 1


@pytest.mark.unit
def test_markset_reads_manifest_encoding():
    ids = [block_id(bytes([i])) for i in range(10)]
    m = MarkSet()
    assert m.add_manifest(Manifest(tuple(ids), tuple(range(1, 11))).encode()) == 10
    assert all(bid in m for bid in ids)


# -- what gets reclaimed ---------------------------------------------------------------------------



@pytest.mark.integration
def test_deleted_and_overwritten_objects_are_reclaimed_shared_blocks_kept(gc_store):
    s = gc_store
    a, b = data(600_000, 20), data(400_000, 21)
    s.put(BUCKET, "a", a)
    s.put(BUCKET, "ab", a + b)
    s.put(BUCKET, "over", b)
    s.put(BUCKET, "over", a)  # overwrite: b's blocks only in "ab" now
    s.delete(BUCKET, "ab")
    keep = set(manifest_ids(s, BUCKET, "a"))
    report = collect(s, delete=True, min_age=0)
    assert report.deleted > 0 and report.manifests_deleted == 2
    assert block_ids(s) == keep and stored_ids(s) == keep
    st = s.stats()
    assert st["unique_blocks"] == len(keep)
    assert st["stored_bytes"] == sum(r.stored_size for r in block_rows(s).values())
    assert_whole(s, {(BUCKET, "a"): a, (BUCKET, "over"): a})
    with s.index.read() as t:
        assert not list(t.iter_refs(0))  # trimmed up to the snapshot


@pytest.mark.integration
def test_dry_run_changes_nothing_and_predicts_the_real_run(gc_store):
    s = gc_store
    s.put(BUCKET, "keep", data(300_000, 22))
    s.put(BUCKET, "gone", data(500_000, 23))
    s.delete(BUCKET, "gone")
    rows, files = block_rows(s), stored_ids(s)
    with s.index.read() as t:
        manifests = [m for m, _ in t.iter_manifests()]
    dry = collect(s, delete=False, min_age=0)
    assert block_rows(s) == rows and stored_ids(s) == files
    with s.index.read() as t:
        assert [m for m, _ in t.iter_manifests()] == manifests
        assert list(t.iter_refs(0))
    real = collect(s, delete=True, min_age=0)
    assert (dry.deleted, dry.deleted_bytes, dry.condemned, dry.manifests_deleted) == \
           (real.deleted, real.deleted_bytes, real.condemned, real.manifests_deleted)
    assert dry.freed_bytes == real.freed_bytes and not dry.delete


@pytest.mark.integration
def test_grace_two_runs_condemn_then_delete(gc_store, clock):
    s = gc_store
    s.put(BUCKET, "gone", data(500_000, 24))
    ids = set(manifest_ids(s, BUCKET, "gone"))
    s.delete(BUCKET, "gone")
    first = collect(s, delete=True, min_age=3600)
    assert first.condemned == len(ids) and first.deleted == 0 and first.pending == len(ids)
    assert ids <= stored_ids(s)
    clock.advance(1800)
    assert collect(s, delete=True, min_age=3600).deleted == 0
    clock.advance(1800)
    assert collect(s, delete=True, min_age=3600).deleted == len(ids)
    assert not ids & stored_ids(s)


@pytest.mark.integration
def test_open_upload_parts_are_kept_and_expired_uploads_reclaimed(gc_store, clock):
    s = gc_store
    p1, p2 = data(300_000, 25), data(300_000, 26)
    up = s.create_upload(BUCKET, "mp")
    s.upload_part(up, 1, p1)
    old = s.create_upload(BUCKET, "old")
    s.upload_part(old, 1, p2)
    collect(s, delete=True, min_age=0)
    assert s.list_parts(up) and s.list_parts(old)
    clock.advance(s.settings.gc.upload_expiry - 60)
    up2 = s.create_upload(BUCKET, "young")
    s.upload_part(up2, 1, p1)
    clock.advance(120)
    dry = collect(s, delete=False, min_age=0)
    assert dry.uploads_expired == 2
    report = collect(s, delete=True, min_age=0)
    assert report.uploads_expired == 2 and report.deleted > 0
    done = s.complete_upload(up2, [(1, s.list_parts(up2)[0].etag)])
    assert done.size == len(p1)
    assert_whole(s, {(BUCKET, "young"): p1})


@pytest.mark.integration
def test_only_one_gc_at_a_time(gc_store):
    s = gc_store
    with s.index.lock("gc"):
        with pytest.raises(Conflict, match=rf"another gc or verify is running .*pid {os.getpid()}\b"):
            collect(s, delete=True)
    collect(s, delete=True)


@pytest.mark.integration
def test_a_gc_that_stops_early_reports_interrupted_and_keeps_refs(gc_store):
    s = gc_store
    s.put(BUCKET, "gone", data(500_000, 27))
    s.delete(BUCKET, "gone")
    stop = threading.Event()
    stop.set()
    report = collect(s, delete=True, min_age=0, stop=stop)
    assert report.interrupted
    with s.index.read() as t:
        assert list(t.iter_refs(0))
    assert_whole(s, {})


@pytest.mark.integration
def test_run_periodic_collects_until_stopped(local_gc_store):
    from dataclasses import replace

    s = local_gc_store
    s.settings = replace(s.settings, gc=replace(s.settings.gc, interval=0.2, min_age=0))
    s.put(BUCKET, "gone", data(300_000, 28))
    s.delete(BUCKET, "gone")
    stopping = threading.Event()
    t = threading.Thread(target=run_periodic, args=(s, stopping))
    t.start()
    deadline = time.monotonic() + 30
    while block_ids(s) and time.monotonic() < deadline:
        time.sleep(0.1)
    stopping.set()
    t.join(30)
    assert not t.is_alive() and not block_ids(s)


_LEFT_OPEN = """
import sys
from cas.config import load_settings
from cas.store import Store

store = Store.open_store(load_settings(sys.argv[1], env={}))
store.put(sys.argv[2], "left-open", bytes.fromhex(sys.stdin.readline().strip()))
print("committed", flush=True)  # acknowledged; its pack is still open (not full, not idle long enough)
sys.stdin.readline()
"""


@pytest.mark.integration
def test_an_open_pack_left_by_a_killed_process_is_repacked_then_deleted(local_gc_store):
    """Packs have no temp files; what a killed writer leaves is its open pack: flushed and located
    up to its last commit, with no footer and a lease row of a dead process."""
    import signal
    import subprocess
    import sys

    from cas.blocks import packs_of
    from cas.index.schema import PACK_OPEN

    s = local_gc_store
    body = data(700_000, 31)
    child = subprocess.Popen([sys.executable, "-c", _LEFT_OPEN, str(s.settings.data_dir), BUCKET],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=cas_env())
    try:
        child.stdin.write(body.hex().encode() + b"\n")
        child.stdin.flush()
        assert child.stdout.readline() == b"committed\n"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    packs = packs_of(s.blocks)
    (pid,) = {packs.location(bid).pack for bid in manifest_ids(s, BUCKET, "left-open")}
    with s.index.read() as t:
        assert t.get_pack(pid).state == PACK_OPEN
    r = verify(s, deep=True)
    assert r.clean and (r.packs_open, r.packs_abandoned) == (1, 1)  # counted, not findings
    report = collect(s, delete=True, min_age=0)
    assert report.abandoned_packs == 1 and report.packs_repacked == 1 and report.packs_deleted == 1
    assert {packs.location(bid).pack for bid in manifest_ids(s, BUCKET, "left-open")} != {pid}
    assert not packs.files.path(pid).exists()
    with s.index.read() as t:
        assert t.get_pack(pid) is None
    assert_whole(s, {(BUCKET, "left-open"): body})


# -- the command line ------------------------------------------------------------------------------

@pytest.mark.integration
def test_cli_gc_dry_run_then_delete_json(local_gc_store):
    s = local_gc_store
    x = data(400_000, 29)
    s.put(BUCKET, "keep", x)
    s.put(BUCKET, "gone", data(400_000, 30))
    s.delete(BUCKET, "gone")
    before = stored_ids(s)
    dry = run_cas(s.settings.data_dir, "gc", "--min-age", "0")
    assert dry.returncode == 0, dry.stderr
    assert b"would free" in dry.stdout and stored_ids(s) == before
    real = run_cas(s.settings.data_dir, "gc", "--delete", "--min-age", "0", "--json")
    assert real.returncode == 0, real.stderr
    out = json.loads(real.stdout)
    assert out["dry_run"] is False and out["deleted"] == len(before - block_ids(s)) > 0
    assert_whole(s, {(BUCKET, "keep"): x})
    with s.index.lock("gc"):
        busy = run_cas(s.settings.data_dir, "gc", "--delete")
    assert busy.returncode == Conflict.exit_code and b"another gc" in busy.stderr
