"""Repacking (``cas/gc/packs.py``, DESIGN §8) on the local backend and SeaweedFS.

Space comes back (dead packs deleted, packs under the live threshold rewritten, small packs
merged, the open pack a killed process left), an old pack is deleted only after the reader
grace, a pack the index does not know is taken in, and each repack hazard of issue 12 gets a
deterministic test driven through GC's hook points (and, for readers, a GC run injected between
a reader's lookup and its read): a reader in flight, a writer that resurrects a block while it
is copied, a block deleted between copy and sync, a dry run that must count what the real run does.

Most tests start from ``_mixed_pack``: object ``dx`` = D + X is written into one pack, then
``x`` = X dedups against it (the same cut points after the first block of X), then ``dx`` is
deleted, so the pack holding X's blocks is about a quarter live once D's blocks are gone.
Every test ends with the pack bookkeeping checked against the locations (``assert_packs_sound``),
the surviving objects read back byte-identical and ``verify --deep`` clean.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from cas import blocklife
from cas.blocks import packs_of
from cas.blocks.packs import format as fmt
from cas.blocks.packs.store import drop_location
from cas.config import load_settings
from cas.errors import BlockNotFound, IntegrityError, TransientStoreError
from cas.gc.sweep import collect
from cas.gc.verify import verify
from cas.ids import block_id
from cas.index.schema import KIND_DATA, LIVE, PACK_OPEN, PACK_RETIRED, PACK_SEALED, PackRow
from tests.fixtures.gc import (
    BUCKET,
    GC_KINDS,
    assert_packs_sound,
    assert_whole,
    block_rows,
    cas_env,
    data,
    locations,
    manifest_ids,
    open_gc_store,
    pack_files,
    pack_overhead,
    pack_rows,
    run_cas,
    seal,
    set_clock,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

GRACE = 3600.0
PACK_COUNTS = ("packs_retired", "packs_deleted", "pack_bytes_freed", "packs_repacked", "repacked_entries",
               "repacked_bytes", "repack_skipped")


def _mixed_pack(s, seed: int, dead: int = 3_000_000, live: int = 1_000_000):
    """``x`` lives mostly in a sealed pack that the deleted ``dx`` fills to three quarters:
    (X's bytes, that pack's id, X's blocks in it)."""
    d, x = data(dead, seed), data(live, seed + 1)
    s.put(BUCKET, "dx", d + x)
    seal(s)
    s.put(BUCKET, "x", x)
    shared = sorted(set(manifest_ids(s, BUCKET, "x")) & set(manifest_ids(s, BUCKET, "dx")))
    assert len(shared) >= len(set(manifest_ids(s, BUCKET, "x"))) - 2, "x should dedup against dx"
    packs = {packs_of(s.blocks).location(bid).pack for bid in shared}
    assert len(packs) == 1, "dx should be in one pack"
    s.delete(BUCKET, "dx")
    return x, packs.pop(), shared


def _pack_of(s, bid: bytes) -> bytes:
    return packs_of(s.blocks).location(bid).pack


def _condemn_then_reclaim(s, clock) -> dict:
    """Two runs with the grace: the first condemns D's blocks, the second (grace over) deletes them
    and so repacks the pack they shared with X; the second run's report."""
    first = collect(s, delete=True, min_age=GRACE)
    assert first.condemned > 0 and first.packs_repacked == 0
    clock.advance(GRACE + 1)
    return collect(s, delete=True, min_age=GRACE)


# -- space comes back ----------------------------------------------------------------------------

@pytest.fixture(params=GC_KINDS)
def small_pack_store(request, tmp_path, clock):
    """A store over each backend whose packs are sealed at 1 MiB."""
    settings = load_settings(tmp_path / "data", {"gc": {"min_age": 0}, "blocks": {"pack_size": "1M"}}, env={})
    s = open_gc_store(request.param, settings, request)
    set_clock(s, clock)
    s.create_bucket(BUCKET)
    yield s
    s.close()


def test_deleted_objects_give_their_packs_back(small_pack_store):
    s = small_pack_store
    bodies = {f"k{i}": data(700_000, 100 + i) for i in range(8)}
    for key, body in bodies.items():
        s.put(BUCKET, key, body)
    seal(s)
    before = s.stats()
    assert before["packs"] >= 5 and before["dead_bytes"] <= pack_overhead(s)
    old_packs = set(pack_rows(s))
    assert old_packs == pack_files(s)
    for key in list(bodies)[:-2]:  # most of them go; the last two stay
        s.delete(BUCKET, key)
        del bodies[key]
    swept = []

    def hook(point):
        if point == "before_packs":  # blocks and manifests are dropped; the packs are not reclaimed yet
            swept.append(s.stats())

    report = collect(s, delete=True, min_age=0, hook=hook)
    assert swept[0]["dead_bytes"] > before["pack_bytes"] / 2
    assert report.packs_retired >= 4 and report.packs_deleted == report.packs_retired
    after = s.stats()
    assert after["retired_packs"] == 0
    assert after["dead_bytes"] <= pack_overhead(s) < swept[0]["dead_bytes"] / 20
    assert after["pack_bytes"] < before["pack_bytes"] / 2
    files = pack_files(s)
    assert len(old_packs - files) == report.packs_deleted  # gone from the backend, not just the index
    assert files == set(pack_rows(s))
    assert_packs_sound(s)
    assert_whole(s, {(BUCKET, k): b for k, b in bodies.items()})


def test_a_pack_under_the_live_threshold_is_repacked_and_deleted_after_the_grace(gc_store, clock):
    s = gc_store
    x, old, shared = _mixed_pack(s, 20)
    report = _condemn_then_reclaim(s, clock)
    assert report.deleted > 0
    assert report.packs_repacked == 1 and report.repacked_entries == len(shared)
    assert report.packs_retired == 1 and report.packs_deleted == 0
    rows = pack_rows(s)
    assert rows[old].state == PACK_RETIRED and old in pack_files(s)  # kept for readers in flight
    new = {_pack_of(s, bid) for bid in shared}
    assert old not in new and all(rows[p].state in (PACK_OPEN, PACK_SEALED) for p in new)
    assert_packs_sound(s)
    assert_whole(s, {(BUCKET, "x"): x})

    clock.advance(GRACE / 2)  # the grace runs from the retirement, not from the deletions
    assert collect(s, delete=True, min_age=GRACE).packs_deleted == 0
    assert old in pack_files(s)
    clock.advance(GRACE / 2 + 1)
    report = collect(s, delete=True, min_age=GRACE)
    assert report.packs_deleted == 1 and report.pack_bytes_freed == rows[old].size
    assert old not in pack_files(s) and old not in pack_rows(s)
    assert s.stats()["dead_bytes"] <= pack_overhead(s)
    assert_packs_sound(s)
    assert_whole(s, {(BUCKET, "x"): x})


# -- readers in flight ---------------------------------------------------------------------------

def test_reader_in_flight_during_a_repack_reads_every_byte(gc_store, clock):
    """An object reader that started before the repack finishes after it, within the grace."""
    s = gc_store
    x, old, shared = _mixed_pack(s, 30, dead=12_000_000, live=8_000_000)  # several read windows
    collect(s, delete=True, min_age=GRACE)
    clock.advance(GRACE + 1)
    reader = s.open(BUCKET, "x")
    it = iter(reader)
    got = [next(it)]
    while sum(map(len, got)) < 1_000_000:
        got.append(next(it))
    report = collect(s, delete=True, min_age=GRACE)
    assert report.packs_repacked == 1 and pack_rows(s)[old].state == PACK_RETIRED
    assert b"".join(got) + b"".join(it) == x
    reader.close()
    assert_whole(s, {(BUCKET, "x"): x})


def _after_lookup(s, pack: bytes, action) -> list:
    """Run ``action`` once, at the first read of ``pack``: after a reader looked its locations
    up, before it reads them (the list says whether it ran)."""
    files = packs_of(s.blocks).files
    read = files.read
    fired: list[int] = []

    def read_after(pack_id, offset, length):
        if pack_id == pack and not fired:
            fired.append(1)
            action()
        return read(pack_id, offset, length)

    files.read = read_after
    return fired


@pytest.mark.parametrize("grace_over", [False, True])
def test_a_read_that_looked_up_the_old_location_completes_within_the_grace_and_fails_loudly_after(
        gc_store, clock, grace_over):
    """Within the grace the retired pack still answers; once it is deleted the read fails
    (``BlockNotFound``, never other bytes); a fresh lookup finds the new location."""
    s = gc_store
    x, old, shared = _mixed_pack(s, 40)
    collect(s, delete=True, min_age=GRACE)
    clock.advance(GRACE + 1)

    def repack():
        assert collect(s, delete=True, min_age=GRACE).packs_repacked == 1
        assert all(_pack_of(s, bid) != old for bid in shared)
        if grace_over:
            clock.advance(GRACE + 1)
            assert collect(s, delete=True, min_age=GRACE).packs_deleted == 1

    fired = _after_lookup(s, old, repack)
    if not grace_over:
        got = list(s.blocks.get_many(shared))  # looked up in the old pack, read from it after the repack
        assert fired and [s.codec.decode(b, r) for b, r in zip(shared, got)]
    else:
        with pytest.raises(BlockNotFound):
            list(s.blocks.get_many(shared))
        assert fired and old not in pack_files(s)
        with pytest.raises(BlockNotFound):
            packs_of(s.blocks).files.read(old, 0, 16)
    assert [s.codec.decode(b, r) for b, r in zip(shared, s.blocks.get_many(shared))]  # a fresh lookup
    assert_packs_sound(s)
    assert_whole(s, {(BUCKET, "x"): x})


def test_an_object_reader_whose_lookup_went_stale_reads_the_new_location(gc_store, clock):
    """The Store reads a window whose pack read fails block by block, looking each up again: a
    repack and the deletion of the old pack between its lookup and its read cost it nothing."""
    s = gc_store
    x, old, shared = _mixed_pack(s, 45)
    collect(s, delete=True, min_age=GRACE)
    clock.advance(GRACE + 1)

    def repack_and_delete():
        assert collect(s, delete=True, min_age=GRACE).packs_repacked == 1
        clock.advance(GRACE + 1)
        assert collect(s, delete=True, min_age=GRACE).packs_deleted == 1

    fired = _after_lookup(s, old, repack_and_delete)
    assert s.get_bytes(BUCKET, "x") == x
    assert fired and old not in pack_files(s)
    assert {r.state for b, r in block_rows(s).items() if b in shared} == {LIVE}  # not marked damaged
    assert_whole(s, {(BUCKET, "x"): x})


# -- writers during a repack ---------------------------------------------------------------------

def test_writer_resurrecting_a_block_while_it_is_copied(gc_store, clock):
    """X's blocks are condemned (``x`` deleted) and copied out of their pack when a writer puts X
    again: it resurrects them without writing them; both finish and nothing points at the old pack."""
    s = gc_store
    x, old, shared = _mixed_pack(s, 50)
    collect(s, delete=True, min_age=GRACE)  # D's blocks condemned
    clock.advance(GRACE + 1)
    s.delete(BUCKET, "x")
    puts = []

    def hook(point):
        if point == "after_repack_copy" and not puts:
            rows = block_rows(s)
            assert {rows[b].state for b in shared} == {blocklife.CONDEMNED}
            before = s.blocks.counters.snapshot()["puts"]
            puts.append(s.put(BUCKET, "x2", x))
            assert s.blocks.counters.snapshot()["puts"] - before <= 3  # relied on the copied blocks

    report = collect(s, delete=True, min_age=GRACE, hook=hook)  # X's blocks condemned, D's deleted
    assert puts and report.packs_repacked == 1 and report.packs_retired == 1
    assert {block_rows(s)[b].state for b in shared} == {LIVE}
    assert all(_pack_of(s, bid) != old for bid in shared)
    assert_packs_sound(s)
    assert_whole(s, {(BUCKET, "x2"): x})
    clock.advance(GRACE + 1)
    report = collect(s, delete=True, min_age=GRACE)
    assert report.packs_deleted == 1 and old not in pack_files(s)
    clock.advance(GRACE + 1)
    assert collect(s, delete=True, min_age=GRACE).deleted == 0
    assert_packs_sound(s)
    assert_whole(s, {(BUCKET, "x2"): x})


def test_writer_writing_a_block_while_it_is_copied_moves_it_once_more(gc_store, clock):
    s = gc_store
    x, old, shared = _mixed_pack(s, 60)
    collect(s, delete=True, min_age=GRACE)
    clock.advance(GRACE + 1)
    packs = packs_of(s.blocks)
    rewritten = shared[:3]
    done = []

    def hook(point):
        if point == "after_repack_copy" and not done:  # e.g. a writer repairing a block it found damaged
            for bid in rewritten:
                packs.put(bid, packs.get(bid))
            packs.sync(rewritten)
            done.append(1)

    assert collect(s, delete=True, min_age=GRACE, hook=hook).packs_retired == 1
    assert done and all(_pack_of(s, bid) != old for bid in shared)
    assert_packs_sound(s)
    assert_whole(s, {(BUCKET, "x"): x})


def test_block_deleted_between_copy_and_sync_ends_as_an_orphan_the_next_run_reclaims(gc_store, clock):
    """What another process would do to X's blocks between the copy and the sync (GC's lock keeps
    other runs out, so the test does it by hand): drop the name, the rows and the locations."""
    s = gc_store
    x, old, shared = _mixed_pack(s, 70)
    collect(s, delete=True, min_age=GRACE)
    clock.advance(GRACE + 1)
    done = []

    def hook(point):
        if point == "after_repack_copy" and not done:
            s.delete(BUCKET, "x")
            with s.index.write() as t:
                now = clock()
                for bid in shared:
                    row = t.get_block(bid)
                    blocklife.condemn(t, bid, row, now)
                    blocklife.mark_deleting(t, bid, t.get_block(bid), now)
                    drop_location(t, KIND_DATA, bid)
                    blocklife.drop(t, bid, t.get_block(bid))
            done.append(1)

    report = collect(s, delete=True, min_age=GRACE, hook=hook)
    assert done and report.packs_retired == 1
    rows = block_rows(s)
    located = {eid for (kind, eid) in locations(s) if kind == KIND_DATA}
    assert set(shared) <= located and not set(shared) & set(rows)  # copies with no row: orphans
    assert_packs_sound(s)
    assert_whole(s, {})
    report = collect(s, delete=True, min_age=0)
    assert report.orphans >= len(shared)
    seal(s)  # a pack this process still appends to is not reclaimed
    collect(s, delete=True, min_age=0)
    assert not locations(s)
    assert s.stats()["dead_bytes"] <= pack_overhead(s)
    assert_packs_sound(s)
    assert_whole(s, {})


# -- small packs, abandoned packs ----------------------------------------------------------------

def test_small_packs_are_merged(gc_store):
    """A store over S3 writes a pack per small commit; a local one does when sealed each time."""
    s = gc_store
    bodies = {f"s{i}": data(150_000, 200 + i) for i in range(12)}
    for key, body in bodies.items():
        s.put(BUCKET, key, body)
        seal(s)
    before = pack_rows(s)
    assert len(before) >= 12
    report = collect(s, delete=True, min_age=0)
    assert report.packs_repacked >= 8
    after = pack_rows(s)
    assert len(after) <= 2, f"{len(before)} small packs became {len(after)}"
    assert not set(after) & set(before) and pack_files(s) == set(after)
    assert_packs_sound(s)
    assert_whole(s, {(BUCKET, k): b for k, b in bodies.items()})


def _unknown_pack(s) -> bytes:
    """A complete pack in the backend that the index has no row for (another store's on the same
    prefix, or this store's with its index lost): every pack of ours gets its row first."""
    files = packs_of(s.blocks).files
    pid = os.urandom(fmt.PACK_ID_LEN)
    raw = data(50_000, 95)
    sink = files.create(pid)
    sink.write(fmt.header(pid))
    sink.write(raw)
    entry = fmt.Entry(KIND_DATA, os.urandom(32), fmt.HEADER_LEN, len(raw), len(raw))
    sink.write(fmt.footer([entry], fmt.HEADER_LEN + len(raw)))
    sink.finish()
    return pid


def test_a_pack_the_index_does_not_know_is_counted_and_never_deleted(gc_store, clock):
    s = gc_store
    keep = data(300_000, 96)
    s.put(BUCKET, "keep", keep)
    seal(s)
    pid = _unknown_pack(s)
    assert pid in pack_files(s) and pid not in pack_rows(s)
    for _ in range(2):
        report = collect(s, delete=True, min_age=0)
        assert report.unknown_packs == 1 and report.packs_deleted == 0
        assert pid in pack_files(s) and pid not in pack_rows(s)
        clock.advance(30 * 86400)  # however old it is
    assert s.get_bytes(BUCKET, "keep") == keep
    report = verify(s, deep=True)  # verify names it (an operator decides), and nothing else
    assert [(f.kind, f.pack) for f in report.findings] == [("unknown_pack", pid.hex())]


def test_every_pack_has_its_row_before_its_first_byte(gc_store):
    """So that GC can leave row-less packs alone: a pack being written is already known (open,
    with a lease), on S3 too, where nothing of it is readable before it is complete."""
    s = gc_store
    packs = packs_of(s.blocks)
    raw = data(40_000, 97)
    bid = block_id(raw)
    packs.put(bid, s.codec.encode(raw))
    p, _ = packs._pending_entry(KIND_DATA, bid)
    rows = pack_rows(s)
    assert rows[p.id].state == PACK_OPEN
    with s.index.read() as t:
        assert t.writer_expiry(p.id) is not None  # its lease: GC knows whether its process lives
    packs.sync([bid])
    assert packs.location(bid).pack == p.id


@pytest.mark.parametrize("gc_store", [k for k in GC_KINDS if k == "s3"], indirect=True)
def test_a_writer_recording_into_a_retired_pack_fails_instead_of_pointing_at_it(gc_store):
    """A process whose lease lapsed while it wrote an S3 pack: GC retired the pack (its located
    entries, none here, copied out); the writer's seal must not record locations into it."""
    s = gc_store
    packs = packs_of(s.blocks)
    raw = data(40_000, 97)
    bid = block_id(raw)
    packs.put(bid, s.codec.encode(raw))
    p, _ = packs._pending_entry(KIND_DATA, bid)
    with s.index.write() as t:
        row = t.get_pack(p.id)
        t.put_pack(p.id, PackRow(PACK_RETIRED, row.size, 0, 0, 0, row.created, s.clock()))
    with pytest.raises(TransientStoreError):
        packs.sync([bid])
    assert packs.location(bid) is None
    collect(s, delete=True, min_age=0)
    assert p.id not in pack_files(s) and p.id not in pack_rows(s)
    assert_whole(s, {})


def test_a_pack_whose_dead_bytes_are_its_header_and_footer_is_left_alone(gc_store):
    """A pack of one tiny object is mostly header and footer: rewriting it would give the same
    pack again on every run."""
    s = gc_store
    s.put(BUCKET, "tiny", b"t")
    seal(s)
    before = pack_rows(s)
    for _ in range(2):
        report = collect(s, delete=True, min_age=0)
        assert report.packs_repacked == 0 and report.packs_retired == 0
    assert pack_rows(s) == before
    assert_whole(s, {(BUCKET, "tiny"): b"t"})


def test_the_open_pack_of_a_killed_put_is_reclaimed(local_gc_store, tmp_path):
    s = local_gc_store
    keep = data(300_000, 80)
    s.put(BUCKET, "keep", keep)
    src = tmp_path / "body"
    src.write_bytes(data(2_000_000, 81))
    mine = set(pack_rows(s))
    crashed = run_cas(s.settings.data_dir, "put", str(src), f"{BUCKET}/lost",
                      env=cas_env(CAS_TESTONLY_CRASH_AT="writer.before_commit"))
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    left = {pid: row for pid, row in pack_rows(s).items() if pid not in mine}
    assert len(left) == 1
    (abandoned, row), = left.items()
    # flushed, never located: a writer locates its entries in its commit txn, which never came
    assert row.state == PACK_OPEN and row.live_entries == 0 and abandoned in pack_files(s)
    report = collect(s, delete=True, min_age=0)
    assert report.abandoned_packs == 1 and report.orphans == 0  # its blocks were never located
    assert report.packs_retired >= 1 and report.packs_deleted >= 1
    assert abandoned not in pack_rows(s) and abandoned not in pack_files(s)
    assert s.stats()["dead_bytes"] <= pack_overhead(s)
    assert_packs_sound(s)
    assert_whole(s, {(BUCKET, "keep"): keep})


def test_the_open_pack_of_a_killed_process_with_committed_objects_is_repacked(local_gc_store):
    """A process killed after its commits (a server): its open pack holds live blocks; GC copies
    them out, retires and deletes the pack."""
    s = local_gc_store
    body = data(1_500_000, 82)
    script = textwrap.dedent(f"""
        import os, signal
        from cas.config import load_settings
        from cas.store import Store
        s = Store.open_store(load_settings({str(s.settings.data_dir)!r}, {{"gc": {{"min_age": 0}}}}, env={{}}))
        s.put({BUCKET!r}, "committed", open({str(s.settings.data_dir / 'body')!r}, "rb").read())
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    (s.settings.data_dir / "body").write_bytes(body)
    proc = subprocess.run([sys.executable, "-c", script], env=cas_env(), capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    (s.settings.data_dir / "body").unlink()
    opened = {pid: row for pid, row in pack_rows(s).items() if row.state == PACK_OPEN}
    assert len(opened) == 1
    (abandoned, row), = opened.items()
    assert row.live_entries > 0
    report = collect(s, delete=True, min_age=0)
    assert report.abandoned_packs == 1 and report.packs_repacked == 1
    assert report.repacked_entries == row.live_entries
    assert abandoned not in pack_rows(s) and abandoned not in pack_files(s)
    assert s.stats()["dead_bytes"] <= pack_overhead(s)
    assert_packs_sound(s)
    assert_whole(s, {(BUCKET, "committed"): body})


# -- dry run -------------------------------------------------------------------------------------

def _pack_state(s):
    return pack_rows(s), pack_files(s), locations(s)


def _numbers(report) -> dict:
    d = report.to_dict()
    return {k: d[k] for k in PACK_COUNTS}


@pytest.mark.parametrize("grace", [GRACE, 0.0])
def test_dry_run_counts_what_the_real_run_does_and_changes_nothing(gc_store, clock, grace):
    s = gc_store
    x, old, shared = _mixed_pack(s, 90)  # a pack to repack
    s.put(BUCKET, "dead", data(800_000, 92))
    seal(s)
    s.delete(BUCKET, "dead")  # a pack to retire
    if grace:  # D's and dead's blocks condemned; the next run deletes them
        collect(s, delete=True, min_age=grace)
        clock.advance(grace + 1)
    rounds = 0
    while True:
        state = _pack_state(s)
        dry = collect(s, delete=False, min_age=grace)
        assert _pack_state(s) == state  # a dry run changes nothing
        real = collect(s, delete=True, min_age=grace)
        assert _numbers(dry) == _numbers(real)
        rounds += 1
        if real.packs_deleted:
            break
        assert real.packs_retired >= 2 and real.packs_repacked >= 1 and rounds == 1
        clock.advance(grace + 1)
    assert old not in pack_files(s)
    assert_packs_sound(s)
    assert_whole(s, {(BUCKET, "x"): x})


def test_dry_run_counts_the_open_pack_of_a_killed_writer_too(local_gc_store, tmp_path):
    """The real run reaps the dead writer's pack lease first: its pack counts as abandoned in the
    dry run as well, and the orphans in it as dropped."""
    s = local_gc_store
    s.put(BUCKET, "keep", data(300_000, 93))
    src = tmp_path / "body"
    src.write_bytes(data(1_000_000, 94))
    crashed = run_cas(s.settings.data_dir, "put", str(src), f"{BUCKET}/lost",
                      env=cas_env(CAS_TESTONLY_CRASH_AT="writer.before_commit"))
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    state = _pack_state(s)
    dry = collect(s, delete=False, min_age=0)
    assert _pack_state(s) == state
    real = collect(s, delete=True, min_age=0)
    assert real.abandoned_packs == 1 and real.packs_deleted == 1
    assert _numbers(dry) == _numbers(real) and dry.abandoned_packs == 1
    assert_packs_sound(s)
    assert_whole(s, {(BUCKET, "keep"): data(300_000, 93)})
