"""WebDAV locks cannot be used to block other users: who may lock what, how long a lock
lives, and how root lists and breaks locks (``cas locks``) while the server runs.

Real ``cas serve`` processes and real HTTP over loopback; the expiry test drives the lock
storage with an injected clock over a real Store.
"""

from __future__ import annotations

import json
import re
import time

import pytest

from tests.fixtures.webdav import unique_bucket

pytestmark = pytest.mark.integration

LOCK_BODY = (b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
             b"<D:locktype><D:write/></D:locktype><D:owner>mallory</D:owner></D:lockinfo>")
CAP = 3600


def lock(client, path, *, depth="infinity", timeout="Second-600"):
    headers = {"Content-Type": "application/xml", "Depth": depth}
    if timeout is not None:
        headers["Timeout"] = timeout
    return client.request("LOCK", path, body=LOCK_BODY, headers=headers)


def timeout_of(resp) -> str:
    m = re.search(rb"<(?:\w+:)?timeout>([^<]+)</", resp.body)
    assert m, resp.body
    return m.group(1).decode()


def cli_locks(server, *args) -> list[dict]:
    out = server.cli("locks", *args, "--json")
    return json.loads(out.stdout)


@pytest.fixture
def server(dav_server_factory):
    """A fresh server per test: a lock left behind cannot disturb other tests."""
    return dav_server_factory()


def test_user_cannot_lock_the_root_collection(server):
    root = server.client()
    alice = server.client(*server.add_user())
    bob = server.client(*server.add_user())
    r_bucket, b_bucket = unique_bucket("root"), unique_bucket("bob")
    assert root.mkcol("/" + r_bucket).status == 201
    assert bob.mkcol("/" + b_bucket).status == 201

    for depth in ("infinity", "0"):
        resp = lock(alice, "/", depth=depth, timeout="Infinite")
        assert resp.status == 403, (depth, resp.status)
    assert cli_locks(server, "list") == []
    # every user can still write
    assert root.put(f"/{r_bucket}/f", b"x").status == 201
    assert bob.put(f"/{b_bucket}/f", b"x").status == 201
    assert bob.mkcol(f"/{b_bucket}/d").status == 201
    assert bob.delete(f"/{b_bucket}/f").status == 204


def test_user_cannot_lock_inside_another_users_bucket(server):
    alice = server.client(*server.add_user())
    bob = server.client(*server.add_user())
    a_bucket = unique_bucket("alice")
    assert alice.mkcol("/" + a_bucket).status == 201
    assert alice.put(f"/{a_bucket}/f", b"x").status == 201
    assert lock(bob, "/" + a_bucket).status == 404
    assert lock(bob, f"/{a_bucket}/f", depth="0").status == 404
    assert lock(bob, f"/{a_bucket}/new", depth="0").status == 404
    assert alice.put(f"/{a_bucket}/f", b"y").status == 204
    # its owner may lock it, and root may lock anything, the root collection included
    assert lock(alice, "/" + a_bucket).status == 200
    root = server.client()
    resp = lock(root, "/", depth="0")
    assert resp.status == 200


def test_lock_lifetime_is_capped(server):
    alice = server.client(*server.add_user())
    for timeout in ("Infinite", "Second-4100000000", "Second-2419200", None, "Infinite, Second-4100000000"):
        bucket = unique_bucket("alice")
        assert alice.mkcol("/" + bucket).status == 201
        before = time.time()
        resp = lock(alice, "/" + bucket, timeout=timeout)
        assert resp.status == 200
        announced = timeout_of(resp)
        assert announced.startswith("Second-") and 0 < int(announced[7:]) <= CAP, (timeout, announced)
        (rec,) = [r for r in cli_locks(server, "list") if r["path"] == "/" + bucket]
        assert rec["expire"] <= before + CAP + 5, timeout
        # a refresh is capped as well
        token = resp.header("Lock-Token")
        refreshed = alice.request("LOCK", "/" + bucket, headers={"If": f"({token})", "Timeout": "Infinite"})
        assert refreshed.status == 200 and int(timeout_of(refreshed)[7:]) <= CAP


def test_cli_lists_and_breaks_locks_of_the_running_server(server):
    root = server.client()
    alice = server.client(*server.add_user())
    bucket = unique_bucket("alice")
    assert alice.mkcol("/" + bucket).status == 201
    assert alice.mkcol(f"/{bucket}/d").status == 201
    tokens = {}
    for name in ("f1", "f2", "d/g"):
        assert alice.put(f"/{bucket}/{name}", b"x").status == 201
        resp = lock(alice, f"/{bucket}/{name}", depth="0")
        assert resp.status == 200
        tokens[name] = resp.header("Lock-Token").strip("<>")
    assert lock(alice, f"/{bucket}/d").status == 423  # d/g is locked exclusively: a conflict
    for name in tokens:
        assert root.put(f"/{bucket}/{name}", b"root").status == 423

    listed = {r["token"]: r for r in cli_locks(server, "list")}
    assert set(listed) == set(tokens.values())
    assert {r["path"] for r in listed.values()} == {f"/{bucket}/f1", f"/{bucket}/f2", f"/{bucket}/d/g"}
    assert {r["principal"] for r in listed.values()} == {alice.user}
    text = server.cli("locks", "list").stdout
    assert tokens["f1"] in text and f"/{bucket}/f1" in text

    # by token: takes effect on the running server at once
    removed = cli_locks(server, "break", tokens["f1"])
    assert [r["token"] for r in removed] == [tokens["f1"]]
    assert root.put(f"/{bucket}/f1", b"root").status == 204
    assert root.put(f"/{bucket}/f2", b"root").status == 423
    # by path (the lock on d/g is below /bucket/d)
    removed = cli_locks(server, "break", "--path", f"/{bucket}/d")
    assert [r["token"] for r in removed] == [tokens["d/g"]]
    assert root.put(f"/{bucket}/d/g", b"root").status == 204
    # everything
    removed = cli_locks(server, "break", "--all")
    assert [r["token"] for r in removed] == [tokens["f2"]]
    assert root.put(f"/{bucket}/f2", b"root").status == 204
    assert cli_locks(server, "list") == []

    # an unknown token is reported and makes the exit code non-zero; no arguments is a usage error
    out = server.cli("locks", "break", "opaquelocktoken:nope", check=False)
    assert out.returncode == 1 and "opaquelocktoken:nope" in out.stderr
    assert server.cli("locks", "break", check=False).returncode == 2
    assert server.cli("locks", "break", "--all", "--path", "/x", check=False).returncode == 2


def test_root_lock_on_root_collection_can_be_broken(server):
    root = server.client()
    alice = server.client(*server.add_user())
    bucket = unique_bucket("alice")
    assert alice.mkcol("/" + bucket).status == 201
    assert lock(root, "/").status == 200
    assert alice.put(f"/{bucket}/f", b"x").status == 423  # root may do this, and undo it:
    (rec,) = cli_locks(server, "list")
    assert rec["path"] == "/" and rec["depth"] == "infinity"
    assert len(cli_locks(server, "break", "--path", "/")) == 1
    assert alice.put(f"/{bucket}/f", b"x").status == 201


# -- expiry, with an injected clock over a real Store ------------------------------------------


class Clock:
    def __init__(self):
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _manager(store, clock):
    from wsgidav.lock_man.lock_manager import LockManager

    from cas.protocols.webdav.lock import StoreLockStorage

    return LockManager(StoreLockStorage(store, clock=clock))


def _blocked(manager, url, principal) -> bool:
    from wsgidav.dav_error import HTTP_LOCKED, DAVError

    try:
        manager.check_write_permission(url=url, depth="0", token_list=[], principal=principal)
    except DAVError as exc:
        assert exc.value == HTTP_LOCKED
        return True
    return False


@pytest.mark.unit
def test_expired_lock_stops_blocking(local_store):
    clock = Clock()
    manager = _manager(local_store, clock)
    manager.acquire(url="/b/f", lock_type="write", lock_scope="exclusive", lock_depth="infinity",
                    lock_owner=b"", timeout=-1, principal="alice", token_list=[])  # Timeout: Infinite
    assert _blocked(manager, "/b/f", "bob")
    clock.now += CAP - 1
    assert _blocked(manager, "/b/f", "bob")
    clock.now += 2
    assert not _blocked(manager, "/b/f", "bob")
    from cas.protocols.webdav.lock import list_locks

    assert list_locks(local_store) == []


@pytest.mark.unit
def test_lock_stored_with_a_longer_lifetime_is_cut_to_the_cap(local_store):
    from cas.protocols.webdav.lock import NS_LOCK, NS_URL, StoreLockStorage

    clock = Clock()
    manager = _manager(local_store, clock)
    # a record as an older cas wrote it: four weeks
    lock = {"root": "/", "type": "write", "scope": "exclusive", "depth": "infinity", "owner": b"",
            "principal": "mallory", "timeout": 4 * 604800, "expire": clock.now + 4 * 604800,
            "token": "opaquelocktoken:old"}
    local_store.kv_put(NS_LOCK, lock["token"], StoreLockStorage._encode(lock))
    local_store.kv_put(NS_URL, "/\0" + lock["token"], b"")
    assert _blocked(manager, "/b/f", "bob")
    clock.now += CAP + 1
    assert not _blocked(manager, "/b/f", "bob")
