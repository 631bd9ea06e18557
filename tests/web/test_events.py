"""The journal as sync clients see it: GET /api/events (order, fields, tenancy, long-poll) and
``cas events``; writes come in over S3, WebDAV and the web API."""

from __future__ import annotations

import base64
import http.client
import json
import subprocess
import threading
import time
import urllib.parse

import pytest

from cas.config import load_settings
from cas.store import Store
from tests.fixtures.web import CAS_COMMAND, ROOT_PASSWORD, ROOT_USER

pytestmark = pytest.mark.integration

DAVE, DAVE_SECRET = "dave", "dave-secret-0001"
FIELDS = {"seq", "time", "user", "op", "bucket", "key", "size", "etag", "bucket_id"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.fixtures.web import start_web, with_users

    srv = start_web(with_users(tmp_path_factory.mktemp("events") / "data", {DAVE: DAVE_SECRET}))
    yield srv
    srv.stop()


def head(server, token) -> int:
    return server.json("GET", "/api/events?after=latest", token=token, expect=200)[1]["next"]


def dav(server, method: str, path: str, user: str, secret: str, headers: dict | None = None, body: bytes = b""):
    url = urllib.parse.urlsplit(server.base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    auth = base64.b64encode(f"{user}:{secret}".encode()).decode()
    try:
        conn.request(method, path, body=body, headers={"Authorization": f"Basic {auth}", **(headers or {})})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def s3_client(server):
    boto3 = pytest.importorskip("boto3")
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=server.s3_url, aws_access_key_id=ROOT_USER,
                        aws_secret_access_key=ROOT_PASSWORD, region_name="us-east-1",
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


def test_s3_put_webdav_move_and_delete_appear_in_order(server):
    token = server.login()
    start = head(server, token)
    server.json("POST", "/api/buckets", {"name": "sync"}, token=token, expect=201)
    s3 = s3_client(server)

    put = s3.put_object(Bucket="sync", Key="docs/a.txt", Body=b"hello events")
    status, body = dav(server, "MOVE", "/dav/sync/docs/a.txt", ROOT_USER, ROOT_PASSWORD,
                       {"Destination": server.base + "/dav/sync/docs/b.txt", "Overwrite": "T"})
    assert status in (201, 204), f"WebDAV MOVE answered {status}: {body[:200]!r}"
    assert server.request("DELETE", "/api/buckets/sync/object?key=docs/b.txt", token=token)[0] == 204

    _, data = server.json("GET", f"/api/events?after={start}", token=token, expect=200)
    events = data["events"]
    assert all(set(e) == FIELDS for e in events)
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert data["next"] >= seqs[-1]
    steps = [(e["op"], e["bucket"], e["key"]) for e in events]
    # deleting the folder's last file keeps the folder: its marker "docs/" is written (cas.namespace)
    assert steps == [("create_bucket", "sync", ""), ("put", "sync", "docs/a.txt"),
                     ("move_from", "sync", "docs/a.txt"), ("move", "sync", "docs/b.txt"),
                     ("delete", "sync", "docs/b.txt"), ("put", "sync", "docs/")]
    etag = put["ETag"].strip('"')
    for e in events[1:-1]:
        assert (e["size"], e["etag"], e["user"]) == (12, etag, ROOT_USER)
    assert (events[-1]["size"], events[-1]["user"]) == (0, ROOT_USER)


def test_web_api_writes_are_journalled_with_their_fields(server):
    token = server.login()
    start = head(server, token)
    server.json("POST", "/api/buckets", {"name": "journal"}, token=token, expect=201)
    _, _, raw = server.request("PUT", "/api/buckets/journal/object?key=x.bin", b"x" * 1000, token=token)
    info = json.loads(raw)
    server.json("POST", "/api/buckets/journal/move", {"from": "x.bin", "to": "y.bin"}, token=token, expect=200)
    server.request("DELETE", "/api/buckets/journal/object?key=y.bin", token=token)
    server.request("DELETE", "/api/buckets/journal", token=token)
    _, data = server.json("GET", f"/api/events?after={start}", token=token, expect=200)
    events = data["events"]
    assert [e["op"] for e in events] == ["create_bucket", "put", "move_from", "move", "delete", "delete_bucket"]
    put = events[1]
    assert put["key"] == "x.bin" and put["size"] == 1000 and put["etag"] == info["etag"]
    assert put["user"] == ROOT_USER and abs(put["time"] - time.time()) < 60
    # paging with limit and next
    _, first = server.json("GET", f"/api/events?after={start}&limit=2", token=token, expect=200)
    assert [e["op"] for e in first["events"]] == ["create_bucket", "put"]
    _, rest = server.json("GET", f"/api/events?after={first['next']}", token=token, expect=200)
    assert [e["op"] for e in rest["events"]] == ["move_from", "move", "delete", "delete_bucket"]


def metric(server, token: str, name: str) -> float:
    _, _, body = server.request("GET", "/metrics", token=token)
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics")


def wait_for_waiting_polls(server, token: str, count: int, timeout: float = 20.0) -> None:
    """Until ``count`` long-polls are waiting (the server's own gauge says so), bounded."""
    deadline = time.monotonic() + timeout
    while metric(server, token, "cas_event_polls_waiting") != count:
        assert time.monotonic() < deadline, f"never {count} waiting polls"
        time.sleep(0.02)


def test_long_poll_returns_as_soon_as_a_write_happens(server):
    token = server.login()
    server.json("POST", "/api/buckets", {"name": "poll"}, token=token, expect=201)
    start = head(server, token)
    result = {}

    def poll():
        began = time.monotonic()
        result["resp"] = server.json("GET", f"/api/events?after={start}&wait=20", token=token)
        result["elapsed"] = time.monotonic() - began

    t = threading.Thread(target=poll)
    t.start()
    wait_for_waiting_polls(server, token, 1)  # the poll is waiting: the write below must wake it
    assert "resp" not in result
    wrote = time.monotonic()
    server.request("PUT", "/api/buckets/poll/object?key=wake.txt", b"wake up", token=token)
    t.join(timeout=25)
    assert not t.is_alive()
    status, data = result["resp"]
    assert status == 200 and [e["key"] for e in data["events"]] == ["wake.txt"]
    assert time.monotonic() - wrote < 3.0 and result["elapsed"] < 10.0

    # nothing happens: the wait ends on its own, with nothing, at about the time asked for
    began = time.monotonic()
    _, data = server.json("GET", f"/api/events?after={data['next']}&wait=1", token=token, expect=200)
    assert data["events"] == [] and 0.9 <= time.monotonic() - began < 5


def test_users_follow_only_their_own_buckets(server):
    root = server.login()
    dave = server.login(DAVE, DAVE_SECRET)
    start = head(server, root)
    server.json("POST", "/api/buckets", {"name": "root-only"}, token=root, expect=201)
    server.request("PUT", "/api/buckets/root-only/object?key=hidden.txt", b"no", token=root)
    server.json("POST", "/api/buckets", {"name": "dave-box"}, token=dave, expect=201)
    server.request("PUT", "/api/buckets/dave-box/object?key=mine.txt", b"yes", token=dave)
    _, seen = server.json("GET", f"/api/events?after={start}", token=dave, expect=200)
    assert {e["bucket"] for e in seen["events"]} == {"dave-box"}
    assert [e["key"] for e in seen["events"]] == ["", "mine.txt"]
    _, everything = server.json("GET", f"/api/events?after={start}", token=root, expect=200)
    assert {e["bucket"] for e in everything["events"]} == {"root-only", "dave-box"}
    # a long poll of dave's is not woken with root's events, but its cursor moves past them
    began = time.monotonic()
    _, quiet = server.json("GET", f"/api/events?after={seen['next']}&wait=1", token=dave, expect=200)
    server.request("PUT", "/api/buckets/root-only/object?key=more.txt", b"no", token=root)
    _, later = server.json("GET", f"/api/events?after={quiet['next']}&wait=1", token=dave, expect=200)
    assert quiet["events"] == later["events"] == [] and later["next"] > quiet["next"]
    assert time.monotonic() - began < 6


def test_cas_events_command_prints_and_follows(tmp_path):
    data = tmp_path / "data"
    settings = load_settings(data)
    with Store.open_store(settings) as store:
        store.create_bucket("cli", owner="erin")
        store.put("cli", "one.txt", b"1", user="erin")
        store.delete("cli", "one.txt", user="erin")
    out = subprocess.run([*CAS_COMMAND, "events", "--data", str(data), "--json"], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    events = [json.loads(line) for line in out.splitlines()]
    assert [e["op"] for e in events] == ["create_bucket", "put", "delete"]
    assert all(set(e) == FIELDS for e in events)
    out = subprocess.run([*CAS_COMMAND, "events", "--data", str(data), "--after", str(events[0]["seq"])],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    lines = out.splitlines()
    assert len(lines) == 2 and "put" in lines[0] and "cli/one.txt" in lines[0] and "erin" in lines[0]

    follow = subprocess.Popen([*CAS_COMMAND, "events", "--data", str(data), "--follow", "--json",
                               "--log-level", "INFO", "--after", str(events[-1]["seq"])],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # the follower says when it has caught up and waits: a write from another process must reach it
        assert "waiting for new events" in _readline(follow, timeout=30, stream="stderr")
        with Store.open_store(settings) as store:
            store.put("cli", "two.txt", b"22", user="erin")
        line = _readline(follow, timeout=15)
        assert json.loads(line)["key"] == "two.txt"
    finally:
        follow.terminate()
        follow.wait(timeout=10)


def _readline(proc: subprocess.Popen, timeout: float, stream: str = "stdout") -> str:
    got: list[str] = []
    pipe = getattr(proc, stream)
    reader = threading.Thread(target=lambda: got.append(pipe.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    assert got and got[0], "no event line from cas events --follow"
    return got[0]


def test_long_polls_beyond_the_limit_answer_at_once(start_web_server):
    """Each waiting poll holds a worker thread: with 4 threads only one may wait at a time."""
    srv = start_web_server(extra_args=["--threads", "4"])
    token = srv.login()
    srv.json("POST", "/api/buckets", {"name": "polls"}, token=token, expect=201)
    latest = head(srv, token)
    results: dict[str, list] = {}

    def poll(name: str):
        results[name] = srv.json("GET", f"/api/events?after={latest}&wait=20", token=token, expect=200)[1]["events"]

    first = threading.Thread(target=poll, args=("first",))
    first.start()
    wait_for_waiting_polls(srv, token, 1)
    second = threading.Thread(target=poll, args=("second",))
    second.start()
    second.join(timeout=20)  # answered at once (empty) while the first still waits
    assert not second.is_alive() and results["second"] == []
    assert "first" not in results and metric(srv, token, "cas_event_polls_waiting") == 1
    srv.request("PUT", "/api/buckets/polls/object?key=go", b"go", token=token)  # wakes the first
    first.join(timeout=20)
    assert [e["key"] for e in results["first"]] == ["go"]
    assert srv.json("GET", "/api/whoami", token=token)[0] == 200  # the listener still answers
