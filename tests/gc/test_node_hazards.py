"""DESIGN §4's hazards across two nodes: the writer on one node, GC (and deletes) on the other.

The same interleavings as ``test_hazards.py`` (a ``before_commit`` gate, a paused body, GC's hook
points), with the writer, reader or committer on node B and GC on node A of ``nodes``: two Stores on
one shared index and one pack backend, B with a writer owner identity of another host
(``tests.fixtures.nodes``). On top: the GC lock holds across nodes, and what a dead node leaves
(writer leases, pins, an open pack) is reclaimed by the other node's GC once its leases run out,
never before. Every test ends by reading back every acknowledged object on both nodes and
running ``verify --deep``.
"""

from __future__ import annotations

import os
import time

import pytest

from cas.blocks import packs_of
from cas.errors import Conflict, TransientStoreError
from cas.gc.safety import trim_idle_refs
from cas.gc.sweep import collect
from cas.gc.verify import verify
from cas.index.schema import DELETING, KIND_DATA, LIVE, PACK_OPEN, PACK_RETIRED
from tests.fixtures.gc import (
    BUCKET,
    Background,
    Gate,
    PausedBody,
    assert_whole,
    block_ids,
    block_rows,
    data,
    manifest_ids,
    pack_rows,
    seal,
    stored_ids,
    write_orphans,
)
from tests.fixtures.nodes import kill

pytestmark = [pytest.mark.integration, pytest.mark.concurrency, pytest.mark.timeout(300)]


def _wait_pinned(store, bid: bytes, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with store.index.read() as t:
            if t.pin_writers(bid):
                return
        time.sleep(0.01)
    raise AssertionError("the writer never pinned the block")


def _whole(nodes, expected: dict) -> None:
    """Every expected object reads back on node B too; then ``assert_whole`` on node A."""
    for (bucket, key), body in expected.items():
        assert nodes.b.get_bytes(bucket, key) == body, f"{bucket}/{key} does not read back on node B"
    assert_whole(nodes.a, expected)


def _owners(store) -> set[bytes]:
    with store.index.read() as t:
        return {owner for _, _, owner in t.iter_writer_owners()}


# -- dedup against doomed data ---------------------------------------------------------------------

def test_a_block_another_node_pinned_live_is_not_condemned(nodes):
    a, b = nodes.a, nodes.b
    x = data(700_000, 101)
    a.put(BUCKET, "old", x)
    ids = set(manifest_ids(a, BUCKET, "old"))
    gate = Gate()
    puts_before = b.blocks.counters.snapshot()["puts"]
    w = Background(b.put, BUCKET, "new", x, before_commit=gate)
    assert gate.reached.wait(30)
    assert b.blocks.counters.snapshot()["puts"] == puts_before  # node B relied on dedup
    assert b.heartbeat.owner in _owners(a)  # B's lease, with B's identity, protects the blocks
    a.delete(BUCKET, "old")
    report = collect(a, delete=True, min_age=0)
    assert report.condemned == 0 and report.deleted == 0 and report.dead_writers == 0
    assert ids <= block_ids(a) and ids <= stored_ids(a)
    gate.release.set()
    w.result()
    collect(a, delete=True, min_age=0)
    _whole(nodes, {(BUCKET, "new"): x})


def test_a_condemned_block_is_resurrected_by_another_nodes_pin(nodes, clock):
    a, b = nodes.a, nodes.b
    x = data(700_000, 102)
    a.put(BUCKET, "old", x)
    ids = set(manifest_ids(a, BUCKET, "old"))
    a.delete(BUCKET, "old")
    report = collect(a, delete=True, min_age=3600)
    assert report.condemned == len(ids) and report.deleted == 0
    gate = Gate()
    w = Background(b.put, BUCKET, "new", x, before_commit=gate)
    assert gate.reached.wait(30)
    assert {r.state for bid, r in block_rows(a).items() if bid in ids} == {LIVE}
    clock.advance(7200)
    assert collect(a, delete=True, min_age=3600).deleted == 0
    gate.release.set()
    w.result()
    clock.advance(7200)
    assert collect(a, delete=True, min_age=3600).deleted == 0
    _whole(nodes, {(BUCKET, "new"): x})


def test_a_block_being_deleted_makes_the_other_nodes_writer_wait_and_write_it_again(nodes):
    a, b = nodes.a, nodes.b
    x = data(700_000, 103)
    a.put(BUCKET, "old", x)
    ids = manifest_ids(a, BUCKET, "old")
    a.delete(BUCKET, "old")
    writers = []

    def hook(point):
        if point == "after_deleting" and not writers:
            assert {r.state for bid, r in block_rows(a).items() if bid in ids} == {DELETING}
            writers.append(Background(b.put, BUCKET, "new", x))
            _wait_pinned(a, ids[0])  # B pinned, saw `deleting`, and waits
            assert writers[0].is_alive()

    report = collect(a, delete=True, min_age=0, hook=hook)
    assert report.deleted == len(set(ids))
    writers[0].result()
    assert set(ids) <= block_ids(a) and set(ids) <= stored_ids(a)
    _whole(nodes, {(BUCKET, "new"): x})


# -- commit after mark -----------------------------------------------------------------------------

def test_a_commit_on_another_node_after_the_mark_is_remarked(nodes):
    a, b = nodes.a, nodes.b
    x = data(700_000, 104)
    a.put(BUCKET, "old", x)
    a.delete(BUCKET, "old")

    def hook(point):
        if point == "after_mark":
            b.put(BUCKET, "new", x)  # commits (and unpins) on B before A condemns
            with a.index.read() as t:
                assert not list(t.iter_pins())

    report = collect(a, delete=True, min_age=0, hook=hook)
    assert report.condemned == 0 and report.deleted == 0
    _whole(nodes, {(BUCKET, "new"): x})


def test_a_commit_on_another_node_between_condemn_batches_is_remarked(nodes):
    a, b = nodes.a, nodes.b
    x, y = data(500_000, 105), data(500_000, 106)
    a.put(BUCKET, "x", x)
    a.put(BUCKET, "y", y)
    x_ids, y_ids = set(manifest_ids(a, BUCKET, "x")), set(manifest_ids(a, BUCKET, "y"))
    a.delete(BUCKET, "x")
    a.delete(BUCKET, "y")
    done = []

    def hook(point):
        if point == "before_condemn" and not done:
            done.append(1)
            b.put(BUCKET, "x2", x)

    report = collect(a, delete=True, min_age=0, hook=hook, batch=1)
    assert done
    assert x_ids <= block_ids(a) and x_ids <= stored_ids(a)
    assert not (y_ids - x_ids) & block_ids(a)
    assert report.deleted == len(y_ids - x_ids)
    _whole(nodes, {(BUCKET, "x2"): x})


def test_parts_on_two_nodes_and_a_copy_and_completion_after_the_mark_keep_their_blocks(nodes):
    """A multipart upload's parts go to different nodes; after GC's mark, one node copies an object
    the other deletes, and completes the upload."""
    a, b = nodes.a, nodes.b
    x, p1, p2 = data(400_000, 107), data(300_000, 108), data(200_000, 109)
    a.put(BUCKET, "src", x)
    up = a.create_upload(BUCKET, "mp")
    part1 = a.upload_part(up, 1, p1)
    part2 = b.upload_part(up, 2, p2)
    assert [p.number for p in b.list_parts(up)] == [1, 2]

    def hook(point):
        if point == "after_mark":
            b.copy(BUCKET, "src", BUCKET, "copy")
            a.delete(BUCKET, "src")
            b.complete_upload(up, [(1, part1.etag), (2, part2.etag)], min_part_size=0)

    collect(a, delete=True, min_age=0, hook=hook)
    collect(b, delete=True, min_age=0)
    _whole(nodes, {(BUCKET, "copy"): x, (BUCKET, "mp"): p1 + p2})


# -- orphans from crashed writers ------------------------------------------------------------------

def test_orphans_and_the_open_pack_of_a_dead_node_wait_out_min_age_and_its_lease(nodes, clock):
    a, b = nodes.a, nodes.b
    orphans = set(write_orphans(b, data(500_000, 110)))
    assert orphans and not orphans & block_ids(a)
    kill(b)
    report = collect(a, delete=True, min_age=3600)
    assert report.orphans == 0 and report.orphans_kept >= len(orphans) and report.abandoned_packs == 0
    assert orphans <= stored_ids(a)
    b_packs = {pid for pid, row in pack_rows(a).items() if row.state == PACK_OPEN}  # local: B's is still open
    clock.advance(3601)  # past min_age and past B's pack lease (pin_lease 600)
    report = collect(a, delete=True, min_age=3600)
    assert report.orphans == len(orphans)
    assert report.abandoned_packs == len(b_packs)
    assert not orphans & stored_ids(a)
    rows = pack_rows(a)
    assert all(rows[pid].state == PACK_RETIRED for pid in b_packs if pid in rows)
    clock.advance(3601)
    collect(a, delete=True, min_age=3600)
    assert not b_packs & set(pack_rows(a))  # deleted after the reader grace
    _whole(nodes, {})


def test_blocks_of_a_writer_in_flight_on_another_node_are_not_orphans(nodes):
    a, b = nodes.a, nodes.b
    z = data(900_000, 111)
    gate = Gate()
    w = Background(b.put, BUCKET, "z", z, before_commit=gate)
    assert gate.reached.wait(30)
    report = collect(a, delete=True, min_age=0)
    assert report.orphans == 0
    v = verify(a, deep=True)  # B's open pack, written but not yet bound, is no finding either
    assert v.clean, "\n".join(str(f) for f in v.findings)
    gate.release.set()
    w.result()
    _whole(nodes, {(BUCKET, "z"): z})


def test_blocks_of_a_paused_body_on_another_node_stay_pinned_mid_stream(nodes):
    a, b = nodes.a, nodes.b
    head, tail = data(20 << 20, 112), data(300_000, 113)  # > 16 MiB: at least one batch flushed
    body = PausedBody(head, tail)
    w = Background(b.put, BUCKET, "big", body)
    assert body.reached.wait(60)
    deadline = time.monotonic() + 30
    while not stored_ids(a) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stored_ids(a) or not packs_of(b.blocks).files.can_flush  # S3: nothing listed before a seal
    report = collect(a, delete=True, min_age=0)
    assert report.orphans == 0
    body.release.set()
    w.result()
    _whole(nodes, {(BUCKET, "big"): head + tail})


def test_a_writer_on_another_node_pinning_an_orphan_being_deleted_waits_and_rewrites(nodes):
    a, b = nodes.a, nodes.b
    z = data(500_000, 114)
    orphans = sorted(write_orphans(a, z))
    writers = []

    def hook(point):
        if point == "after_orphan_deleting" and not writers:
            writers.append(Background(b.put, BUCKET, "z", z))
            _wait_pinned(a, orphans[0])
            assert writers[0].is_alive()

    collect(a, delete=True, min_age=0, hook=hook)
    writers[0].result()
    _whole(nodes, {(BUCKET, "z"): z})


def test_a_dead_nodes_writers_lose_their_pins_only_once_their_lease_is_over(nodes, clock):
    """Node B dies with a writer holding pins (and its open pack leased); GC on A honours them
    while the lease runs, then reaps them, and B's writer, were it to come back, cannot commit."""
    a, b = nodes.a, nodes.b
    x = data(500_000, 115)
    a.put(BUCKET, "x", x)
    ids = set(manifest_ids(a, BUCKET, "x"))
    gate = Gate(timeout=120)
    w = Background(b.put, BUCKET, "copy-of-x", x, before_commit=gate)
    assert gate.reached.wait(30)
    kill(b)
    a.delete(BUCKET, "x")
    clock.advance(a.settings.gc.pin_lease - 60)  # B's leases still run: nothing goes
    report = collect(a, delete=True, min_age=0)
    assert report.condemned == 0 and report.dead_writers == 0
    clock.advance(61)
    report = collect(a, delete=True, min_age=0)
    assert report.dead_writers == 1 and report.dead_pins == len(ids)
    assert report.deleted == len(ids)
    with a.index.read() as t:
        assert not list(t.iter_pins()) and not list(t.iter_writers())
    gate.release.set()
    with pytest.raises(TransientStoreError):
        w.result()
    _whole(nodes, {})


def test_a_stalled_writer_on_another_node_whose_new_blocks_were_reclaimed_does_not_commit_them(nodes, clock):
    a, b = nodes.a, nodes.b
    z = data(2_000_000, 116)
    gate = Gate()
    w = Background(b.put, BUCKET, "z", z, before_commit=gate)
    assert gate.reached.wait(30)
    clock.advance(a.settings.gc.pin_lease + 1)
    report = collect(a, delete=True, min_age=0)
    # S3: B's pack was sealed and located them: orphans now. Local: they are in B's open pack, whose
    # lease lapsed too: A copies out what it located (nothing: B binds at commit) and retires it
    assert report.orphans > 0 or report.abandoned_packs == 1
    gate.release.set()
    with pytest.raises(TransientStoreError):
        w.result()
    _whole(nodes, {})


# -- readers in flight -----------------------------------------------------------------------------

def test_a_reader_on_another_node_finishes_within_the_grace(nodes, clock):
    a, b = nodes.a, nodes.b
    x = data(900_000, 117)
    a.put(BUCKET, "x", x)
    ids = set(manifest_ids(a, BUCKET, "x"))
    reader = b.open(BUCKET, "x")
    it = iter(reader)
    first = next(it)
    a.delete(BUCKET, "x")
    report = collect(a, delete=True, min_age=3600)
    assert report.condemned == len(ids) and report.deleted == 0
    assert first + b"".join(it) == x
    reader.close()
    clock.advance(3600)
    report = collect(a, delete=True, min_age=3600)
    assert report.deleted == len(ids)
    assert not ids & stored_ids(a)
    _whole(nodes, {})


# -- one GC at a time, and each node's own packs -----------------------------------------------------

def test_one_gc_or_verify_at_a_time_across_nodes(nodes):
    a, b = nodes.a, nodes.b
    x = data(300_000, 118)
    a.put(BUCKET, "x", x)
    seen = []

    def hook(point):
        if point == "after_mark" and not seen:
            seen.append(point)
            # the message names the holder: node A, a session of this very process
            with pytest.raises(Conflict, match=rf"another gc or verify is running .*pid {os.getpid()} on "):
                collect(b, delete=True, min_age=0)
            with pytest.raises(Conflict, match="another gc or verify is running"):
                verify(b, lock_wait=0)
            assert trim_idle_refs(b) == {"refs": 0}  # a run needs them: kept

    collect(a, delete=True, min_age=0, hook=hook)
    assert seen
    collect(b, delete=True, min_age=0)  # free again
    _whole(nodes, {(BUCKET, "x"): x})


def test_gc_never_takes_the_open_pack_of_a_live_node(nodes, clock):
    """B's open pack is mostly dead, but B is alive: A's GC leaves it open, and B appends on."""
    a, b = nodes.a, nodes.b
    files = packs_of(b.blocks).files
    x, y, z = data(900_000, 119), data(200_000, 120), data(300_000, 121)
    b.put(BUCKET, "x", x)
    b.put(BUCKET, "y", y)
    a.delete(BUCKET, "x")
    before = {pid: row for pid, row in pack_rows(a).items() if row.state == PACK_OPEN}
    clock.advance(a.settings.gc.pin_lease / 2)  # B's pack lease still runs
    report = collect(a, delete=True, min_age=0)
    assert report.abandoned_packs == 0
    rows = pack_rows(a)
    assert all(rows[pid].state == PACK_OPEN for pid in before)  # local: B's open pack is untouched
    assert not files.can_flush or before
    b.put(BUCKET, "z", z)
    seal(b)
    collect(a, delete=True, min_age=0)
    _whole(nodes, {(BUCKET, "y"): y, (BUCKET, "z"): z})


def test_the_open_pack_of_a_dead_node_is_copied_out_by_another_node(nodes, clock):
    a, b = nodes.a, nodes.b
    y = data(600_000, 122)
    b.put(BUCKET, "y", y)
    kill(b)
    b_open = {pid for pid, row in pack_rows(a).items() if row.state == PACK_OPEN}
    assert collect(a, delete=True, min_age=0).abandoned_packs == 0  # its lease runs
    clock.advance(a.settings.gc.pin_lease + 1)
    report = collect(a, delete=True, min_age=0)
    assert report.abandoned_packs == len(b_open)  # local: B's open pack with y in it; S3: sealed at commit
    rows = pack_rows(a)
    assert not b_open & {pid for pid, row in rows.items() if row.state != PACK_RETIRED}
    with a.index.read() as t:
        assert all(t.get_loc(KIND_DATA, bid) is None or t.get_loc(KIND_DATA, bid).pack not in b_open
                   for bid in manifest_ids(a, BUCKET, "y"))
    # B, had it only stalled, still reads y: through the index, not from its own pack, which is gone
    _whole(nodes, {(BUCKET, "y"): y})
