"""Two nodes on one index and one backend (``tests.fixtures.nodes``): what one node changes, the other
sees at once (users, root, login tokens, buckets, WebDAV locks), and the metadata log leaves the
shared index once, in order, whoever ships it.

The GC side (DESIGN §4 across nodes) is ``tests/gc/test_node_hazards.py``.
"""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

from cas.blocks import packs_of
from cas.meta import objects
from cas.meta.shipper import SHIPPED
from tests.fixtures.gc import BUCKET, Background

pytestmark = [pytest.mark.integration, pytest.mark.concurrency, pytest.mark.timeout(300)]


def _segments(node) -> list[tuple[int, int, list[dict]]]:
    files = packs_of(node.blocks).files
    return [(first, last, objects.decode(files.get_meta(name), name))
            for first, last, name in objects.log_segments(files)]


def _shipped(node) -> int:
    with node.index.read() as t:
        return t.get_meta(SHIPPED) or 0


def _head(node) -> int:
    with node.index.read() as t:
        return t.counter("mlog")


class GatedFiles:
    """A node's ``PackFiles`` whose ``put_meta`` (a shipping round's segment) first reports itself in
    ``reached`` and waits for ``release``; counts the segments it writes. Everything else is the
    wrapped files' own."""

    def __init__(self, files, *, gated: bool = True):
        self._files = files
        self.reached = threading.Event()
        self.release = threading.Event()
        if not gated:
            self.release.set()
        self.segments = 0

    def __getattr__(self, name):
        return getattr(self._files, name)

    def put_meta(self, name: str, data: bytes) -> None:
        if name.startswith(objects.LOG_PREFIX):
            self.reached.set()
            assert self.release.wait(60), "the gated round was never released"
            self.segments += 1
        self._files.put_meta(name, data)


# -- the metadata log ----------------------------------------------------------------------------------

def test_two_nodes_shipping_at_once_ship_every_record_exactly_once_and_in_order(nodes):
    a, b = nodes.a, nodes.b
    stop = threading.Event()
    errors: list[BaseException] = []

    def commits(node, name: str) -> None:
        for i in range(30):
            node.put(BUCKET, f"{name}/{i:02d}", f"{name} {i}".encode())
            if i % 10 == 9:
                node.delete(BUCKET, f"{name}/{i - 5:02d}")

    def ships(node) -> None:
        while not stop.is_set():
            try:
                node.meta_log.ship()
            except BaseException as exc:  # handed to the test thread
                errors.append(exc)
                return

    shippers = [threading.Thread(target=ships, args=(node,), daemon=True) for node in (a, a, b, b)]
    writers = [Background(commits, node, f"{tag}{k}") for node, tag in ((a, "a"), (b, "b")) for k in range(2)]
    for t in shippers:
        t.start()
    for w in writers:
        w.result(120)
    stop.set()
    for t in shippers:
        t.join(60)
    assert not errors
    a.meta_log.ship()
    head = _head(a)
    segments = _segments(a)
    assert segments and segments[0][0] == 1 and segments[-1][1] == head
    for (_, last, _), (first, _, _) in zip(segments, segments[1:]):
        assert first == last + 1, f"segments overlap or leave a gap: {[(f, l) for f, l, _ in segments]}"
    records = [r for _, _, recs in segments for r in recs]
    assert [r["n"] for r in records] == list(range(1, head + 1))
    puts = sorted(r["key"] for r in records if r["op"] == "put_object")
    assert puts == sorted(f"{tag}{k}/{i:02d}" for tag in "ab" for k in range(2) for i in range(30))
    assert sum(r["op"] == "delete_object" for r in records) == 2 * 2 * 3
    names: set[tuple[str, str]] = set()  # the log replayed in position order is the index's state
    for r in records:
        if r["op"] == "put_object":
            names.add((r["bucket"], r["key"]))
        elif r["op"] == "delete_object":
            names.remove((r["bucket"], r["key"]))
    with b.index.read() as t:
        assert names == {(bucket, key) for bucket, key, _ in t.iter_objects()}
    with a.index.read() as t:
        assert list(t.iter_mlog(0)) == [] and t.get_meta(SHIPPED) == head


def test_a_synchronous_commit_waits_out_the_other_nodes_round_and_returns_once_its_record_is_shipped(nodes):
    """``meta.interval`` 0 on node B while node A is in the middle of a round whose batch was read
    before B's commit: B's commit returns only once its record is in the backend (shipped by A's
    round, which goes on while it finds records, or by B right after it), in its own segment."""
    a, b = nodes.a, nodes.b
    files_a = a.meta_log.files = GatedFiles(a.meta_log.files)
    b.meta_log.files = GatedFiles(b.meta_log.files, gated=False)
    b.index.after_commit = b.meta_log.wait_shipped
    a.put(BUCKET, "from-a", b"a")
    round_a = Background(a.meta_log.ship)
    assert files_a.reached.wait(30)  # A holds the ship lock, its batch read
    commit_b = Background(b.put, BUCKET, "from-b", b"b")
    time.sleep(0.5)
    assert commit_b.is_alive(), "B's synchronous commit returned before its record was shipped"
    assert _shipped(a) == 0
    files_a.release.set()
    commit_b.result()
    assert _shipped(a) == _head(a) == 3  # B's record (3) was in the backend when its commit returned
    round_a.result()
    assert [(f, l) for f, l, _ in _segments(a)] == [(1, 2), (3, 3)]
    assert [r["key"] for r in _segments(a)[1][2]] == ["from-b"]


def test_a_synchronous_commit_whose_record_the_other_node_ships_returns_without_shipping(nodes):
    a, b = nodes.a, nodes.b
    files_a = a.meta_log.files = GatedFiles(a.meta_log.files)
    files_b = b.meta_log.files = GatedFiles(b.meta_log.files, gated=False)
    committed, go_on = threading.Event(), threading.Event()

    def after_commit(n: int) -> None:  # B's commit is in the index; hold B before it ships
        committed.set()
        assert go_on.wait(30)
        b.meta_log.wait_shipped(n)

    b.index.after_commit = after_commit
    commit_b = Background(b.put, BUCKET, "from-b", b"b")
    assert committed.wait(30)
    round_a = Background(a.meta_log.ship)
    assert files_a.reached.wait(30)  # A's round holds B's record
    go_on.set()
    time.sleep(0.3)
    assert commit_b.is_alive()  # waiting for A's round
    files_a.release.set()
    assert round_a.result() == 2
    commit_b.result()
    assert files_b.segments == 0  # A shipped B's record
    assert [(f, l) for f, l, _ in _segments(a)] == [(1, 2)]


def test_the_background_loop_of_a_node_skips_a_round_another_node_holds(nodes):
    a, b = nodes.a, nodes.b
    files_a = a.meta_log.files = GatedFiles(a.meta_log.files)
    a.put(BUCKET, "k", b"x")
    round_a = Background(a.meta_log.ship)
    assert files_a.reached.wait(30)
    t0 = time.monotonic()
    assert b.meta_log.ship() == 0  # held: skipped at once, not waited for
    assert time.monotonic() - t0 < 5
    files_a.release.set()
    assert round_a.result() == 2
    assert b.meta_log.ship() == 0 and _shipped(b) == _head(b)


# -- WebDAV locks and properties: decided in the shared index ------------------------------------------

def _lock(manager, url: str, principal: str):
    return manager.acquire(url=url, lock_type="write", lock_scope="exclusive", lock_depth="infinity",
                           lock_owner=b"<D:owner xmlns:D='DAV:'>x</D:owner>", timeout=600, principal=principal,
                           token_list=[])


def test_a_lock_decision_on_one_node_holds_off_the_other_nodes_until_it_is_recorded(nodes):
    """Node A's LOCK checks the locks in force and records its own in one index txn: node B's
    conflicting LOCK on the same tree waits for that txn and is then refused (423), so never
    both are granted."""
    from wsgidav.dav_error import DAVError

    from cas.protocols.webdav.lock import StoreLockManager, StoreLockStorage

    storage_a = StoreLockStorage(nodes.a)
    manager_a, manager_b = StoreLockManager(storage_a), StoreLockManager(StoreLockStorage(nodes.b))
    with storage_a.transaction():  # A's decision in progress
        lock_a = _lock(manager_a, "/gcb/dir", "alice")
        b_tries = Background(_lock, manager_b, "/gcb/dir/file", "bob")
        time.sleep(0.5)
        assert b_tries.is_alive(), "node B decided while node A's decision was open"
    with pytest.raises(DAVError) as refused:
        b_tries.result()
    assert refused.value.value == 423
    assert [lk["token"] for lk in manager_b.get_url_lock_list("/gcb/dir", recursive=True)] == [lock_a["token"]]
    manager_b.release(lock_a["token"])  # UNLOCK on the other node
    assert manager_a.get_lock(lock_a["token"]) is None
    assert _lock(manager_a, "/gcb/dir/file", "bob")["principal"] == "bob"


def test_concurrent_locks_on_two_nodes_grant_one(nodes):
    from wsgidav.dav_error import DAVError

    from cas.protocols.webdav.lock import StoreLockManager, StoreLockStorage

    managers = [StoreLockManager(StoreLockStorage(node)) for node in (nodes.a, nodes.b)]
    for round_ in range(20):
        start = threading.Barrier(2)
        granted = []

        def take(manager, who):
            start.wait(10)
            try:
                granted.append(_lock(manager, f"/gcb/r{round_}", who))
            except DAVError as exc:
                assert exc.value == 423

        tries = [Background(take, m, who) for m, who in zip(managers, ("alice", "bob"))]
        for t in tries:
            t.result()
        assert len(granted) == 1, f"round {round_}: {len(granted)} exclusive locks granted on one URL"


def test_read_modify_writes_of_one_kv_record_on_two_nodes_lose_no_change(nodes):
    """``Store.kv_write`` (what a bucket's PROPPATCH does its read-modify-write in): concurrent
    changes of one record from two nodes each apply to what the other wrote."""
    import json

    from cas.protocols.webdav.resources import NS_PROPS

    def patch(node, name: str, value: str) -> None:
        with node.kv_write() as kv:
            raw = kv.get(NS_PROPS, BUCKET)
            props = json.loads(raw) if raw else {}
            props[name] = value
            kv.put(NS_PROPS, BUCKET, json.dumps(props).encode())

    writers = [Background(lambda node=node, k=k: [patch(node, f"{{ns}}{k}-{i}", "v") for i in range(25)])
               for k, node in enumerate((nodes.a, nodes.b))]
    for w in writers:
        w.result()
    with nodes.b.kv_read() as kv:
        assert len(json.loads(kv.get(NS_PROPS, BUCKET))) == 50


# -- users, root, tokens and buckets: nothing a node keeps goes stale ---------------------------------------

def test_every_node_has_the_one_generated_root_and_accepts_the_others_login_tokens(nodes):
    from cas.auth.tokens import TokenService
    from cas.errors import AccessDenied

    a, b = nodes.a, nodes.b
    name, secret, created = a.users.ensure_root()
    assert created and (a.settings.data_dir / "root-credentials").exists()
    assert b.users.ensure_root() == (name, secret, False)  # B's data directory has no file of it (PG)
    assert b.users.authenticate(name, secret, source="192.0.2.1")
    a.users.add("alice", "alice-secret-1")
    assert b.users.authenticate("alice", "alice-secret-1", source="192.0.2.1")
    token, _ = TokenService(a).issue("alice")
    assert TokenService(b).verify(token) == "alice"
    b.users.reset_secret("alice", "alice-secret-2")  # on B: A's next check sees it
    assert not a.users.authenticate("alice", "alice-secret-1", source="192.0.2.2")
    with pytest.raises(AccessDenied):
        TokenService(a).verify(token)  # the token's generation died with the old secret
    b.users.remove("alice")
    assert a.users.secret("alice") is None


def test_buckets_created_and_deleted_on_one_node_are_so_on_the_other(nodes):
    from cas.errors import BucketNotFound

    a, b = nodes.a, nodes.b
    b.create_bucket("fromb")
    assert "fromb" in {bk.name for bk in a.buckets()}
    a.put("fromb", "k", b"v")
    assert b.get_bytes("fromb", "k") == b"v" and b.list("fromb").entries[0].key == "k"
    a.delete("fromb", "k")
    a.delete_bucket("fromb")
    with pytest.raises(BucketNotFound):
        b.put("fromb", "k", b"v")


def test_a_commit_on_one_node_ends_an_event_wait_on_the_other(nodes, monkeypatch):
    """A PostgreSQL index tells the other node of the commit (NOTIFY): with the safety-net poll set
    far beyond the test's patience, only that can end B's wait. (LMDB nodes find it by polling.)"""
    from cas.store import journal

    monkeypatch.setattr(journal, "WATCHED_POLL", 120.0)
    a, b = nodes.a, nodes.b
    head = b.last_seq()
    got: dict = {}

    def follow():
        got["events"], _ = b.follow_events(head, wait=60)
        got["at"] = time.monotonic()

    follower = threading.Thread(target=follow)
    follower.start()
    time.sleep(0.5)  # B is waiting (it found nothing newer than head)
    assert follower.is_alive()
    wrote = time.monotonic()
    a.put(BUCKET, "woken", b"from A")
    follower.join(30)
    assert not follower.is_alive(), "B's wait was not ended by A's commit"
    assert [(e.op, e.key) for e in got["events"]] == [("put", "woken")]
    assert got["at"] - wrote < 10
    assert b.index.watch(lambda: None) is (nodes.index_kind == "pg")


# -- two processes on one LMDB file ------------------------------------------------------------------------

def test_a_cas_command_with_synchronous_shipping_waits_out_another_processs_round(local_store, tmp_path):
    """Two real processes on one LMDB index: while this one holds the ship lock (a round in progress),
    `cas put` with ``meta.interval`` 0 does not return; once the round ends, it ships its record
    itself and exits with it in the backend."""
    from tests.fixtures.gc import cas_env, start_cas

    local_store.create_bucket("bkt")
    local_store.meta_log.ship()
    src = tmp_path / "f.txt"
    src.write_bytes(b"hello")
    with local_store.index.lock("meta-ship"):
        put = start_cas(local_store.settings.data_dir, "put", str(src), "bkt/k",
                        env=cas_env(CAS_META_INTERVAL="0"))
        with pytest.raises(subprocess.TimeoutExpired):
            put.wait(3)
    out, err = put.communicate(timeout=60)
    assert put.returncode == 0, err
    segments = _segments(local_store)
    assert [r["key"] for r in segments[-1][2]] == ["k"] and _shipped(local_store) == _head(local_store)
