"""Identity is a flag, not a name; state keyed by a bucket's name dies with the bucket.

Against a real ``cas serve``: a user called ``anonymous`` (possible in stores made before the
name was reserved) gets no more than any other user; after alice deletes bucket ``x`` and bob
creates ``x``, bob sees none of alice's events, dead properties or locks.
"""

from __future__ import annotations

import base64
import stat
import subprocess
import time

import pytest

from cas.config import load_settings
from cas.store import Store
from tests.fixtures.web import CAS_COMMAND, ROOT_PASSWORD, ROOT_USER, with_users

pytestmark = pytest.mark.integration

ALICE, ALICE_SECRET = "alice", "alice-secret-123"
BOB, BOB_SECRET = "bobby", "bobby-secret-456"
ANON_SECRET = "anonymous-user-secret"


@pytest.fixture
def server(tmp_path, start_web_server):
    data = with_users(tmp_path / "data", {ALICE: ALICE_SECRET, BOB: BOB_SECRET})
    settings = load_settings(data, {"auth": {"root_user": ROOT_USER, "root_password": ROOT_PASSWORD}}, env={})
    with Store.open_store(settings) as store:
        # a user called "anonymous", as an older store may hold one (cas user add refuses it now)
        with store.index.write() as t:
            t.put_user("anonymous", {"secret": ANON_SECRET, "created": time.time()})
    return start_web_server(data)


def dav(server, method: str, path: str, user: str, secret: str, headers: dict | None = None,
        body: bytes | None = None):
    auth = base64.b64encode(f"{user}:{secret}".encode()).decode()
    return server.request(method, "/dav" + path, body, headers={"Authorization": f"Basic {auth}", **(headers or {})})


def test_a_user_named_anonymous_gets_no_more_than_any_other_user(server):
    alice = server.login(ALICE, ALICE_SECRET)
    server.json("POST", "/api/buckets", {"name": "alice-private"}, token=alice, expect=201)
    server.request("PUT", "/api/buckets/alice-private/object?key=secret.txt", b"alice's", token=alice)

    anon = server.login("anonymous", ANON_SECRET)
    _, who = server.json("GET", "/api/whoami", token=anon, expect=200)
    assert who == {"user": "anonymous", "root": False, "anonymous": False}
    _, listing = server.json("GET", "/api/buckets", token=anon, expect=200)
    assert listing["buckets"] == []
    status, _, _ = server.request("GET", "/api/buckets/alice-private/object?key=secret.txt", token=anon)
    assert status == 404
    _, events = server.json("GET", "/api/events?after=0", token=anon, expect=200)
    assert events["events"] == []
    status, _, _ = server.request("GET", "/metrics", token=anon)
    assert status == 403
    # and with Basic credentials on the API, the same
    status, _, _ = server.request("GET", "/api/buckets/alice-private/objects", basic=("anonymous", ANON_SECRET))
    assert status == 404
    # the user can still use its own bucket
    server.json("POST", "/api/buckets", {"name": "anon-own"}, token=anon, expect=201)
    _, listing = server.json("GET", "/api/buckets", token=anon, expect=200)
    assert [b["name"] for b in listing["buckets"]] == ["anon-own"]


def test_cas_user_add_refuses_reserved_names(tmp_path):
    data = tmp_path / "data"
    subprocess.run([*CAS_COMMAND, "init", "--data", str(data)], capture_output=True, timeout=60, check=True,
                   env={"PATH": "/usr/bin:/bin"})
    for name in ("anonymous", "Anonymous", "root"):
        proc = subprocess.run([*CAS_COMMAND, "user", "add", "--data", str(data), name],
                              capture_output=True, text=True, timeout=60, check=False,
                              env={"CAS_ROOT_USER": ROOT_USER, "CAS_ROOT_PASSWORD": ROOT_PASSWORD,
                                   "PATH": "/usr/bin:/bin"})
        assert proc.returncode != 0, proc.stdout
        assert "reserved" in proc.stderr and "Traceback" not in proc.stderr


def test_a_new_bucket_of_an_old_name_inherits_nothing(server):
    alice = server.login(ALICE, ALICE_SECRET)
    bob = server.login(BOB, BOB_SECRET)
    server.json("POST", "/api/buckets", {"name": "shared-name"}, token=alice, expect=201)
    status, _, _ = server.request("PUT", "/api/buckets/shared-name/object?key=alice-diary.txt", b"dear diary",
                                  token=alice)
    assert status in (200, 201)
    # a dead property on the bucket and a lock on a name inside it, both by alice
    proppatch = (b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:x-test">'
                 b'<D:set><D:prop><Z:mood>alice-was-here</Z:mood></D:prop></D:set></D:propertyupdate>')
    status, _, _ = dav(server, "PROPPATCH", "/shared-name/", ALICE, ALICE_SECRET,
                       {"Content-Type": "application/xml"}, proppatch)
    assert status == 207
    lock = (b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
            b'<D:locktype><D:write/></D:locktype><D:owner>alice</D:owner></D:lockinfo>')
    status, _, _ = dav(server, "LOCK", "/shared-name/report.txt", ALICE, ALICE_SECRET,
                       {"Content-Type": "application/xml", "Timeout": "Second-600"}, lock)
    assert status in (200, 201)
    status, _, _ = dav(server, "PUT", "/shared-name/report.txt", BOB, BOB_SECRET, body=b"x")
    assert status in (403, 404)  # not bob's bucket (yet)

    # alice empties and deletes her bucket (through the API: locks do not bind it)
    server.request("DELETE", "/api/buckets/shared-name/object?key=alice-diary.txt", token=alice)
    server.request("DELETE", "/api/buckets/shared-name/object?key=report.txt", token=alice)
    status, _, raw = server.request("DELETE", "/api/buckets/shared-name", token=alice)
    assert status == 204, raw
    _, after_delete = server.json("GET", "/api/events?after=latest", token=bob, expect=200)

    # bob creates a bucket of the same name
    server.json("POST", "/api/buckets", {"name": "shared-name"}, token=bob, expect=201)
    _, events = server.json("GET", "/api/events?after=0", token=bob, expect=200)
    keys = [e["key"] for e in events["events"]]
    assert "alice-diary.txt" not in keys and all(e["user"] != ALICE for e in events["events"]), events
    assert [e["op"] for e in events["events"] if e["bucket"] == "shared-name"] == ["create_bucket"]
    assert after_delete["next"] < events["events"][-1]["seq"]
    # alice still sees her own history of her (deleted) bucket
    _, alices = server.json("GET", "/api/events?after=0", token=alice, expect=200)
    assert "alice-diary.txt" in [e["key"] for e in alices["events"]]
    ids = {e["bucket_id"] for e in alices["events"] if e["bucket"] == "shared-name"}
    assert len(ids) == 1 and events["events"][-1]["bucket_id"] not in ids

    status, _, body = dav(server, "PROPFIND", "/shared-name/", BOB, BOB_SECRET,
                          {"Depth": "0", "Content-Type": "application/xml"},
                          b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>')
    assert status == 207 and b"alice-was-here" not in body
    status, _, _ = dav(server, "PUT", "/shared-name/report.txt", BOB, BOB_SECRET, body=b"bob's report")
    assert status in (200, 201, 204)
    status, _, body = dav(server, "GET", "/shared-name/report.txt", BOB, BOB_SECRET)
    assert status == 200 and body == b"bob's report"


@pytest.mark.unit
def test_block_directories_are_private(tmp_path):
    settings = load_settings(tmp_path / "fresh", {"auth": {"root_user": ROOT_USER, "root_password": ROOT_PASSWORD}})
    with Store.open_store(settings) as store:
        store.create_bucket("bkt")
        store.put("bkt", "k", b"some bytes " * 1000)
    blocks = tmp_path / "fresh" / "blocks"
    assert stat.S_IMODE((tmp_path / "fresh").stat().st_mode) == 0o700
    for d in [blocks, *[p for p in blocks.iterdir() if p.is_dir()]]:
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
    # a store made by an older version (world-readable) is closed up when opened
    blocks.chmod(0o755)
    with Store.open_store(settings):
        pass
    assert stat.S_IMODE(blocks.stat().st_mode) == 0o700




@pytest.mark.unit
def test_locks_die_with_their_bucket_but_a_lock_null_name_keeps_its_lock(tmp_path):
    from cas.protocols.webdav.lock import StoreLockStorage

    with Store.open_store(load_settings(tmp_path / "data", env={})) as store:
        locks = StoreLockStorage(store)
        store.create_bucket("old-bkt", owner="alice")
        info = {"type": "write", "scope": "exclusive", "depth": "infinity", "owner": b"alice",
                "timeout": 600, "principal": "alice"}
        in_bucket = locks.create("/old-bkt/f", dict(info))["token"]
        lock_null = locks.create("/new-bkt", dict(info))["token"]  # LOCK before MKCOL
        assert locks.get(in_bucket) is not None and locks.get(lock_null) is not None
        store.delete_bucket("old-bkt")
        store.create_bucket("old-bkt", owner="bob")
        store.create_bucket("new-bkt", owner="alice")
        assert locks.get(in_bucket) is None
        assert locks.get_lock_list("/old-bkt", include_root=True, include_children=True, token_only=True) == []
        assert locks.get(lock_null) is not None
