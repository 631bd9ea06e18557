"""GC's guards (cas/gc/guard.py): nothing is deleted unless the index is the backend's, and never an
implausible share of the backend as orphans without --force-orphans.

Orphans are made the way a damaged index makes them: the block rows are lost while the pack
entries stay located (the object's name was deleted first, so no manifest marks the blocks).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace

import pytest

from cas.blocks import packs_of
from cas.config import load_settings
from cas.errors import IdentityMismatch, Refused
from cas.gc import guard
from cas.gc.sweep import collect, run_periodic
from cas.index.schema import KIND_DATA
from cas.meta import identity
from cas.meta.objects import STORE_NAME
from tests.fixtures.core import bytes_of
from tests.fixtures.gc import BUCKET, open_gc_store, run_cas

pytestmark = pytest.mark.integration

KINDS = ["memory", "local"]


def small_chunk_settings(tmp_path):
    """Chunks of ~256 bytes: a few hundred KB make more than ``guard.MIN_BLOCKS`` blocks."""
    return load_settings(tmp_path / "data", {"gc": {"min_age": 0}}, env={}, chunk_avg="256")


def located(store) -> int:
    with store.index.read() as t:
        return sum(1 for _ in t.iter_locs(KIND_DATA))


def rows(store) -> int:
    with store.index.read() as t:
        return sum(1 for _ in t.iter_blocks())


def pack_ids(store) -> list[bytes]:
    return sorted(p for p, _, _ in packs_of(store.blocks).files.iter_packs())


def orphan_everything(store, nbytes: int, seed: int = 1) -> int:
    """Put one object, delete its name, then lose its block rows (locations stay): orphans."""
    with store.index.read() as t:
        earlier = {bid for bid, _ in t.iter_blocks()}
    store.put(BUCKET, "x", bytes_of(nbytes, seed))
    store.delete(BUCKET, "x")
    packs_of(store.blocks).flush_all()
    with store.index.write() as t:
        ids = [bid for bid, _ in t.iter_blocks() if bid not in earlier]
        for bid in ids:
            t.delete_block(bid)
    return len(ids)


@pytest.fixture(params=KINDS)
def big_store(request, tmp_path):
    s = open_gc_store(request.param, small_chunk_settings(tmp_path))
    s.create_bucket(BUCKET)
    yield s
    s.close()


def test_orphans_over_half_the_backend_are_refused_until_forced(big_store):
    n = orphan_everything(big_store, 500_000)
    assert n >= guard.MIN_BLOCKS
    before = (located(big_store), rows(big_store), pack_ids(big_store))
    for delete in (False, True):  # the dry run refuses as the real run would
        with pytest.raises(Refused, match=rf"{n} of the backend's {n} blocks \(100%.*--force-orphans"):
            collect(big_store, delete=delete, min_age=0)
    assert (located(big_store), rows(big_store), pack_ids(big_store)) == before
    report = collect(big_store, delete=True, min_age=0, force_orphans=True)
    assert report.orphans == n
    assert located(big_store) == 0


def test_a_plausible_share_of_orphans_is_collected_without_force(big_store):
    """Orphans under half of the backend (a crashed writer beside a store's real data) go."""
    big_store.put(BUCKET, "kept", bytes_of(1_000_000, 9))  # more live blocks than orphans
    n = orphan_everything(big_store, 400_000, seed=2)
    assert n >= guard.MIN_BLOCKS
    live_before = located(big_store) - n
    report = collect(big_store, delete=True, min_age=0)
    assert report.orphans == n
    assert located(big_store) == live_before
    assert big_store.get_bytes(BUCKET, "kept") == bytes_of(1_000_000, 9)


@pytest.mark.parametrize("kind", KINDS)
def test_a_small_store_of_only_orphans_is_below_the_floor(settings, kind):
    """A young store whose only upload died is all orphans: under the floor they are collected."""
    s = open_gc_store(kind, settings)
    try:
        s.create_bucket(BUCKET)
        n = orphan_everything(s, 300_000)
        assert 0 < n < guard.MIN_BLOCKS
        assert collect(s, delete=True, min_age=0).orphans == n
    finally:
        s.close()


@pytest.mark.parametrize("kind", KINDS)
def test_gc_refuses_a_backend_of_another_store(settings, kind):
    s = open_gc_store(kind, settings)
    try:
        s.create_bucket(BUCKET)
        s.put(BUCKET, "x", bytes_of(300_000, 4))
        s.delete(BUCKET, "x")  # garbage a run would delete
        files = packs_of(s.blocks).files
        sid = identity.check(s.index, files, s.settings)
        files.put_meta(STORE_NAME, identity.store_json("cd" * 16, s.settings))  # the backend now says otherwise
        before = (located(s), rows(s), pack_ids(s))
        with pytest.raises(IdentityMismatch, match=f"belongs to store {sid}.*holds store cdcd"):
            collect(s, delete=True, min_age=0, force_orphans=True)
        assert (located(s), rows(s), pack_ids(s)) == before
    finally:
        s.close()


@pytest.mark.parametrize("kind", KINDS)
def test_a_write_shipped_during_the_identity_check_is_not_taken_for_an_older_index(settings, kind, monkeypatch):
    """A writer commits and ships its log records while GC checks the identity (the race the long
    stress run met): the check must not find the backend ahead of the index it has just read."""
    s = open_gc_store(kind, settings)
    try:
        s.create_bucket(BUCKET)
        s.meta_log.ship()
        real = identity.backend_position
        landed = []

        def a_write_lands_around(files):  # just before the backend's position is read
            s.put(BUCKET, f"k{len(landed)}", bytes_of(1000, len(landed)))  # commit, then ship it
            assert s.meta_log.ship() > 0
            landed.append(real(files))
            return landed[-1]

        monkeypatch.setattr(identity, "backend_position", a_write_lands_around)
        collect(s, delete=True, min_age=0)
        assert landed, "the check did not read the backend's position"
        monkeypatch.setattr(identity, "backend_position", real)
        with s.index.read() as t:
            assert identity.backend_position(packs_of(s.blocks).files) == t.counter("mlog") >= landed[0]
    finally:
        s.close()


def test_the_command_line_refuses_with_counts_and_exit_9(tmp_path):
    settings = small_chunk_settings(tmp_path)
    s = open_gc_store("local", settings)
    try:
        s.create_bucket(BUCKET)
        n = orphan_everything(s, 500_000)
        packs = pack_ids(s)
    finally:
        s.close()
    r = run_cas(settings.data_dir, "gc", "--delete", "--min-age", "0")
    err = r.stderr.decode()
    assert r.returncode == Refused.exit_code == 9, err
    assert "Traceback" not in err and f"cas gc: gc refuses to run: {n} of the backend's {n} blocks" in err
    assert sorted(p.name for p in (settings.blocks_dir / "packs").rglob("*.pack")) == sorted(
        p.hex() + ".pack" for p in packs)
    r = run_cas(settings.data_dir, "gc", "--delete", "--min-age", "0", "--force-orphans", "--json")
    assert r.returncode == 0, r.stderr
    import json

    assert json.loads(r.stdout)["orphans"] == n


def test_the_servers_periodic_gc_never_forces_and_logs_an_error(tmp_path, caplog):
    s = open_gc_store("local", small_chunk_settings(tmp_path))
    try:
        s.create_bucket(BUCKET)
        n = orphan_everything(s, 500_000)
        s.settings = replace(s.settings, gc=replace(s.settings.gc, interval=0.05))
        stopping = threading.Event()
        caplog.set_level(logging.ERROR, logger="cas.gc.sweep")
        t = threading.Thread(target=run_periodic, args=(s, stopping))
        t.start()
        deadline = time.monotonic() + 60
        while not any("gc refused" in r.getMessage() for r in caplog.records) and time.monotonic() < deadline:
            time.sleep(0.05)
        stopping.set()
        t.join(30)
        refused = [r for r in caplog.records if "gc refused" in r.getMessage()]
        assert refused and refused[0].levelno == logging.ERROR and f"{n} of the backend's" in refused[0].getMessage()
        assert located(s) == n  # nothing deleted
    finally:
        s.close()
