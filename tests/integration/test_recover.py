"""``cas recover``: the index rebuilt from the backend (packs, store.json, metadata snapshot + log).

The names part of the backend (snapshot parts, log segments) is the store's own metadata log
(``cas.meta.shipper``), plus a few objects written here with ``cas.meta.objects.encode`` and the
``cas.meta.records`` constructors (damage, gaps, a name whose manifest is missing); the blocks
and manifests are the store's own packs. Then ``DATA/index`` goes, ``cas recover`` runs as a real
subprocess, and the store must read back whole: same bytes, same records, ``verify --deep``
clean, gc deleting nothing referenced.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess

import boto3
import pytest
from botocore.config import Config

from cas.blocks import packs_of
from cas.blocks.packs import format as fmt
from cas.config import load_settings
from cas.errors import ConfigError, Conflict
from cas.gc import collect, verify
from cas.index.lmdb_index import LmdbIndex
from cas.meta import objects, records
from cas.meta.records import LOGGED_KV
from cas.store import Store
from tests.fixtures.gc import cas_env, data, index_held_open, run_cas
from tests.fixtures.serve import ROOT_PASSWORD, ROOT_USER, CasServe

pytestmark = pytest.mark.integration

KiB, MiB = 1 << 10, 1 << 20


# -- names as the metadata log would carry them ----------------------------------------------------
def _rows(store) -> dict:
    """Every logged row of the index: ("bucket", name) / ("object", b, k) / ("user", n) / ("kv", ns, k)."""
    out = {}
    with store.index.read() as t:
        for name, rec in t.iter_buckets():
            out[("bucket", name)] = rec
        for b, k, rec in t.iter_objects():
            out[("object", b, k)] = rec
        for name, rec in t.iter_users():
            out[("user", name)] = rec
        for ns in sorted(LOGGED_KV):
            for key, value in t.kv_scan(ns):
                out[("kv", ns, key)] = bytes(value)
    return out


_ORDER = {"bucket": 0, "user": 1, "kv": 2, "object": 3}


def _record(n: int, key: tuple, value) -> dict:
    """The log record that sets row ``key`` to ``value`` (None: deletes it)."""
    kind, args = key[0], key[1:]
    if kind == "bucket":
        return records.delete_bucket(n, *args) if value is None else records.put_bucket(n, *args, value)
    if kind == "object":
        return records.delete_object(n, *args) if value is None else records.put_object(n, *args, value)
    if kind == "user":
        return records.delete_user(n, *args) if value is None else records.put_user(n, *args, value)
    return records.kv_delete(n, *args) if value is None else records.kv_put(n, *args, value)


def _write_snapshot(files, n: int, rows: dict, part: int = 3, done: bool = True) -> None:
    recs = [_record(n, k, rows[k]) for k in sorted(rows, key=lambda k: (_ORDER[k[0]], k))]
    parts = [recs[i:i + part] for i in range(0, len(recs), part)] or [[]]
    for i, chunk in enumerate(parts):
        files.put_meta(objects.snap_part_name(n, i), objects.encode(chunk))
    if done:
        files.put_meta(objects.snap_done_name(n), objects.encode(
            [{"n": n, "parts": len(parts), "records": len(recs), "time": 0}]))


def _write_log(files, recs: list[dict], per_segment: int = 4) -> None:
    for i in range(0, len(recs), per_segment):
        seg = recs[i:i + per_segment]
        files.put_meta(objects.log_name(seg[0]["n"], seg[-1]["n"]), objects.encode(seg))


def _files(store):
    return packs_of(store.blocks).files


# -- a store with some history ----------------------------------------------------------------------
def _history(store) -> tuple[dict, dict]:
    """Objects of several sizes, dedup, multipart, a user and a WebDAV property; a snapshot of them,
    then overwrites, a delete, a copy, a move, a new object and a bucket deleted, shipped as log
    segments after it (by the store's own MetaShipper). Returns (expected bytes by (bucket, key),
    expected rows)."""
    files = _files(store)
    store.create_bucket("alpha")
    store.create_bucket("beta")
    store.users.add("alice", "alice-secret-123")
    with store.index.write() as t:
        t.kv_put("davprops", "alpha", b"<prop>x</prop>")
    shared = data(700_000, 1)
    bodies = {("alpha", "empty"): b"", ("alpha", "small"): b"hello", ("alpha", "mid"): data(300_000, 2),
              ("alpha", "big"): data(2 * MiB + 5, 3), ("alpha", "dedup1"): shared,
              ("alpha", "dedup2"): shared + data(100_000, 4), ("beta", "only"): data(50_000, 5)}
    for (b, k), body in bodies.items():
        store.put(b, k, body, content_type="application/x-test", metadata={"who": k})
    parts = [data(300_000, 10), data(200_000, 11)]
    up = store.create_upload("alpha", "multi", content_type="text/plain")
    etags = [store.upload_part(up, n, body).etag for n, body in enumerate(parts, start=1)]
    store.complete_upload(up, list(enumerate(etags, start=1)), min_part_size=1)
    bodies[("alpha", "multi")] = b"".join(parts)
    store.create_upload("alpha", "in-flight")  # dropped by recovery
    store.meta_log.ship()
    snap = store.meta_log.snapshot()  # the store's own metadata log (cas.meta.shipper) from here on

    store.put("alpha", "small", b"hello again", metadata={"v": "2"})
    bodies[("alpha", "small")] = b"hello again"
    store.delete("alpha", "big")
    del bodies[("alpha", "big")]
    store.copy("alpha", "dedup2", "alpha", "copied")
    bodies[("alpha", "copied")] = bodies[("alpha", "dedup2")]
    store.meta_log.ship()  # two segments after the snapshot
    store.move("alpha", "mid", "alpha", "moved/mid")
    bodies[("alpha", "moved/mid")] = bodies.pop(("alpha", "mid"))
    store.put("alpha", "late", data(MiB, 6))
    bodies[("alpha", "late")] = data(MiB, 6)
    store.delete("beta", "only")
    del bodies[("beta", "only")]
    store.delete_bucket("beta")
    store.meta_log.ship()
    rows = _rows(store)
    after = [objects.parse_log_name(name) for name in files.list_meta(objects.LOG_PREFIX)]
    assert sum(last - first + 1 for first, last in after if first > snap) >= 8
    # an older, incomplete snapshot is ignored (no done); so is one newer than the log whose parts are gone
    files.put_meta(objects.snap_part_name(1, 0), objects.encode([]))
    for (b, k), body in bodies.items():
        assert store.get_bytes(b, k) == body
    return bodies, rows


def _assert_recovered(settings, bodies: dict, rows: dict) -> None:
    with Store.open_store(settings) as s:
        for (b, k), body in bodies.items():
            assert s.get_bytes(b, k) == body, (b, k)
        got = _rows(s)
        want = dict(rows)
        for key, rec in rows.items():  # secrets never reach the backend
            if key[0] == "user":
                want[key] = {f: v for f, v in rec.items() if f != "secret"}
        assert got == want
        with s.index.read() as t:
            assert list(t.iter_uploads()) == []  # in-flight multipart uploads are dropped
            seqs = [rec["seq"] for _, _, rec in t.iter_objects()]
            assert t.last_seq() >= max(seqs)
        report = verify(s, deep=True, lock_wait=30)
        assert report.clean, [str(f) for f in report.findings]
        stats = s.stats()
        assert stats["objects"] == len(bodies) and stats["logical_bytes"] == sum(map(len, bodies.values()))
        gc = collect(s, delete=True, min_age=0)
        assert gc.packs_unreadable == 0
        for (b, k), body in bodies.items():  # nothing referenced was collected
            assert s.get_bytes(b, k) == body, (b, k)
        after = verify(s, deep=True, lock_wait=30)
        assert after.clean, [str(f) for f in after.findings]


def _recover(settings, *flags, env=None) -> subprocess.CompletedProcess:
    return run_cas(settings.data_dir, "recover", "--json", *flags, env=env, timeout=300)


# -- local -----------------------------------------------------------------------------------------
def test_a_deleted_index_is_recovered_whole_from_packs_and_the_metadata_log(settings):
    with Store.open_store(settings) as s:
        bodies, rows = _history(s)
        # a name whose manifest is in no pack: skipped and reported
        ghost = dict(rows[("object", "alpha", "late")], m="ab" * 32)
        last = max(objects.parse_log_name(n)[1] for n in _files(s).list_meta(objects.LOG_PREFIX))
        _write_log(_files(s), [records.put_object(last + 1, "alpha", "ghost", ghost)])
        seq_before = s.last_seq()  # deletes and bucket changes took sequence numbers too
    shutil.rmtree(settings.index_dir)
    out = _recover(settings)
    assert out.returncode == 1, out.stderr  # a name was skipped
    report = json.loads(out.stdout)
    assert report["skipped"] == [{"bucket": "alpha", "key": "ghost", "reason": f"manifest {'ab' * 32} is in no pack"}]
    assert report["objects"] == len(bodies) and report["bytes"] == sum(map(len, bodies.values()))
    assert report["buckets"] == 1 and report["users"] == ["alice"] and report["position"] == last + 1
    assert report["snapshot"] > 0 and report["segments"] >= 2 and report["log_gaps"] == []
    assert report["packs"] >= 1 and report["packs_unreadable"] == [] and report["old_index"] is None
    _assert_recovered(settings, bodies, rows)
    with Store.open_store(settings) as s, s.index.read() as t:
        assert t.counter("mlog") == last + 1 and t.get_meta("mlog_shipped") == last + 1
        assert t.last_seq() >= seq_before  # journal followers never see sequence numbers go back
        assert t.get_meta("format")["version"] == 2 and t.get_meta("chunker") == settings.chunker.to_dict()
    # recovered users have no secret until reset-secret gives them one
    reset = run_cas(settings.data_dir, "user", "reset-secret", "alice", "--json")
    assert reset.returncode == 0, reset.stderr
    secret = json.loads(reset.stdout)["secret_key"]
    with Store.open_store(settings) as s:
        assert s.users.secret("alice") == secret and len(secret) >= 20


def test_recover_replaces_an_existing_index_and_keeps_it_aside(settings):
    with Store.open_store(settings) as s:
        bodies, rows = _history(s)
    empty = settings.data_dir / "index"  # an index emptied behind cas's back
    shutil.rmtree(empty)
    LmdbIndex(empty).close()
    out = _recover(settings)
    assert out.returncode == 0, out.stderr
    old = json.loads(out.stdout)["old_index"]
    assert old and os.path.isdir(old) and os.path.basename(old).startswith("index.old-")
    assert not (settings.data_dir / "index.recover").exists()
    _assert_recovered(settings, bodies, rows)


def test_store_json_gives_chunker_and_codec_and_store_id(settings):
    with Store.open_store(settings) as s:
        s.create_bucket("alpha")
        s.put("alpha", "x", data(400_000, 9))
        _write_snapshot(_files(s), 2, _rows(s))
        chunker = dict(settings.chunker.to_dict())
        _files(s).put_meta(objects.STORE_NAME, json.dumps({"store_id": "ab" * 16, "format": 2, "chunker": chunker,
                                                           "codec": settings.codec.compression}).encode())
    shutil.rmtree(settings.index_dir)
    out = _recover(settings)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["store_id"] == "ab" * 16
    with Store.open_store(settings) as s, s.index.read() as t:
        assert t.get_meta("store_id") == "ab" * 16
        assert t.get_meta("codec") == settings.codec.compression and t.get_meta("chunker") == chunker


def test_recover_refuses_while_a_process_has_the_index_open_and_on_an_empty_backend(settings, tmp_path):
    with Store.open_store(settings) as s:
        bodies, rows = _history(s)
    with index_held_open(settings.index_dir) as holder:
        busy = _recover(settings)
        assert busy.returncode == Conflict.exit_code, busy.stderr
        assert f"pid {holder.pid}".encode() in busy.stderr
    assert not (settings.data_dir / "index.recover").exists()
    nothing = tmp_path / "typo"
    out = run_cas(nothing, "recover")
    assert out.returncode == ConfigError.exit_code and b"no store" in out.stderr
    assert not nothing.exists()  # nothing created
    _recover(settings)
    _assert_recovered(settings, bodies, rows)



@pytest.mark.crash
@pytest.mark.parametrize("point", ["recover.after_packs", "recover.before_swap", "recover.after_old_renamed"])
def test_a_recover_killed_midway_gives_the_same_result_when_run_again(settings, point):
    with Store.open_store(settings) as s:
        bodies, rows = _history(s)
    shutil.rmtree(settings.index_dir)
    if point == "recover.after_old_renamed":
        LmdbIndex(settings.index_dir).close()  # an old (empty) index to rename
    crashed = _recover(settings, env=cas_env(CAS_TESTONLY_CRASH_AT=point))
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert (settings.data_dir / "index.recover").exists()
    out = _recover(settings)
    assert out.returncode == 0, out.stderr
    assert not (settings.data_dir / "index.recover").exists()
    _assert_recovered(settings, bodies, rows)


# -- a server killed with -9: its open pack has no footer ------------------------------------------
def test_open_packs_of_a_killed_server_are_scanned_and_sealed(tmp_path):
    data_dir = tmp_path / "data"
    srv = CasServe(data_dir, extra_args=["--meta-interval", "0"]).start()  # every ack is in the log
    bodies = {}
    try:
        s3 = boto3.client("s3", endpoint_url=srv.s3_url, aws_access_key_id=ROOT_USER,
                          aws_secret_access_key=ROOT_PASSWORD, region_name="us-east-1",
                          config=Config(retries={"max_attempts": 1}))
        s3.create_bucket(Bucket="live")
        for i, size in enumerate((1, 5 * KiB, 200 * KiB, 3 * MiB)):
            body = data(size, 100 + i)
            s3.put_object(Bucket="live", Key=f"k{i}", Body=body)  # acknowledged: flushed and located
            bodies[("live", f"k{i}")] = body
        os.kill(srv.pid, signal.SIGKILL)
        srv.proc.wait(30)
    finally:
        srv.stop()
    settings = load_settings(data_dir, {"gc": {"min_age": 0}}, env={})
    index = LmdbIndex(settings.index_dir)  # the names, as the killed server committed them
    try:
        rows = {}
        with index.read() as t:
            for name, rec in t.iter_buckets():
                rows[("bucket", name)] = rec
            for b, k, rec in t.iter_objects():
                rows[("object", b, k)] = rec
            for name, rec in t.iter_users():
                rows[("user", name)] = rec
    finally:
        index.close()
    from cas.blocks.packs.files import LocalPackFiles

    files = LocalPackFiles(settings.blocks_dir)
    unsealed = []
    for pid, size, _ in files.iter_packs():
        try:
            fmt.read_footer(lambda off, n, pid=pid: files.read(pid, off, n), size)
        except fmt.PackDamaged:
            unsealed.append(pid)
    assert unsealed, "the killed server left no open pack"
    files.close()
    shutil.rmtree(settings.index_dir)
    out = _recover(settings)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["packs_scanned"] == report["packs_resealed"] == len(unsealed)
    assert report["objects"] == len(bodies) and report["entries_rejected"] == 0
    files = LocalPackFiles(settings.blocks_dir)
    for pid in unsealed:  # sealed in place now
        fmt.read_footer(lambda off, n, pid=pid: files.read(pid, off, n), files.size(pid))
    files.close()
    _assert_recovered(settings, bodies, rows)


def test_a_torn_entry_at_the_end_of_an_open_pack_is_left_out(settings):
    """What an open pack holds after its last flush may be cut short by the crash: the scan keeps
    the entries before it, and the pack is sealed without the torn one."""
    with Store.open_store(settings) as s:
        s.create_bucket("alpha")
        keep = data(300_000, 21)
        s.put("alpha", "keep", keep)
        rows = _rows(s)
        files = _files(s)
        s.meta_log.ship()
        with s.index.read() as t:
            (pid, _), = list(t.iter_packs())
        acked = files.size(pid)
        # as after a kill -9: the torn put's record never reaches the backend (nor a snapshot of it)
        s.meta_log.ship = s.meta_log.snapshot = lambda **kw: 0
        s.put("alpha", "torn", data(200_000, 22))  # in flight when the crash came
        raw = files.path(pid).read_bytes()[:acked + fmt.ENTRY_HEADER_LEN + 1000]
    files.path(pid).write_bytes(raw)  # the pack as the crash left it: no footer, the last entry cut
    shutil.rmtree(settings.index_dir)
    out = _recover(settings)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["packs_scanned"] == 1 and report["packs_resealed"] == 1 and report["entries_rejected"] == 0
    _assert_recovered(settings, {("alpha", "keep"): keep}, rows)


# -- S3 ----------------------------------------------------------------------------------------------
@pytest.mark.s3backend
def test_a_store_on_s3_is_recovered_into_a_new_data_directory(tmp_path, seaweed, s3_packfiles_factory):
    prefix = s3_packfiles_factory().prefix
    url = f"s3://{seaweed.bucket}/{prefix}"
    blocks = {"url": url, "endpoint": seaweed.endpoint, "access_key": seaweed.access_key,
              "secret_key": seaweed.secret_key}
    settings = load_settings(tmp_path / "data", {"blocks": blocks, "gc": {"min_age": 0}}, env={})
    with Store.open_store(settings) as s:
        bodies, rows = _history(s)
    shutil.rmtree(settings.data_dir)  # the machine is gone; the bucket is not
    flags = ["--blocks", url, "--blocks-endpoint", seaweed.endpoint, "--blocks-access-key", seaweed.access_key,
             "--blocks-secret-key", seaweed.secret_key]
    out = _recover(settings, *flags)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["objects"] == len(bodies) and report["packs"] >= 1 and report["packs_scanned"] == 0
    _assert_recovered(settings, bodies, rows)


# -- the index in PostgreSQL ---------------------------------------------------------------------
def _pg_tables(url: str, schema: str = "public") -> set[str]:
    import psycopg

    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))}


def _pg_schemas(url: str) -> set[str]:
    import psycopg

    with psycopg.connect(url) as conn:
        return {r[0] for r in conn.execute("SELECT nspname FROM pg_namespace")}


def _pg_run(url: str, *statements: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for sql in statements:
            conn.execute(sql)


def test_a_lost_postgresql_index_is_recovered_whole(settings, pg_url):
    from tests.fixtures.core import with_index

    settings = with_index(settings, pg_url)
    with Store.open_store(settings) as s:
        bodies, rows = _history(s)
    tables = _pg_tables(pg_url)
    assert "cas_objects" in tables
    _pg_run(pg_url, *(f"DROP TABLE {t}" for t in tables))  # the database lost its tables
    refused = run_cas(settings.data_dir, "ls", "--index", pg_url)
    assert refused.returncode == 2 and b"cas recover" in refused.stderr, refused.stderr
    assert pg_url.split("@")[0].split(":")[-1].encode() not in refused.stderr  # no password shown
    out = _recover(settings, "--index", pg_url)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["objects"] == len(bodies) and report["old_index"] is None
    assert "cas_recover" not in _pg_schemas(pg_url)
    _assert_recovered(settings, bodies, rows)


def test_recover_swaps_a_postgresql_index_in_one_transaction_and_keeps_the_old_one_aside(settings, pg_url):
    from tests.fixtures.core import with_index

    settings = with_index(settings, pg_url)
    with Store.open_store(settings) as s:
        bodies, rows = _history(s)
    _pg_run(pg_url, "DELETE FROM cas_objects")  # an index that lost its names behind cas's back
    crashed = _recover(settings, "--index", pg_url, env=cas_env(CAS_TESTONLY_CRASH_AT="recover.before_swap"))
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert "cas_recover" in _pg_schemas(pg_url)  # the staged index, never in place half-built
    out = _recover(settings, "--index", pg_url)
    assert out.returncode == 0, out.stderr
    old = json.loads(out.stdout)["old_index"]
    kept = old.split()[1]
    assert old.startswith("schema cas_old_") and kept in _pg_schemas(pg_url), old
    assert "cas_objects" in _pg_tables(pg_url, kept) and "cas_recover" not in _pg_schemas(pg_url)
    _assert_recovered(settings, bodies, rows)
