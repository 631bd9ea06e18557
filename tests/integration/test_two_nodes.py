"""Two ``cas serve`` nodes over one PostgreSQL index and one S3 bucket serve one namespace
(issue 16 "Several nodes" and "Node failure"; DESIGN §7).

Every test runs real processes: a throwaway PostgreSQL (``pg_server``), the session's SeaweedFS
(``seaweed``), and two ``cas serve`` subprocesses, each with its own ``--data`` directory and the
same ``--index`` / ``--blocks``. Node A starts first (it creates the store), then B. Admin
commands (``cas gc``, ``cas verify``) run from a third data directory with the same flags, as
from an admin host. What is checked is what a client behind a load balancer relies on: whatever
one node acknowledged, the other serves at once; locks, properties, users, multipart uploads and
the event journal are shared; GC from anywhere is safe with writers on both nodes; a node killed
with SIGKILL loses nothing it acknowledged, and its leftovers are reclaimed once its leases lapse.

Two tests place a node elsewhere: the killed node runs in a pid namespace of its own (``unshare``),
so that GC on this host cannot see its process die, as with a node on another host; and one test
runs node B in a network namespace of its own (``ip netns``), reaching PostgreSQL and SeaweedFS
across a veth link (skipped where namespaces cannot be made).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import random
import signal
import struct
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit
from xml.etree import ElementTree

import pytest
from botocore.exceptions import ClientError

from tests.fixtures.s3api import S3Serve
from tests.fixtures.serve import CAS_COMMAND
from tests.protocols.webdav.test_dav_protocol import PROPGET, PROPPATCH, lock

pytestmark = [pytest.mark.integration, pytest.mark.s3backend]

SEGMENT = 96 << 10  # objects are made of shared random segments, so both nodes dedup against each other


@dataclass
class Cluster:
    """Two nodes on one store, and the flags an admin command on that store needs."""

    index_url: str
    flags: list[str]
    admin_dir: Path
    a: S3Serve
    b: S3Serve | None = None
    env: dict = field(default_factory=dict)

    @property
    def nodes(self) -> tuple[S3Serve, S3Serve]:
        return self.a, self.b

    def admin(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """``cas ARGS`` from the admin host's data directory (the nodes' --index and --blocks)."""
        return subprocess.run([*CAS_COMMAND, *args, "--data", str(self.admin_dir), *self.flags], env=self.env,
                              capture_output=True, text=True, timeout=timeout)

    def gc(self) -> dict:
        out = self.admin("gc", "--delete", "--min-age", "0", "--wait", "60s", "--json")
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout)

    def verify(self) -> dict:
        out = self.admin("verify", "--json")
        report = json.loads(out.stdout) if out.stdout.strip() else {}
        assert out.returncode == 0 and report.get("clean"), (out.stdout[-3000:], out.stderr[-3000:])
        return report

    def index(self):
        """A handle of the test's own on the shared index (close it)."""
        from cas.index.pg_index import PgIndex

        return PgIndex(self.index_url, pool_size=2)

    def stop(self) -> None:
        for node in self.nodes:
            if node is not None:
                node.stop()


def start_cluster(base: Path, pg_server, seaweed, *, toml: str | None = None, index_url: str | None = None,
                  a: dict | None = None, b: dict | None = None, **node_kw) -> Cluster:
    """Nodes A and B on a fresh database (or ``index_url``) and a fresh prefix of the session bucket.
    ``node_kw`` go to both ``S3Serve``s, ``a`` and ``b`` to one of them (their ``extra_args`` come
    after the store's flags, so they may override one)."""
    index_url = index_url or pg_server.new_database()
    flags = ["--index", index_url, "--blocks", f"s3://{seaweed.bucket}/two-{uuid.uuid4().hex[:10]}",
             "--blocks-endpoint", seaweed.endpoint, "--blocks-access-key", seaweed.access_key,
             "--blocks-secret-key", seaweed.secret_key]
    admin_dir = base / "admin"
    admin_dir.mkdir(parents=True)
    if toml is not None:
        (admin_dir / "cas.toml").write_text(toml)

    def node(name: str, kw: dict | None) -> S3Serve:
        kw = dict(kw or {})
        extra = [*flags, *kw.pop("extra_args", ())]
        return S3Serve(base / name, extra_args=extra, toml=toml, threads=16, **node_kw, **kw)

    cluster = Cluster(index_url, flags, admin_dir, node("a", a).start())
    cluster.env = cluster.a.env
    try:
        cluster.b = node("b", b).start()  # after A: A created the store, B joins it
    except BaseException:
        cluster.stop()
        raise
    return cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, pg_server, seaweed):
    """Two nodes shared by the tests that leave both running."""
    c = start_cluster(tmp_path_factory.mktemp("two-nodes"), pg_server, seaweed)
    yield c
    c.stop()
    pg_server.drop(c.index_url)


def unique(prefix: str = "b") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def body_of(rng: random.Random, segments: list[bytes], n: int = 3) -> bytes:
    """An object of ``n`` shared segments and a tail of its own (dedup across nodes, never equal)."""
    return b"".join(rng.choice(segments) for _ in range(n)) + rng.randbytes(rng.randrange(1, 20_000))


def segments_for(seed: int, count: int = 8) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(SEGMENT) for _ in range(count)]


def s3_status(exc: ClientError) -> int:
    return exc.response["ResponseMetadata"]["HTTPStatusCode"]


def absent(client, bucket: str, key: str) -> bool:
    try:
        client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        return s3_status(exc) == 404
    return False


def keys(client, bucket: str, prefix: str = "") -> dict[str, tuple[int, str]]:
    """key -> (size, ETag) of a full listing (ListObjectsV2, every page)."""
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            out[item["Key"]] = (item["Size"], item["ETag"])
    return out


# -- 1. one namespace --------------------------------------------------------------------------


@pytest.mark.parametrize("first, second", [("a", "b"), ("b", "a")], ids=["a-to-b", "b-to-a"])
def test_an_object_written_on_one_node_is_listed_read_copied_renamed_and_deleted_on_the_other(cluster, first,
                                                                                              second):
    writer, other = getattr(cluster, first), getattr(cluster, second)
    w3, o3 = writer.client(), other.client()
    bucket = unique()
    w3.create_bucket(Bucket=bucket)
    data = body_of(random.Random(first), segments_for(1), n=5)
    put = w3.put_object(Bucket=bucket, Key="dir/original.bin", Body=data, ContentType="application/x-test",
                        Metadata={"origin": first})

    # listed and read through the other node at once (no waiting, no retry)
    assert keys(o3, bucket) == {"dir/original.bin": (len(data), put["ETag"])}
    got = o3.get_object(Bucket=bucket, Key="dir/original.bin")
    assert got["Body"].read() == data
    assert (got["ETag"], got["ContentType"], got["Metadata"]) == (put["ETag"], "application/x-test", {"origin": first})
    ranged = o3.get_object(Bucket=bucket, Key="dir/original.bin", Range="bytes=100000-300000")["Body"].read()
    assert ranged == data[100000:300001]

    # copied through the other node; the writer sees the copy
    o3.copy_object(Bucket=bucket, Key="dir/copy.bin", CopySource={"Bucket": bucket, "Key": "dir/original.bin"})
    assert w3.get_object(Bucket=bucket, Key="dir/copy.bin")["Body"].read() == data

    # renamed with WebDAV MOVE through the other node; the writer sees the new name only
    moved = other.dav_client().move(f"/{bucket}/dir/copy.bin", f"/{bucket}/renamed.bin")
    assert moved.status == 201, moved
    assert absent(w3, bucket, "dir/copy.bin")
    assert w3.get_object(Bucket=bucket, Key="renamed.bin")["Body"].read() == data
    assert writer.dav_client().get(f"/{bucket}/renamed.bin").body == data

    # deleted through the other node: gone on the writer, its listing agrees
    o3.delete_object(Bucket=bucket, Key="dir/original.bin")
    o3.delete_object(Bucket=bucket, Key="renamed.bin")
    assert absent(w3, bucket, "dir/original.bin") and absent(w3, bucket, "renamed.bin")
    assert set(keys(w3, bucket)) <= {"dir/"}  # the folder marker that keeps "dir/" (cas.namespace)
    w3.delete_object(Bucket=bucket, Key="dir/")
    o3.delete_bucket(Bucket=bucket)
    assert bucket not in {b["Name"] for b in w3.list_buckets()["Buckets"]}


def test_buckets_made_on_one_node_are_used_on_the_other(cluster):
    a, b = cluster.nodes
    by_dav, by_web = unique("dav"), unique("web")
    assert b.dav_client().mkcol(f"/{by_dav}").status == 201  # a bucket made by WebDAV on B
    a.json("POST", "/api/buckets", {"name": by_web}, token=a.login(), expect=201)  # and by the web API on A
    a.client().put_object(Bucket=by_dav, Key="k", Body=b"into B's bucket through A")
    b.client().put_object(Bucket=by_web, Key="k", Body=b"into A's bucket through B")
    assert b.client().get_object(Bucket=by_dav, Key="k")["Body"].read() == b"into B's bucket through A"
    assert a.client().get_object(Bucket=by_web, Key="k")["Body"].read() == b"into A's bucket through B"
    for name in (by_dav, by_web):
        assert name in {x["Name"] for x in a.client().list_buckets()["Buckets"]}
        assert name in {x["Name"] for x in b.client().list_buckets()["Buckets"]}


def test_a_user_added_on_one_node_logs_in_on_the_other(cluster):
    a, b = cluster.nodes
    name, secret = a.add_user()  # `cas user add` on A's data directory and the shared index
    bucket = unique()
    # S3 on B with the new user's keys: a bucket of their own, an object in it
    b3 = b.client(name, secret)
    b3.create_bucket(Bucket=bucket)
    b3.put_object(Bucket=bucket, Key="mine.txt", Body=b"made on B")
    # WebDAV on B with the same secret as password: sees exactly their bucket and its object
    dav = b.dav_client(name, secret)
    listing = dav.propfind("/", depth="1")
    assert listing.status == 207 and f"/dav/{bucket}/".encode() in listing.body
    assert dav.get(f"/{bucket}/mine.txt").body == b"made on B"
    # the web API on B logs them in; A serves the same user and bucket
    token = b.login(name, secret)
    _, buckets = b.json("GET", "/api/buckets", token=token, expect=200)
    assert bucket in json.dumps(buckets)
    assert a.client(name, secret).get_object(Bucket=bucket, Key="mine.txt")["Body"].read() == b"made on B"
    # a wrong secret is refused on both
    for node in (a, b):
        assert node.dav_client(name, "wrong-" + secret).get(f"/{bucket}/mine.txt").status == 401


def test_a_login_token_from_one_node_is_accepted_by_the_other(cluster):
    """Behind a load balancer without sticky sessions, the browser's next request after its
    login may land on the other node: the nodes must share the key that signs login tokens."""
    a, b = cluster.nodes
    token = a.login()
    status, buckets = b.json("GET", "/api/buckets", token=token)
    assert status == 200, buckets
    bucket = unique()
    b.json("POST", "/api/buckets", {"name": bucket}, token=token, expect=201)
    b.request("PUT", f"/api/buckets/{bucket}/object?key=f.txt", b"linked", token=token)
    # a download link made on B opens on A
    _, link = b.json("POST", f"/api/buckets/{bucket}/link?key=f.txt", token=token, expect=200)
    path = link["url"].split("://", 1)[-1].split("/", 1)[1]
    status, _, body = a.request("GET", "/" + path)
    assert (status, body) == (200, b"linked")


def test_a_generated_root_is_the_stores_on_every_node(tmp_path, pg_server, seaweed):
    """Without CAS_ROOT_USER/PASSWORD the first node generates root; the second must not make a root
    of its own (root on one node would be a stranger on the other)."""
    cluster = start_cluster(tmp_path, pg_server, seaweed, root=None)
    try:
        a, b = cluster.nodes
        name, secret = (tmp_path / "a" / "root-credentials").read_text().split("\n")[:2]
        assert secret in "\n".join(a.lines)  # shown once, by the node that generated it
        assert secret not in "\n".join(b.lines) and not (tmp_path / "b" / "root-credentials").exists()
        for node in (a, b):
            node.user, node.secret = name, secret
        user, user_secret = b.add_user()
        bucket = unique()
        a.client(user, user_secret).create_bucket(Bucket=bucket)
        # root on B sees the user's bucket (root sees all) and writes into it; A's root reads it
        assert bucket in {x["Name"] for x in b.client().list_buckets()["Buckets"]}
        b.client().put_object(Bucket=bucket, Key="by-root", Body=b"root of the store")
        assert a.dav_client().get(f"/{bucket}/by-root").body == b"root of the store"
        assert b.json("GET", "/api/buckets", token=a.login(), expect=200)[1]
    finally:
        cluster.stop()
        pg_server.drop(cluster.index_url)


# -- 2. multipart across nodes -------------------------------------------------------------


def test_a_multipart_upload_takes_parts_on_both_nodes(cluster):
    a, b = cluster.nodes
    a3, b3 = a.client(), b.client()
    bucket = unique()
    a3.create_bucket(Bucket=bucket)
    rng = random.Random(2)
    parts = [rng.randbytes(5 << 20), rng.randbytes(5 << 20), rng.randbytes(1 << 20)]
    upload = a3.create_multipart_upload(Bucket=bucket, Key="big.bin")["UploadId"]
    etags = []
    for number, (client, data) in enumerate(zip([a3, b3, a3], parts, strict=True), start=1):
        etags.append(client.upload_part(Bucket=bucket, Key="big.bin", UploadId=upload, PartNumber=number,
                                        Body=data)["ETag"])
    assert etags == [f'"{hashlib.md5(p).hexdigest()}"' for p in parts]
    for client in (a3, b3):  # both nodes list every part, whichever node took it
        listed = client.list_parts(Bucket=bucket, Key="big.bin", UploadId=upload)["Parts"]
        assert [(p["PartNumber"], p["ETag"], p["Size"]) for p in listed] == [
            (i + 1, etags[i], len(parts[i])) for i in range(3)]
        assert [u["UploadId"] for u in client.list_multipart_uploads(Bucket=bucket)["Uploads"]] == [upload]
    done = b3.complete_multipart_upload(Bucket=bucket, Key="big.bin", UploadId=upload, MultipartUpload={
        "Parts": [{"PartNumber": i + 1, "ETag": e} for i, e in enumerate(etags)]})
    md5s = b"".join(hashlib.md5(p).digest() for p in parts)
    assert done["ETag"] == f'"{hashlib.md5(md5s).hexdigest()}-3"'
    whole = b"".join(parts)
    for client in (a3, b3):
        got = client.get_object(Bucket=bucket, Key="big.bin")
        assert got["ETag"] == done["ETag"] and got["ContentLength"] == len(whole)
        assert hashlib.sha256(got["Body"].read()).digest() == hashlib.sha256(whole).digest()
        assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


# -- 3. WebDAV locks and dead properties ------------------------------------------------------


def test_a_webdav_lock_taken_on_one_node_holds_on_the_other(cluster):
    a, b = cluster.nodes
    bucket = unique()
    da, db = a.dav_client(), b.dav_client()
    assert da.mkcol(f"/{bucket}").status == 201
    assert da.put(f"/{bucket}/doc.txt", b"v1").status == 201
    token = lock(da, f"/{bucket}/doc.txt")
    refused = db.put(f"/{bucket}/doc.txt", b"v2 without the token")
    assert refused.status == 423, refused
    assert db.delete(f"/{bucket}/doc.txt").status == 423
    assert db.move(f"/{bucket}/doc.txt", f"/{bucket}/other.txt").status == 423
    assert da.get(f"/{bucket}/doc.txt").body == b"v1"
    # the lock is listed on B as well (lockdiscovery)
    assert token.encode() in db.propfind(f"/{bucket}/doc.txt", depth="0").body
    # with the token, B writes; B unlocks; then A writes without any token
    assert db.put(f"/{bucket}/doc.txt", b"v2", headers={"If": f"(<{token}>)"}).status == 204
    assert da.get(f"/{bucket}/doc.txt").body == b"v2"
    assert db.request("UNLOCK", f"/{bucket}/doc.txt", headers={"Lock-Token": f"<{token}>"}).status == 204
    assert da.put(f"/{bucket}/doc.txt", b"v3").status == 204
    assert db.get(f"/{bucket}/doc.txt").body == b"v3"


def color(client, path: str) -> str | None:
    resp = client.propfind(path, depth="0", body=PROPGET)
    assert resp.status == 207, resp
    el = ElementTree.fromstring(resp.body).find(".//{urn:cas-test}color")
    return el.text if el is not None else None


def test_dead_properties_set_on_one_node_are_read_on_the_other(cluster):
    a, b = cluster.nodes
    bucket = unique()
    da, db = a.dav_client(), b.dav_client()
    assert da.mkcol(f"/{bucket}").status == 201
    assert da.put(f"/{bucket}/p.txt", b"props").status == 201
    assert da.request("PROPPATCH", f"/{bucket}/p.txt", body=PROPPATCH).status == 207
    assert color(db, f"/{bucket}/p.txt") == "blue"
    # they travel with a MOVE made on B, and a removal on B is seen on A
    assert db.move(f"/{bucket}/p.txt", f"/{bucket}/q.txt").status == 201
    assert color(da, f"/{bucket}/q.txt") == "blue"
    remove = PROPPATCH.replace(b"<D:set>", b"<D:remove>").replace(b"</D:set>", b"</D:remove>").replace(
        b"<Z:color>blue</Z:color>", b"<Z:color/>")
    assert db.request("PROPPATCH", f"/{bucket}/q.txt", body=remove).status == 207
    assert color(da, f"/{bucket}/q.txt") is None


# -- 4. events ------------------------------------------------------------------------------


def gauge(node: S3Serve, token: str, name: str) -> float:
    _, _, body = node.request("GET", "/metrics", token=token)
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"no {name} in /metrics of {node.http_url}")


def test_a_change_on_one_node_wakes_a_long_poll_on_the_other(cluster):
    a, b = cluster.nodes
    token = b.login()
    bucket = unique()
    a.client().create_bucket(Bucket=bucket)
    _, head = b.json("GET", "/api/events?after=latest", token=token, expect=200)
    result = {}

    def poll():
        result["resp"] = b.json("GET", f"/api/events?after={head['next']}&wait=20", token=token)
        result["at"] = time.monotonic()

    poller = threading.Thread(target=poll)
    poller.start()
    deadline = time.monotonic() + 20
    while gauge(b, token, "cas_event_polls_waiting") != 1:  # B's poll waits: the write on A must wake it
        assert time.monotonic() < deadline, "the long-poll never waited"
        time.sleep(0.02)
    wrote = time.monotonic()
    put = a.client().put_object(Bucket=bucket, Key="wake.txt", Body=b"from A")
    poller.join(timeout=25)
    assert not poller.is_alive()
    status, data = result["resp"]
    assert status == 200
    assert [(e["op"], e["bucket"], e["key"], e["etag"]) for e in data["events"]] == [
        ("put", bucket, "wake.txt", put["ETag"].strip('"'))]
    assert result["at"] - wrote < 1.0, f"B saw A's change only after {result['at'] - wrote:.2f}s"


# -- 7. metrics ------------------------------------------------------------------------------


def request_count(node: S3Serve, token: str, protocol: str) -> float:
    _, _, body = node.request("GET", "/metrics", token=token)
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith("cas_requests_total{") and f'protocol="{protocol}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_are_per_node(cluster):
    a, b = cluster.nodes
    ta, tb = a.login(), b.login()
    before = request_count(a, ta, "s3"), request_count(b, tb, "s3")
    client = a.client()
    bucket = unique()
    client.create_bucket(Bucket=bucket)
    for i in range(7):
        client.put_object(Bucket=bucket, Key=f"k{i}", Body=b"x")
    after = request_count(a, ta, "s3"), request_count(b, tb, "s3")
    assert after[0] - before[0] == 8  # A counted exactly the requests it served
    assert after[1] == before[1]  # B served none
    # the store's figures are the shared store's: the same on both nodes
    assert gauge(a, ta, "cas_objects") == gauge(b, tb, "cas_objects") >= 7


# -- 5. GC from an admin host with writers on both nodes ---------------------------------------


@dataclass
class Writer:
    """Uploads, overwrites and deletes under its own prefix through one node, until told to stop;
    ``expected`` is the state its acknowledged operations left."""

    node: S3Serve
    bucket: str
    prefix: str
    seed: int
    expected: dict[str, bytes | None] = field(default_factory=dict)
    errors: list[BaseException] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    pause: float = 0.0  # between operations: each commit seals a small pack, which GC then repacks
    ops: int = 0

    def run(self, segments: list[bytes]) -> None:
        rng = random.Random(self.seed)
        client = self.node.client()
        try:
            while not self.stop.is_set():
                key = f"{self.prefix}{rng.randrange(12)}"
                if self.expected.get(key) is not None and rng.random() < 0.3:
                    client.delete_object(Bucket=self.bucket, Key=key)
                    self.expected[key] = None
                else:
                    data = body_of(rng, segments, n=rng.randrange(1, 5))
                    client.put_object(Bucket=self.bucket, Key=key, Body=data)
                    self.expected[key] = data  # acknowledged: it must read back
                self.ops += 1
                self.stop.wait(self.pause)
        except Exception as exc:  # the test reports it
            self.errors.append(exc)
            # the operation that failed may or may not have taken effect (a node killed between its
            # commit and its answer): that key's state is unknown, so it is not checked
            self.expected.pop(key, None)


def check_reads(nodes, bucket: str, expected: dict[str, bytes | None]) -> None:
    for node in nodes:
        client = node.client()
        for key, data in expected.items():
            if data is None:
                assert absent(client, bucket, key), f"{key} deleted but present on {node.s3_url}"
            else:
                got = client.get_object(Bucket=bucket, Key=key)["Body"].read()
                assert got == data, f"{key} differs on {node.s3_url}"


@pytest.mark.slow  # a minute of writers, a kill and leases, or a namespace: the bounded slow step runs it
def test_gc_from_an_admin_host_is_safe_with_writers_on_both_nodes(cluster):
    a, b = cluster.nodes
    bucket = unique()
    a.client().create_bucket(Bucket=bucket)
    segments = segments_for(5)
    # two writers per node, four disjoint prefixes, one pool of segments (the nodes dedup against each other)
    writers = [Writer(node, bucket, f"{prefix}/", seed, pause=0.4)
               for node, prefix, seed in ((a, "a", 51), (b, "b", 52), (a, "c", 53), (b, "d", 54))]
    threads = [threading.Thread(target=w.run, args=(segments,)) for w in writers]
    for t in threads:
        t.start()
    reports = []
    try:
        for _ in range(3):
            time.sleep(0.5)
            reports.append(cluster.gc())
    finally:
        for w in writers:
            w.stop.set()
        for t in threads:
            t.join(timeout=60)
    for w in writers:
        assert not w.errors, w.errors
        assert w.ops >= 5, f"{w.prefix} wrote only {w.ops} times during GC"
    # the overwritten and deleted objects' blocks and packs went while the writers wrote
    assert sum(r["deleted"] for r in reports) > 0 and sum(r["packs_deleted"] for r in reports) > 0, reports
    expected = {k: v for w in writers for k, v in w.expected.items()}
    check_reads(cluster.nodes, bucket, expected)
    # one more GC with nothing running in between, then the store is exactly consistent
    cluster.gc()
    check_reads(cluster.nodes, bucket, expected)
    cluster.verify()


# -- 6. node failure -------------------------------------------------------------------------

#: node A of the failure test runs in a pid namespace of its own: to GC on this host it is a process
#: it cannot see, as on another host, so only its leases can tell that it died
OTHER_HOST = ("unshare", "--pid", "--fork", "--kill-child")  # SIGKILL to unshare kills the node
FAILURE_LEASE = 8.0  # long enough that a GC right after the kill ends before A's leases do
FAILURE_TOML = f'[gc]\npin_lease = "{FAILURE_LEASE:g}s"\n'


def can_unshare_pid() -> bool:
    done = subprocess.run([*OTHER_HOST, "true"], capture_output=True, timeout=30)
    return done.returncode == 0


def own_owner(node: S3Serve) -> tuple[int, int]:
    """(pid, pid namespace) in the owner identity of a node started in this pid namespace
    (``blocklife``: an owner is pid, pid namespace inode, boot id)."""
    return node.pid, os.stat("/proc/self/ns/pid").st_ino


def writers_not_of(cluster: Cluster, node: S3Serve) -> list[tuple[bytes, float, bytes]]:
    """Writer rows (id, lease expiry, owner) that ``node`` does not own."""
    index = cluster.index()
    try:
        with index.read() as t:
            return [(w, expiry, owner) for w, expiry, owner in t.iter_writer_owners()
                    if struct.unpack_from(">IQ", owner) != own_owner(node)]
    finally:
        index.close()


def pins_not_of(cluster: Cluster, node: S3Serve) -> int:
    """How many pins writers that ``node`` does not own hold."""
    theirs = {w for w, _, _ in writers_not_of(cluster, node)}
    index = cluster.index()
    try:
        with index.read() as t:
            return sum(1 for _, writer in t.iter_pins() if writer in theirs)
    finally:
        index.close()


def stall_an_upload(node: S3Serve, bucket: str, sent: int) -> http.client.HTTPConnection:
    """A WebDAV PUT to ``node`` that sends ``sent`` bytes of a body twice as long and then stops:
    past one pin batch (``writer.BATCH_BYTES``), the node holds a writer with pinned blocks in its
    open pack, as a client cut off mid-upload leaves it."""
    conn = http.client.HTTPConnection(urlsplit(node.http_url).hostname, node.http_port, timeout=60)
    conn.putrequest("PUT", f"/dav/{bucket}/stalled.bin")
    for k, v in {**node.dav_client().auth_header(), "Content-Length": str(sent * 2)}.items():
        conn.putheader(k, v)
    conn.endheaders()
    conn.send(random.Random(9).randbytes(sent))
    return conn


@pytest.mark.slow  # a minute of writers, a kill and leases, or a namespace: the bounded slow step runs it
def test_a_killed_node_loses_nothing_it_acknowledged_and_gc_reclaims_its_leftovers(tmp_path, pg_server,
                                                                                    seaweed):
    from cas.blocklife import owner_is_dead
    from cas.writer import BATCH_BYTES
    from tests.conftest import need

    need(can_unshare_pid(), "unshare --pid (util-linux, as root): node A's process on another host")

    cluster = start_cluster(tmp_path, pg_server, seaweed, toml=FAILURE_TOML, a={"prefix": OTHER_HOST})
    try:
        a, b = cluster.nodes
        bucket = unique()
        a.client().create_bucket(Bucket=bucket)
        segments = segments_for(6)
        on_a, on_b = Writer(a, bucket, "a/", 61, pause=0.1), Writer(b, bucket, "b/", 62, pause=0.1)
        threads = [threading.Thread(target=w.run, args=(segments,)) for w in (on_a, on_b)]
        for t in threads:
            t.start()
        stalled = stall_an_upload(a, bucket, BATCH_BYTES + (1 << 20))
        deadline = time.monotonic() + 60
        while pins_not_of(cluster, b) < 100 or on_a.ops < 5:  # A pins blocks for the stalled PUT
            assert time.monotonic() < deadline and not on_a.errors, on_a.errors
            time.sleep(0.05)

        os.kill(a.pid, signal.SIGKILL)  # node A dies mid-upload
        a.proc.wait(timeout=10)
        stalled.close()
        threads[0].join(timeout=30)
        assert on_a.errors, "uploads to a dead node cannot have succeeded"
        acknowledged_by_a = dict(on_a.expected)  # what A said 200 to before it died
        b_ops = on_b.ops
        left = writers_not_of(cluster, b)
        assert left and not any(owner_is_dead(owner) for _, _, owner in left)  # only the leases can tell

        # GC before A's leases end leaves them alone: from here, A could be a live node that stalled
        early = cluster.gc()
        if time.time() < min(expiry for _, expiry, _ in left):
            assert early["dead_writers"] == 0 and writers_not_of(cluster, b) == left, early

        on_b.stop.set()
        threads[1].join(timeout=30)
        assert not on_b.errors, on_b.errors
        assert on_b.ops > b_ops, "B stopped serving when A died"
        # every upload A acknowledged reads back from B, byte-identical; B's own writes too
        check_reads([b], bucket, acknowledged_by_a)
        check_reads([b], bucket, on_b.expected)

        # once A's leases have lapsed, GC from the admin host reclaims what A left
        time.sleep(max(0.0, max(expiry for _, expiry, _ in left) + 0.5 - time.time()))
        reclaimed = cluster.gc()
        assert reclaimed["dead_writers"] >= 1, reclaimed
        assert reclaimed["dead_pins"] + reclaimed["abandoned_packs"] >= 1, reclaimed
        assert writers_not_of(cluster, b) == []
        again = cluster.gc()
        assert again["dead_writers"] == again["dead_pins"] == again["abandoned_packs"] == 0, again
        index = cluster.index()
        try:
            with index.read() as t:
                assert list(t.iter_pins()) == []  # B is idle: nobody's pins are left
        finally:
            index.close()
        report = cluster.verify()
        assert report["packs_abandoned"] == report["orphans"] == report["blocks_unreferenced"] == 0, report
        check_reads([b], bucket, {**acknowledged_by_a, **on_b.expected})
        # B keeps taking uploads after the GC
        b.client().put_object(Bucket=bucket, Key="after-gc", Body=b"still here")
        assert b.client().get_object(Bucket=bucket, Key="after-gc")["Body"].read() == b"still here"
    finally:
        cluster.stop()
        pg_server.drop(cluster.index_url)


# -- a node on another network -------------------------------------------------------------


@pytest.mark.slow  # a minute of writers, a kill and leases, or a namespace: the bounded slow step runs it
def test_a_node_in_another_network_namespace_serves_the_same_store(tmp_path, pg_server, seaweed, netns):
    """Node B in a network namespace of its own reaches PostgreSQL and SeaweedFS only across a veth
    link (through relays on the link's host end: the servers listen on loopback), and clients reach
    B across it too: a real network between the nodes, not one loopback."""
    from tests.fixtures.netns import LinkRelay

    pg_link = LinkRelay(netns.host_ip, pg_server.port)
    s3_link = LinkRelay(netns.host_ip, urlsplit(seaweed.endpoint).port)
    index_url = pg_server.new_database()
    over_link = ["--index", index_url.replace(f"@127.0.0.1:{pg_server.port}/", f"@{netns.host_ip}:{pg_link.port}/"),
                 "--blocks-endpoint", f"http://{netns.host_ip}:{s3_link.port}",
                 "--s3", f"{netns.ns_ip}:0", "--http", f"{netns.ns_ip}:0"]
    cluster = None
    try:
        cluster = start_cluster(tmp_path, pg_server, seaweed, index_url=index_url,
                                b={"prefix": netns.exec_prefix, "extra_args": over_link})
        a, b = cluster.nodes
        assert urlsplit(b.s3_url).hostname == netns.ns_ip
        a3, b3 = a.client(), b.client()
        bucket = unique()
        a3.create_bucket(Bucket=bucket)
        rng = random.Random(7)
        from_a, from_b = rng.randbytes(3 << 20), rng.randbytes(2 << 20)
        a3.put_object(Bucket=bucket, Key="from-a", Body=from_a)
        b3.put_object(Bucket=bucket, Key="from-b", Body=from_b)
        assert set(keys(b3, bucket)) == set(keys(a3, bucket)) == {"from-a", "from-b"}
        assert b3.get_object(Bucket=bucket, Key="from-a")["Body"].read() == from_a
        assert a3.get_object(Bucket=bucket, Key="from-b")["Body"].read() == from_b
        assert b.dav_client().move(f"/{bucket}/from-a", f"/{bucket}/moved-on-b").status == 201
        assert a3.get_object(Bucket=bucket, Key="moved-on-b")["Body"].read() == from_a
        b3.delete_object(Bucket=bucket, Key="from-b")
        assert absent(a3, bucket, "from-b")
        # B's index and block traffic crossed the link (it has no other way to them)
        assert pg_link.bytes > 0 and s3_link.bytes > len(from_b)
        cluster.gc()
        assert a3.get_object(Bucket=bucket, Key="moved-on-b")["Body"].read() == from_a
        cluster.verify()
    finally:
        if cluster is not None:
            cluster.stop()
        pg_link.close()
        s3_link.close()
        pg_server.drop(index_url)
