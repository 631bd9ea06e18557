"""The metadata log: every durable-name change is logged in its own txn (LoggedIndex), shipped to
the backend as segments, compacted with snapshots that replay to the same names (cas.meta)."""

from __future__ import annotations

import io
import threading

import pytest

from cas.blocks import packs_of
from cas.blocks.packs.files import LocalPackFiles, MemoryPackFiles
from cas.config import load_settings
from cas.errors import TransientStoreError
from cas.index import open_index
from cas.meta import objects, records
from cas.meta.log import LoggedIndex
from cas.meta.shipper import SHIPPED
from cas.store import Store

pytestmark = pytest.mark.unit

KINDS = ["memory", "local"]


def _settings(tmp_path, **meta):
    return load_settings(tmp_path / "data", {"gc": {"min_age": 0}, "meta": {"interval": 3600, **meta}}, env={})


def _open(tmp_path, kind, files=None, **meta):
    settings = _settings(tmp_path, **meta)
    if files is None:
        files = MemoryPackFiles() if kind == "memory" else None
    return Store.open_store(settings, blocks=files) if files is not None else Store.open_store(settings)


@pytest.fixture(params=KINDS)
def store(request, tmp_path):
    s = _open(tmp_path, request.param)
    yield s
    s.close()


def _files(store):
    return packs_of(store.blocks).files


def _unshipped(store) -> list[dict]:
    with store.index.read() as t:
        return list(t.iter_mlog(t.get_meta(SHIPPED) or 0))


def _backend_records(files) -> list[dict]:
    out = []
    for name in files.list_meta(objects.LOG_PREFIX):
        out.extend(objects.decode(files.get_meta(name), name))
    return out


# -- LoggedIndex --------------------------------------------------------------------------------------
def test_every_kind_of_durable_change_is_logged_in_its_commit(store):
    store.create_bucket("bkt")
    store.put("bkt", "k", io.BytesIO(b"hello"))
    store.copy("bkt", "k", "bkt", "k2")
    store.move("bkt", "k2", "bkt", "k3")
    store.touch("bkt", "k3", 1234.0)
    store.delete("bkt", "k")
    store.users.add("alice", "s3cret-s3cret")
    store.users.remove("alice")
    store.kv_put("davprops", "bkt", b"\x00props")
    store.kv_delete("davprops", "bkt")
    store.create_bucket("gone")
    store.delete_bucket("gone")
    recs = _unshipped(store)
    assert [r["n"] for r in recs] == list(range(1, len(recs) + 1))  # dense, in commit order
    ops = [(r["op"], r.get("bucket", r.get("name", r.get("ns"))), r.get("key")) for r in recs]
    assert ops == [
        ("put_bucket", "bkt", None),
        ("put_object", "bkt", "k"),
        ("put_object", "bkt", "k2"),
        ("delete_object", "bkt", "k2"), ("put_object", "bkt", "k3"),
        ("put_object", "bkt", "k3"),
        ("delete_object", "bkt", "k"),
        ("put_user", "alice", None),
        ("delete_user", "alice", None),
        ("kv_put", "davprops", "bkt"),
        ("kv_delete", "davprops", "bkt"),
        ("put_bucket", "gone", None),
        ("delete_bucket", "gone", None),
    ]
    assert recs[5]["rec"]["mtime"] == 1234.0 and recs[1]["rec"]["size"] == 5
    assert "secret" not in recs[7]["rec"]  # user secrets never reach the log
    assert records.kv_put(0, "davprops", "bkt", b"\x00props")["value"] == recs[9]["value"]
    assert all(r["time"] > 0 for r in recs)
    with store.index.read() as t:
        assert t.counter("mlog") == len(recs)


def test_transient_state_and_deletes_of_nothing_log_nothing(store):
    store.create_bucket("bkt")
    before = len(_unshipped(store))
    store.kv_put("locks", "x", b"lock")  # WebDAV locks are transient: not logged
    store.kv_delete("locks", "x")
    store.kv_delete("davprops", "nothing")
    with store.index.write() as t:
        assert not t.delete_object("bkt", "nothing") and not t.delete_bucket("nothing")
        assert not t.delete_user("nobody")
    uid = store.create_upload("bkt", "big")  # uploads and parts are not names: only completion logs
    store.upload_part(uid, 1, io.BytesIO(b"part"))
    assert len(_unshipped(store)) == before
    store.complete_upload(uid, [(1, store.list_parts(uid)[0].etag)])
    assert [r["op"] for r in _unshipped(store)[before:]] == ["put_object"]


def test_a_rolled_back_txn_logs_nothing(store):
    store.create_bucket("bkt")
    with store.index.read() as t:
        head = t.counter("mlog")
    with pytest.raises(RuntimeError), store.index.write() as t:
        t.put_object("bkt", "k", {"size": 1})
        t.put_bucket("cbk", {"owner": "root"})
        raise RuntimeError("abort")
    with store.index.read() as t:
        assert t.counter("mlog") == head
        assert [r["n"] for r in t.iter_mlog(0)][-1] == head
        assert t.get_object("bkt", "k") is None


def test_a_logged_index_wraps_once_and_reads_the_inner_index_unwrapped(tmp_path):
    inner = open_index(load_settings(tmp_path / "d", env={}))
    logged = LoggedIndex(LoggedIndex(inner))
    try:
        assert logged.inner is inner
        with logged.read() as r, inner.read() as r2:
            assert type(r) is type(r2)
        with logged.write() as t:
            t.put_bucket("bkt", {"owner": "root"})
            t.put_meta("x", 1)  # forwarded, not logged
        with inner.read() as t:
            assert [r["op"] for r in t.iter_mlog(0)] == ["put_bucket"] and t.get_meta("x") == 1
    finally:
        logged.close()


# -- shipping ------------------------------------------------------------------------------------------
def test_ship_writes_one_segment_and_trims_the_index(store):
    store.create_bucket("bkt")
    for i in range(5):
        store.put("bkt", f"k{i}", io.BytesIO(b"x" * i))
    assert store.meta_log.status()["unshipped_records"] == 6
    assert store.meta_log.ship() == 6
    names = list(_files(store).list_meta(objects.LOG_PREFIX))
    assert names == [objects.log_name(1, 6)]
    assert [r["n"] for r in _backend_records(_files(store))] == [1, 2, 3, 4, 5, 6]
    assert _unshipped(store) == []
    with store.index.read() as t:
        assert t.get_meta(SHIPPED) == 6 and list(t.iter_mlog(0)) == []
    assert store.meta_log.status()["unshipped_records"] == 0 and store.meta_log.status()["lag_seconds"] == 0
    store.delete("bkt", "k0")
    assert store.meta_log.ship() == 1
    assert list(_files(store).list_meta(objects.LOG_PREFIX))[-1] == objects.log_name(7, 7)
    assert store.meta_log.ship() == 0


def test_lag_is_the_age_of_the_oldest_unshipped_record(tmp_path):
    s = _open(tmp_path, "memory")
    now = [1000.0]
    s.clock = lambda: now[0]
    try:
        s.create_bucket("bkt")
        now[0] += 42
        s.create_bucket("cbk")
        status = s.meta_log_status()
        assert status["lag_seconds"] == 42 and status["unshipped_records"] == 2
        assert s.health()["meta_log"]["lag_seconds"] == 42
        s.meta_log.ship()
        assert s.meta_log_status()["lag_seconds"] == 0
    finally:
        s.close()


@pytest.mark.parametrize("kind", KINDS)
def test_closing_a_store_ships_its_records(tmp_path, kind):
    """A CLI command (no background loop) ends with its records in the backend."""
    files = MemoryPackFiles() if kind == "memory" else None
    s = _open(tmp_path, kind, files)
    s.create_bucket("bkt")
    s.put("bkt", "k", io.BytesIO(b"data"))
    s.close()
    files = files or LocalPackFiles(tmp_path / "data" / "blocks")
    assert [(r["op"], r.get("key")) for r in _backend_records(files)] == [("put_bucket", None), ("put_object", "k")]


@pytest.mark.parametrize("kind", KINDS)
def test_interval_zero_puts_the_record_in_the_backend_before_put_returns(tmp_path, kind):
    s = _open(tmp_path, kind, interval=0)
    try:
        s.create_bucket("bkt")
        info = s.put("bkt", "k", io.BytesIO(b"sync"))
        recs = _backend_records(_files(s))
        assert recs[-1]["op"] == "put_object" and recs[-1]["key"] == "k" and recs[-1]["rec"]["etag"] == info.etag
        s.delete("bkt", "k")
        assert _backend_records(_files(s))[-1]["op"] == "delete_object"
        assert _unshipped(s) == []
    finally:
        s.close()


def test_interval_zero_commits_from_many_threads_share_segments(tmp_path):
    s = _open(tmp_path, "memory", interval=0)
    try:
        s.create_bucket("bkt")
        errors = []

        def put(i):
            try:
                s.put("bkt", f"k{i}", io.BytesIO(b"x"))
                assert any(r.get("key") == f"k{i}" for r in _backend_records(_files(s)))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=put, args=(i,)) for i in range(16)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert errors == []
        recs = _backend_records(_files(s))
        assert sorted(r["n"] for r in recs) == list(range(1, 18))
        assert len(list(_files(s).list_meta(objects.LOG_PREFIX))) <= 17
    finally:
        s.close()


class FailingMeta:
    """A PackFiles whose meta writes fail while ``failing`` is set (a backend outage)."""

    def __init__(self, files):
        self.files = files
        self.failing = True

    def put_meta(self, name, data):
        if self.failing:
            raise TransientStoreError("backend down (test)")
        self.files.put_meta(name, data)

    def __getattr__(self, name):
        return getattr(self.files, name)


@pytest.mark.parametrize("kind", KINDS)
def test_a_backend_failure_keeps_the_records_and_a_later_ship_succeeds(tmp_path, kind):
    s = _open(tmp_path, kind)
    flaky = FailingMeta(_files(s))
    s.meta_log.files = flaky
    try:
        s.create_bucket("bkt")
        s.put("bkt", "k", io.BytesIO(b"kept"))
        with pytest.raises(TransientStoreError):
            s.meta_log.ship()
        wait = s.meta_log.run_once(5.0)  # the background loop backs off and reports the failure
        assert wait > 5.0 and "backend down" in s.meta_log_status()["error"]
        assert len(_unshipped(s)) == 2 and s.meta_log_status()["unshipped_records"] == 2
        flaky.failing = False
        assert s.meta_log.run_once(5.0) == 5.0
        assert "error" not in s.meta_log_status()
        assert [r["op"] for r in _backend_records(flaky.files)] == ["put_bucket", "put_object"]
        assert _unshipped(s) == []
    finally:
        s.close()


def test_interval_zero_refuses_to_acknowledge_what_it_cannot_ship(tmp_path):
    s = _open(tmp_path, "memory", interval=0)
    s.create_bucket("bkt")
    flaky = FailingMeta(_files(s))
    s.meta_log.files = flaky
    s.index.after_commit = lambda n: s.meta_log.wait_shipped(n, timeout=0.3)
    try:
        with pytest.raises(TransientStoreError, match="stays queued"):
            s.put("bkt", "k", io.BytesIO(b"x"))
        assert _unshipped(s)[-1]["key"] == "k"  # in the index, queued for the backend
        flaky.failing = False
        s.put("bkt", "k2", io.BytesIO(b"y"))  # ships both
        assert [r.get("key") for r in _backend_records(flaky.files)][-2:] == ["k", "k2"]
    finally:
        s.close()


# -- snapshots -----------------------------------------------------------------------------------------
def _names(index) -> dict:
    """Everything a snapshot carries, as plain data (users without secret)."""
    with index.read() as t:
        return {
            "buckets": dict(t.iter_buckets()),
            "objects": {(b, k): r for b, k, r in t.iter_objects()},
            "users": {n: {k: v for k, v in r.items() if k != "secret"} for n, r in t.iter_users()},
            "kv": {(ns, k): v for ns in records.LOGGED_KV for k, v in t.kv_scan(ns)},
        }


def _replay(files, tmp_path) -> dict:
    """A fresh index rebuilt from the newest complete snapshot plus the log after it."""
    snaps: dict[int, set] = {}
    for name in files.list_meta(objects.SNAP_PREFIX):
        n, rest = objects.parse_snap_name(name)
        snaps.setdefault(n, set()).add(rest)
    complete = sorted(n for n, rest in snaps.items() if "done" in rest)
    base = complete[-1] if complete else 0
    index = open_index(load_settings(tmp_path / "replayed", env={}))
    with index.write() as t:
        if complete:
            done = objects.decode(files.get_meta(objects.snap_done_name(base)))[0]
            for i in range(done["parts"]):
                for rec in objects.decode(files.get_meta(objects.snap_part_name(base, i))):
                    assert rec["n"] == base
                    records.apply(t, rec)
        applied = base
        for rec in sorted(_backend_records(files), key=lambda r: r["n"]):
            if rec["n"] > applied:
                records.apply(t, rec)
                applied = rec["n"]
    return index


def _snapshots(files) -> dict[int, set]:
    out: dict[int, set] = {}
    for name in files.list_meta(objects.SNAP_PREFIX):
        n, rest = objects.parse_snap_name(name)
        out.setdefault(n, set()).add(rest)
    return out


def _churn(s, round_):
    s.put("bkt", f"r{round_}", io.BytesIO(b"r" * round_))
    s.put("bkt", "same", io.BytesIO(f"v{round_}".encode()))
    s.move("bkt", f"r{round_}", "cbk", f"moved{round_}")
    s.copy("cbk", f"moved{round_}", "bkt", f"copy{round_}")
    s.delete("bkt", f"copy{round_}")
    s.kv_put("davprops", "bkt", f"props{round_}".encode())


@pytest.mark.parametrize("kind", KINDS)
def test_snapshots_compact_the_log_and_replay_to_the_same_names(tmp_path, kind, monkeypatch):
    monkeypatch.setattr("cas.meta.shipper.PART_RECORDS", 3)  # several parts per snapshot
    s = _open(tmp_path, kind, snapshot_every=6)
    files = _files(s)
    try:
        s.create_bucket("bkt")
        s.create_bucket("cbk")
        s.users.add("alice", "s3cret-s3cret")
        for round_ in range(1, 5):
            _churn(s, round_)
            s.meta_log.ship()
            assert s.meta_log.snapshot_due()
            n = s.meta_log.snapshot()
            done = objects.decode(files.get_meta(objects.snap_done_name(n)))[0]
            assert done["n"] == n and done["parts"] >= 2 and done["records"] == sum(
                len(v) for v in _names(s.index).values())
        s.put("bkt", "after", io.BytesIO(b"a"))  # after the newest snapshot: only in the log
        s.meta_log.ship()
        assert not s.meta_log.snapshot_due()  # 1 record < snapshot_every
        _churn(s, 5)
        s.meta_log.ship()
        snaps = _snapshots(files)
        complete = sorted(n for n, rest in snaps.items() if "done" in rest)
        assert len(complete) == 2 == len(snaps)  # the newest two; older ones deleted
        segments = [objects.parse_log_name(n) for n in files.list_meta(objects.LOG_PREFIX)]
        assert segments and min(first for first, _ in segments) > complete[0]  # covered ones deleted
        replayed = _replay(files, tmp_path)
        try:
            assert _names(replayed) == _names(s.index)
            assert _names(replayed)["objects"][("cbk", "moved3")]["size"] == 3
        finally:
            replayed.close()
    finally:
        s.close()


def test_an_incomplete_snapshot_is_ignored_and_cleaned_up_once_a_newer_one_completes(tmp_path):
    s = _open(tmp_path, "memory", snapshot_every=1)
    files = _files(s)
    try:
        s.create_bucket("bkt")
        s.meta_log.ship()
        files.put_meta(objects.snap_part_name(1, 0), objects.encode([]))  # a snapshot cut short
        s.put("bkt", "k", io.BytesIO(b"x"))
        s.meta_log.ship()
        n = s.meta_log.snapshot()
        assert n == 2 and _snapshots(files) == {2: {"part-000000", "done"}}
    finally:
        s.close()


def test_a_snapshot_holds_no_secret_and_replays_users_without_one(tmp_path):
    s = _open(tmp_path, "memory")
    try:
        s.users.add("bob", "a-secret-for-bob")
        n = s.meta_log.snapshot()
        raw = _files(s).get_meta(objects.snap_part_name(n, 0))
        assert b"a-secret-for-bob" not in raw
        recs = objects.decode(raw)
        assert [r["op"] for r in recs] == ["put_user"] and "secret" not in recs[0]["rec"]
    finally:
        s.close()


# -- retention -----------------------------------------------------------------------------------------
def test_retention_trims_old_events_and_idle_refs(tmp_path):
    from cas.gc.safety import trim_idle_refs

    s = _open(tmp_path, "memory", events_keep="1d")
    now = [1_000_000.0]
    s.clock = lambda: now[0]
    s.meta_log.clock = s.clock
    try:
        s.create_bucket("bkt")
        s.put("bkt", "old", io.BytesIO(b"1"))
        now[0] += 2 * 86400
        s.put("bkt", "new", io.BytesIO(b"2"))
        assert s.meta_log.retention()["events"] == 2
        assert [e.key for e in s.events()] == ["new"]
        with s.index.read() as t:
            assert len(list(t.iter_refs(0))) == 2
        with s.index.lock("gc"):  # a GC run needs them: kept
            assert trim_idle_refs(s) == {"refs": 0}
        assert trim_idle_refs(s) == {"refs": 2}
        with s.index.read() as t:
            assert list(t.iter_refs(0)) == []
    finally:
        s.close()


def test_stats_report_index_bytes_per_object(local_store):
    local_store.create_bucket("bkt")
    local_store.put("bkt", "k", io.BytesIO(b"x"))
    s = local_store.stats()
    assert s["index_bytes"] > 0 and s["index_bytes_per_object"] == s["index_bytes"]


def test_meta_settings_are_checked():
    from cas.errors import ConfigError

    assert load_settings("/nonexistent-cas", env={"CAS_META_INTERVAL": "0"}).meta.interval == 0
    assert load_settings("/nonexistent-cas", env={}).meta.interval == 5.0
    with pytest.raises(ConfigError):
        load_settings("/nonexistent-cas", {"meta": {"snapshot_every": 0}}, env={})
    with pytest.raises(ConfigError):
        load_settings("/nonexistent-cas", {"meta": {"interval": "soon"}}, env={})


@pytest.mark.s3backend
def test_shipping_and_snapshots_on_seaweedfs(tmp_path, s3_packfiles_factory):
    s = _open(tmp_path, "s3", files=s3_packfiles_factory(), interval=0, snapshot_every=4)
    files = _files(s)
    try:
        s.create_bucket("bkt")
        s.create_bucket("cbk")
        for round_ in range(1, 4):
            _churn(s, round_)
            assert _unshipped(s) == []  # interval 0: in SeaweedFS when the call returned
            s.meta_log.snapshot()
        _churn(s, 4)
        assert len([n for n, rest in _snapshots(files).items() if "done" in rest]) == 2
        replayed = _replay(files, tmp_path)
        try:
            assert _names(replayed) == _names(s.index)
        finally:
            replayed.close()
    finally:
        s.close()


@pytest.mark.parametrize("kind", KINDS)
def test_names_from_before_the_log_reach_the_backend_in_a_first_snapshot(tmp_path, kind):
    """A store whose names predate its metadata log (an upgrade) writes a snapshot of them the
    first time it ships, so recovery does not depend on changes made afterwards."""
    files = MemoryPackFiles() if kind == "memory" else None
    s = _open(tmp_path, kind, files)
    with s.index.inner.write() as t:  # as an older cas wrote them: no log records
        t.put_bucket("old", {"owner": "root", "created": 1.0, "id": "00"})
        t.put_object("old", "k", {"size": 0, "etag": "e"})
    assert s.meta_log.snapshot_due(by_time=False)
    names = _names(s.index)
    s.close()
    files = files or LocalPackFiles(tmp_path / "data" / "blocks")
    replayed = _replay(files, tmp_path)
    try:
        assert _names(replayed) == names and names["objects"]
    finally:
        replayed.close()


def test_a_snapshot_is_due_daily_when_anything_changed_and_at_close_only_by_count(tmp_path):
    s = _open(tmp_path, "memory", snapshot_every=100, snapshot_interval="1d")
    now = [5_000_000.0]
    s.clock = lambda: now[0]
    try:
        assert not s.meta_log.snapshot_due()  # an empty new store: nothing to snapshot
        s.create_bucket("bkt")
        assert s.meta_log.snapshot_due()  # never snapshotted
        s.meta_log.ship()
        s.meta_log.snapshot()
        now[0] += 2 * 86400
        assert not s.meta_log.snapshot_due()  # a day passed, nothing changed
        s.put("bkt", "k", io.BytesIO(b"x"))
        assert s.meta_log.snapshot_due() and not s.meta_log.snapshot_due(by_time=False)
    finally:
        s.close()


def test_the_log_can_be_switched_off_and_retention_still_runs(tmp_path):
    """``meta.log = false`` (``CAS_META_LOG=off``): no record is logged or shipped, no snapshot is
    written, the lag reads 0, and the hourly retention still trims the journal."""
    from cas.blocks.packs.files import MemoryPackFiles
    from cas.config import load_settings
    from cas.store import Store

    settings = load_settings(tmp_path / "d", env={"CAS_META_LOG": "off", "CAS_META_INTERVAL": "0"})
    assert settings.meta.log is False
    files = MemoryPackFiles()
    clock = [1_000_000.0]
    with Store.open_store(settings, blocks=files) as s:
        s.clock = lambda: clock[0]
        s.meta_log.clock = lambda: clock[0]
        s.create_bucket("bkt")
        s.put("bkt", "k", b"x" * 1000)
        with s.index.read() as t:
            assert t.counter("mlog") == 0 and list(t.iter_mlog(0)) == []
        assert s.meta_log_status()["enabled"] is False and s.meta_log_status()["unshipped_records"] == 0
        clock[0] += 400 * 86400  # older than the journal's retention
        s.meta_log.run_once(5.0)
        assert s.events() == []
    assert [n for n in files.list_meta() if n != "store.json"] == []
