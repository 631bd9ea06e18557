"""SIGKILL crash tests: `cas gc` killed at each named point (the pack phase on local and SeaweedFS
too), and `cas put` + `cas gc` processes killed at random.

After every crash, verify must be clean, every acknowledged object must read back
byte-identical, and the next gc must finish the job (no garbage, no orphans left).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import pytest

from cas.config import load_settings
from cas.errors import ObjectNotFound
from cas.gc.sweep import collect
from cas.gc.verify import verify
from cas.index.schema import PACK_OPEN, PACK_RETIRED
from cas.store import Store
from tests.fixtures.gc import (
    BUCKET,
    GC_KINDS,
    Background,
    assert_packs_sound,
    assert_whole,
    block_ids,
    cas_env,
    data,
    pack_files,
    pack_overhead,
    pack_rows,
    run_cas,
    seal,
    set_clock,
    start_cas,
    stored_ids,
    write_orphans,
)

pytestmark = [pytest.mark.crash, pytest.mark.integration, pytest.mark.timeout(600)]

GC_POINTS = ["after_lock", "after_mark", "before_condemn", "after_condemn", "after_deleting",
             "after_block_delete", "after_orphan_deleting", "after_orphan_delete", "before_trim"]
PACK_POINTS = ["before_packs", "after_repack_copy", "after_repack_sync", "after_pack_retire", "after_pack_delete"]


@pytest.mark.parametrize("point", GC_POINTS)
def test_gc_killed_at_each_point_leaves_no_damage_and_the_next_run_finishes(local_gc_store, point):
    s = local_gc_store
    keep = data(600_000, 60)
    s.put(BUCKET, "keep", keep)
    s.put(BUCKET, "gone", data(600_000, 61))
    s.delete(BUCKET, "gone")
    write_orphans(s, data(600_000, 62))
    assert stored_ids(s) - block_ids(s)
    crashed = run_cas(s.settings.data_dir, "gc", "--delete", "--min-age", "0",
                      env=cas_env(CAS_TESTONLY_CRASH_AT=f"gc.{point}"))
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert_whole(s, {(BUCKET, "keep"): keep})
    again = run_cas(s.settings.data_dir, "gc", "--delete", "--min-age", "0")
    assert again.returncode == 0, again.stderr
    assert stored_ids(s) == block_ids(s)
    r = verify(s, deep=True)
    assert r.clean and r.blocks_unreferenced == 0 and r.orphans == 0 and r.blocks_deleting == 0
    assert_whole(s, {(BUCKET, "keep"): keep})


@pytest.fixture
def pack_store_env(request, tmp_path, clock):
    """A store (over the backend ``request.param``) and the environment that gives a `cas`
    subprocess the same store."""
    env = cas_env()
    if request.param == "s3":
        import uuid

        sw = request.getfixturevalue("seaweed")
        env.update({"CAS_BLOCKS": f"s3://{sw.bucket}/crash-{uuid.uuid4().hex[:10]}",
                    "CAS_BLOCKS_ENDPOINT": sw.endpoint, "CAS_BLOCKS_ACCESS_KEY": sw.access_key,
                    "CAS_BLOCKS_SECRET_KEY": sw.secret_key})
    s = Store.open_store(load_settings(tmp_path / "data", {"gc": {"min_age": 0}}, env=env))
    set_clock(s, clock)
    s.create_bucket(BUCKET)
    yield s, env
    s.close()


@pytest.mark.parametrize("point", PACK_POINTS)
@pytest.mark.parametrize("pack_store_env", [pytest.param(k, marks=pytest.mark.s3backend) if k == "s3" else k
                                            for k in GC_KINDS], indirect=True)
def test_gc_killed_in_the_pack_phase_leaves_no_damage_and_the_next_run_reclaims_the_packs(pack_store_env, point):
    """Packs to retire (all dead), to repack (a quarter live) and, once retired, to delete; `cas gc`
    killed at each step of the pack phase; the next run leaves no dead pack and no dead bytes."""
    s, env = pack_store_env
    keep, x = data(600_000, 66), data(1_000_000, 69)
    s.put(BUCKET, "keep", keep)
    seal(s)
    s.put(BUCKET, "dead", data(800_000, 67))
    seal(s)
    s.put(BUCKET, "dx", data(3_000_000, 68) + x)
    seal(s)
    s.put(BUCKET, "x", x)
    seal(s)
    s.delete(BUCKET, "dead")
    s.delete(BUCKET, "dx")
    before = set(pack_rows(s))
    crashed = run_cas(s.settings.data_dir, "gc", "--delete", "--min-age", "0",
                      env=dict(env, CAS_TESTONLY_CRASH_AT=f"gc.{point}"))
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert_packs_sound(s)
    assert_whole(s, {(BUCKET, "keep"): keep, (BUCKET, "x"): x})
    again = run_cas(s.settings.data_dir, "gc", "--delete", "--min-age", "0", env=env)
    assert again.returncode == 0, again.stderr
    rows = pack_rows(s)
    assert not {pid for pid, row in rows.items() if row.state in (PACK_RETIRED, PACK_OPEN)}
    assert len(before - set(rows)) >= 2  # the dead pack and the repacked one are gone
    assert pack_files(s) == set(rows)
    stats = s.stats()
    assert stats["retired_packs"] == 0 and stats["dead_bytes"] <= pack_overhead(s)
    assert stored_ids(s) == block_ids(s)
    assert_packs_sound(s)
    r = verify(s, deep=True)
    assert r.clean and r.blocks_unreferenced == 0 and r.orphans == 0 and r.blocks_deleting == 0
    assert_whole(s, {(BUCKET, "keep"): keep, (BUCKET, "x"): x})


def test_writer_meets_rows_left_deleting_by_a_killed_gc(local_gc_store):
    """A put of content whose blocks a crashed gc left `deleting` waits for the next gc, then writes them."""
    s = local_gc_store
    x = data(600_000, 63)
    s.put(BUCKET, "x", x)
    s.delete(BUCKET, "x")
    crashed = run_cas(s.settings.data_dir, "gc", "--delete", "--min-age", "0",
                      env=cas_env(CAS_TESTONLY_CRASH_AT="gc.after_block_delete"))
    assert crashed.returncode == -signal.SIGKILL
    w = Background(s.put, BUCKET, "x2", x)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until the writer has pinned (and so seen) the deleting rows
        with s.index.read() as t:
            if any(True for _ in t.iter_pins()):
                break
        time.sleep(0.01)
    assert w.is_alive()  # waiting for the deleting rows to go (the next gc run drops them)
    collect(s, delete=True, min_age=0)
    w.result()
    assert_whole(s, {(BUCKET, "x2"): x})


def _write_settings(data_dir, lease: int) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "cas.toml").write_text(f"[gc]\npin_lease = \"{lease}s\"\nmin_age = \"0\"\n")


def test_put_and_gc_processes_killed_at_random(tmp_path):
    rounds = int(os.environ.get("CAS_TEST_CRASH_ROUNDS", "20"))
    rng = random.Random(int(os.environ.get("CAS_TEST_SEED", "6")))
    data_dir = tmp_path / "data"
    lease = 8
    _write_settings(data_dir, lease)
    assert run_cas(data_dir, "init").returncode == 0
    assert run_cas(data_dir, "mb", BUCKET).returncode == 0
    blobs = [data(250_000, 70 + i) for i in range(4)]
    files = tmp_path / "files"
    files.mkdir()
    acked: dict[str, bytes] = {}
    maybe: dict[str, bytes | None] = {}  # killed mid-way: either absent or exactly these bytes
    n = 0
    for r in range(rounds):
        procs = []
        for _ in range(3):
            n += 1
            body = rng.choice(blobs) + rng.choice(blobs) + data(rng.randrange(1, 60_000), 1000 + n)
            path = files / f"f{n}"
            path.write_bytes(body)
            key = f"k{n}"
            procs.append(("put", key, body, start_cas(data_dir, "put", str(path), f"{BUCKET}/{key}")))
        if acked and rng.random() < 0.5:
            key = rng.choice(sorted(acked))
            procs.append(("rm", key, acked[key], start_cas(data_dir, "rm", f"{BUCKET}/{key}")))
        procs.append(("gc", "", b"", start_cas(data_dir, "gc", "--delete", "--min-age", "0", "--wait", "3")))
        time.sleep(rng.uniform(0.1, 1.2))
        for entry in procs:
            if rng.random() < 0.5 and entry[3].poll() is None:
                entry[3].send_signal(signal.SIGKILL)
        for op, key, body, p in procs:
            try:
                _, err = p.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()
                raise
            if op in ("put", "rm") and p.returncode not in (0, -signal.SIGKILL):
                # only a kill may stop a put or rm: any other failure is a defect
                raise AssertionError(f"cas {op} {key} failed ({p.returncode}): {err.decode(errors='replace')}")
            if op == "put":
                if p.returncode == 0:
                    acked[key] = body
                else:
                    maybe[key] = body
            elif op == "rm":
                if p.returncode == 0:
                    acked.pop(key, None)
                else:
                    maybe[key] = acked.pop(key)
            elif p.returncode not in (0, -signal.SIGKILL, 5):
                raise AssertionError(f"cas gc failed ({p.returncode}): {err.decode(errors='replace')}")
    assert acked, "no put was acknowledged"
    with Store.open_store(load_settings(data_dir, env={})) as s, s.index.write() as t:
        # every process has ended: the leases of killed writers run out (as if `lease` seconds passed)
        for w, _ in list(t.iter_writers()):
            t.put_writer(w, 0.0, b"")
    for _ in range(2):
        done = run_cas(data_dir, "gc", "--delete", "--min-age", "0")
        assert done.returncode == 0, done.stderr
    settings = load_settings(data_dir, env={})
    with Store.open_store(settings) as s:
        for key, body in acked.items():
            assert s.get_bytes(BUCKET, key) == body, key
        for key, body in maybe.items():
            try:
                assert s.get_bytes(BUCKET, key) == body, key
            except ObjectNotFound:
                pass
        r = verify(s, deep=True)
        assert r.clean, "\n".join(map(str, r.findings))
        assert r.orphans == 0 and r.blocks_unreferenced == 0 and r.temp_files == 0
        assert stored_ids(s) == block_ids(s)


@pytest.mark.parametrize("point", ["writer.after_pin", "writer.before_commit"])
def test_put_killed_before_commit_on_another_host_keeps_pins_until_its_lease_ends(local_gc_store, clock, tmp_path, point):
    s = local_gc_store
    keep = data(300_000, 64)
    s.put(BUCKET, "keep", keep)
    body = tmp_path / "body"
    body.write_bytes(data(2_000_000, 65))
    crashed = run_cas(s.settings.data_dir, "put", str(body), f"{BUCKET}/lost",
                      env=cas_env(CAS_TESTONLY_CRASH_AT=point))
    assert crashed.returncode == -signal.SIGKILL
    with s.index.write() as t:
        writers = list(t.iter_writers())
        assert list(t.iter_pins()) and writers
        # as if the writer ran on another host: its death cannot be proven, only its lease ends
        # (a writer of this host and namespace whose pid is gone is reaped at once:
        # tests/unit/test_writer_owner.py)
        for w, expiry in writers:
            t.put_writer(w, expiry, b"")
    collect(s, delete=True, min_age=0)
    with s.index.read() as t:
        assert list(t.iter_pins())  # its lease still runs: the pins hold
    clock.advance(s.settings.gc.pin_lease + 1)
    report = collect(s, delete=True, min_age=0)
    assert report.dead_writers == 1 and report.dead_pins > 0
    assert stored_ids(s) == block_ids(s)
    with s.index.read() as t:
        assert not list(t.iter_pins()) and not list(t.iter_writers())
    assert_whole(s, {(BUCKET, "keep"): keep})
