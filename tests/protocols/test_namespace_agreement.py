"""WebDAV and the web API agree on what a folder is (``cas.namespace``) and on who sees what
(``cas.access``), against a real ``cas serve``.

The same scenario runs through each front end (``front`` is "dav" or "web"); the keys the store
ends up holding are read back through the web API without a delimiter, which hides nothing.
"""

from __future__ import annotations

import itertools
import json
import urllib.parse

import boto3
import pytest
from botocore.client import Config
from botocore.exceptions import ClientError

from cas.config import load_settings
from cas.store import Store
from tests.fixtures.web import ROOT_PASSWORD, ROOT_USER, with_users

pytestmark = pytest.mark.integration

ROOT = (ROOT_USER, ROOT_PASSWORD)
FRONTS = ["dav", "web"]


_made = itertools.count()


@pytest.fixture
def bucket(web_server):
    name = f"ns-agree-{next(_made)}"
    web_server.json("POST", "/api/buckets", {"name": name}, basic=ROOT, expect=201)
    return name


def put(server, bucket: str, key: str, data: bytes) -> None:
    q = urllib.parse.quote(key, safe="")
    status, _, raw = server.request("PUT", f"/api/buckets/{bucket}/object?key={q}", data, basic=ROOT)
    assert status == 201, raw


def get(server, bucket: str, key: str) -> bytes:
    q = urllib.parse.quote(key, safe="")
    status, _, raw = server.request("GET", f"/api/buckets/{bucket}/object?key={q}", basic=ROOT)
    assert status == 200, raw
    return raw


def keys(server, bucket: str) -> list[str]:
    """Every key the store holds in ``bucket`` (markers included)."""
    _, data = server.json("GET", f"/api/buckets/{bucket}/objects?delimiter=", basic=ROOT, expect=200)
    return [e["key"] for e in data["entries"]]


def dav_path(bucket: str, path: str) -> str:
    return "/dav/" + urllib.parse.quote(f"{bucket}/{path}")


def move(server, front: str, bucket: str, src: str, dst: str, *, overwrite: bool | None = None) -> int:
    """Move ``src`` to ``dst`` (a trailing "/" names a folder) through ``front``; the status."""
    if front == "dav":
        headers = {"Destination": server.base + dav_path(bucket, dst.rstrip("/"))}
        if overwrite is not None:
            headers["Overwrite"] = "T" if overwrite else "F"
        status, _, _ = server.request("MOVE", dav_path(bucket, src.rstrip("/")), basic=ROOT, headers=headers)
        return status
    body = {"from": src, "to": dst}
    if overwrite is not None:
        body["overwrite"] = overwrite
    status, _ = server.json("POST", f"/api/buckets/{bucket}/move", body, basic=ROOT)
    return status


def delete(server, front: str, bucket: str, key: str) -> int:
    if front == "dav":
        return server.request("DELETE", dav_path(bucket, key.rstrip("/")), basic=ROOT)[0]
    q = urllib.parse.quote(key, safe="")
    recursive = "&recursive=1" if key.endswith("/") else ""
    return server.request("DELETE", f"/api/buckets/{bucket}/object?key={q}{recursive}", basic=ROOT)[0]


def is_dav_folder(server, bucket: str, path: str) -> bool:
    status, _, _ = server.request("PROPFIND", dav_path(bucket, path), basic=ROOT, headers={"Depth": "0"})
    return status == 207


@pytest.mark.parametrize("front", FRONTS)
def test_moving_a_folders_last_file_out_keeps_the_folder(web_server, bucket, front):
    put(web_server, bucket, "docs/only.txt", b"the only file")
    assert move(web_server, front, bucket, "docs/only.txt", "moved.txt") in (200, 201)
    assert keys(web_server, bucket) == ["docs/", "moved.txt"]
    _, top = web_server.json("GET", f"/api/buckets/{bucket}/objects", basic=ROOT, expect=200)
    assert top["prefixes"] == ["docs/"] and [e["key"] for e in top["entries"]] == ["moved.txt"]
    assert is_dav_folder(web_server, bucket, "docs")
    assert get(web_server, bucket, "moved.txt") == b"the only file"


@pytest.mark.parametrize("front", FRONTS)
def test_deleting_a_folders_last_file_keeps_the_folder(web_server, bucket, front):
    put(web_server, bucket, "a/b/only.txt", b"x")
    assert delete(web_server, front, bucket, "a/b/only.txt") == 204
    assert keys(web_server, bucket) == ["a/b/"]
    assert is_dav_folder(web_server, bucket, "a/b")


@pytest.mark.parametrize("front", FRONTS)
def test_a_move_onto_an_existing_name_overwrites_only_when_asked(web_server, bucket, front):
    put(web_server, bucket, "new.txt", b"new")
    put(web_server, bucket, "old.txt", b"old")
    assert move(web_server, front, bucket, "new.txt", "old.txt", overwrite=False) == 412
    assert keys(web_server, bucket) == ["new.txt", "old.txt"] and get(web_server, bucket, "old.txt") == b"old"
    if front == "web":  # the web API's default: no overwrite
        assert move(web_server, front, bucket, "new.txt", "old.txt") == 412
    assert move(web_server, front, bucket, "new.txt", "old.txt", overwrite=True) in (200, 204)
    assert keys(web_server, bucket) == ["old.txt"] and get(web_server, bucket, "old.txt") == b"new"


@pytest.mark.parametrize("front", FRONTS)
def test_a_folder_moved_onto_a_folder_replaces_it_whole_when_asked(web_server, bucket, front):
    for key, data in [("src/1.txt", b"s1"), ("src/2.txt", b"s2"), ("dst/1.txt", b"d1"), ("dst/old.txt", b"d")]:
        put(web_server, bucket, key, data)
    before = keys(web_server, bucket)
    assert move(web_server, front, bucket, "src/", "dst/", overwrite=False) == 412
    assert keys(web_server, bucket) == before
    assert move(web_server, front, bucket, "src/", "dst/", overwrite=True) in (200, 204)
    # never merged: dst/old.txt went with the old folder; the moved folder is marked
    assert keys(web_server, bucket) == ["dst/", "dst/1.txt", "dst/2.txt"]
    assert get(web_server, bucket, "dst/1.txt") == b"s1"


@pytest.mark.parametrize("front", FRONTS)
def test_a_folder_cannot_move_into_itself(web_server, bucket, front):
    put(web_server, bucket, "t/f.txt", b"x")
    status = move(web_server, front, bucket, "t/", "t/inner/")
    assert status == (403 if front == "dav" else 400)
    assert keys(web_server, bucket) == ["t/f.txt"]


def test_web_api_refuses_a_non_boolean_overwrite(web_server, bucket):
    put(web_server, bucket, "a.txt", b"a")
    status, data = web_server.json("POST", f"/api/buckets/{bucket}/move",
                                   {"from": "a.txt", "to": "b.txt", "overwrite": "yes"}, basic=ROOT)
    assert status == 400 and data["error"] == "InvalidParameter"


# -- who sees which bucket: one rule, each front's own wire answer ------------------------------

ALICE, ALICE_SECRET = "alicens", "alice-secret-ns-123"
BOB, BOB_SECRET = "bobns", "bob-secret-ns-456"


@pytest.fixture
def tenants(tmp_path, start_web_server):
    data = with_users(tmp_path / "data", {ALICE: ALICE_SECRET, BOB: BOB_SECRET})
    settings = load_settings(data, {"auth": {"root_user": ROOT_USER, "root_password": ROOT_PASSWORD}}, env={})
    with Store.open_store(settings) as store:
        store.create_bucket("alice-ns", owner=ALICE)
        store.put("alice-ns", "dir/secret.txt", b"alice's", user=ALICE)
    return start_web_server(data)


def s3_client(server, user: str, secret: str):
    return boto3.client("s3", endpoint_url=server.s3_url, aws_access_key_id=user, aws_secret_access_key=secret,
                        region_name="us-east-1", config=Config(s3={"addressing_style": "path"}))


def test_someone_elses_bucket_is_403_on_s3_and_404_on_dav_and_web(tenants):
    server = tenants
    bob = (BOB, BOB_SECRET)
    with pytest.raises(ClientError) as exc:
        s3_client(server, *bob).get_object(Bucket="alice-ns", Key="dir/secret.txt")
    assert exc.value.response["Error"]["Code"] == "AccessDenied"
    assert exc.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert server.request("GET", "/dav/alice-ns/dir/secret.txt", basic=bob)[0] == 404
    assert server.request("PROPFIND", "/dav/alice-ns", basic=bob, headers={"Depth": "0"})[0] == 404
    status, _, raw = server.request("GET", "/api/buckets/alice-ns/objects", basic=bob)
    assert status == 404 and json.loads(raw)["error"] == "BucketNotFound"
    # a name that exists nowhere: the same 404 on WebDAV and the web API, NoSuchBucket on S3
    with pytest.raises(ClientError) as exc:
        s3_client(server, *bob).get_object(Bucket="nobody-ns", Key="x")
    assert exc.value.response["Error"]["Code"] == "NoSuchBucket"
    assert server.request("GET", "/dav/nobody-ns/x", basic=bob)[0] == 404
    # the owner and root reach it through every front
    for who in ((ALICE, ALICE_SECRET), ROOT):
        assert s3_client(server, *who).get_object(Bucket="alice-ns", Key="dir/secret.txt")["Body"].read() == b"alice's"
        assert server.request("GET", "/dav/alice-ns/dir/secret.txt", basic=who)[2] == b"alice's"
        assert server.request("GET", "/api/buckets/alice-ns/object?key=dir/secret.txt", basic=who)[2] == b"alice's"
