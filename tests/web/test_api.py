"""The JSON API under /api/ against a real ``cas serve``: login, buckets, folders, objects,
multipart uploads (resume), move, delete, tenancy, stats, users, static files."""

from __future__ import annotations

import hashlib
import json
import os

import pytest

from tests.fixtures.web import ROOT_PASSWORD, ROOT_USER

pytestmark = pytest.mark.integration

ALICE, ALICE_SECRET = "alice", "alice-secret-123"
BOB, BOB_SECRET = "bobby", "bobby-secret-456"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server whose store already has two ordinary users besides root."""
    from tests.fixtures.web import start_web, with_users

    srv = start_web(with_users(tmp_path_factory.mktemp("api") / "data", {ALICE: ALICE_SECRET, BOB: BOB_SECRET}))
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def root_token(server):
    return server.login()


@pytest.fixture(scope="module")
def alice(server):
    return server.login(ALICE, ALICE_SECRET)


@pytest.fixture(scope="module")
def bob(server):
    return server.login(BOB, BOB_SECRET)


def test_login_issues_a_token_and_refuses_a_wrong_password(server):
    status, data = server.json("POST", "/api/login", {"user": ROOT_USER, "password": ROOT_PASSWORD})
    assert status == 200 and data["root"] is True and data["user"] == ROOT_USER
    assert data["token"].count(".") == 2 and data["expires"] > 0
    status, data = server.json("POST", "/api/login", {"user": ROOT_USER, "password": "wrong-password"})
    assert status == 401 and "wrong" in data["message"]
    status, data = server.json("POST", "/api/login", {"user": ROOT_USER})
    assert status == 400


def test_every_api_request_needs_credentials(server):
    for method, path in [("GET", "/api/buckets"), ("GET", "/api/stats"), ("GET", "/api/events"),
                         ("GET", "/metrics"), ("GET", "/api/buckets/x/object?key=y")]:
        status, headers, body = server.request(method, path)
        assert status == 401, path
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert json.loads(body)["error"] == "Unauthorized"


def test_basic_auth_is_accepted_for_scripts(server):
    status, data = server.json("GET", "/api/whoami", basic=(ALICE, ALICE_SECRET))
    assert status == 200 and data == {"user": ALICE, "root": False, "anonymous": False}
    status, _ = server.json("GET", "/api/whoami", basic=(ALICE, "not-her-secret"))
    assert status == 401


def test_static_ui_is_served_without_login(server):
    status, headers, body = server.request("GET", "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b"app.js" in body and b"http" not in body.replace(b"http-equiv", b"")  # nothing from elsewhere
    for name, ctype in [("app.js", "javascript"), ("style.css", "text/css"), ("favicon.svg", "image/svg")]:
        status, headers, body = server.request("GET", "/" + name)
        assert status == 200 and ctype in headers["Content-Type"], name
        assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert server.request("GET", "/../pyproject.toml")[0] == 404
    assert server.request("GET", "/nope.js")[0] == 404


def test_bucket_folder_object_round_trip(server, alice):
    server.json("POST", "/api/buckets", {"name": "alice-docs"}, token=alice, expect=201)
    assert server.json("POST", "/api/buckets", {"name": "alice-docs"}, token=alice)[0] == 409
    server.json("POST", "/api/buckets/alice-docs/folder", {"path": "reports"}, token=alice, expect=201)
    body = os.urandom(100_000)
    status, _, raw = server.request("PUT", "/api/buckets/alice-docs/object?key=reports/q1.bin", body, token=alice,
                                    headers={"X-Content-Type": "application/x-test"})
    assert status == 201
    info = json.loads(raw)
    assert info["size"] == len(body) and info["etag"] == hashlib.md5(body).hexdigest()
    assert info["content_type"] == "application/x-test"

    _, top = server.json("GET", "/api/buckets/alice-docs/objects", token=alice, expect=200)
    assert top["prefixes"] == ["reports/"] and top["entries"] == []
    _, inner = server.json("GET", "/api/buckets/alice-docs/objects?prefix=reports/", token=alice, expect=200)
    assert [e["key"] for e in inner["entries"]] == ["reports/q1.bin"]  # the folder marker is hidden

    status, headers, got = server.request("GET", "/api/buckets/alice-docs/object?key=reports/q1.bin", token=alice)
    assert status == 200 and got == body
    assert headers["ETag"] == f'"{info["etag"]}"' and "q1.bin" in headers["Content-Disposition"]
    status, headers, got = server.request("GET", "/api/buckets/alice-docs/object?key=reports/q1.bin", token=alice,
                                          headers={"Range": "bytes=10-19"})
    assert status == 206 and got == body[10:20] and headers["Content-Range"] == f"bytes 10-19/{len(body)}"
    status, headers, got = server.request("HEAD", "/api/buckets/alice-docs/object?key=reports/q1.bin", token=alice)
    assert status == 200 and headers["Content-Length"] == str(len(body)) and got == b""

    # rename a file, then move the folder
    _, moved = server.json("POST", "/api/buckets/alice-docs/move", {"from": "reports/q1.bin", "to": "reports/2024-q1.bin"},
                           token=alice, expect=200)
    assert moved["key"] == "reports/2024-q1.bin" and moved["etag"] == info["etag"]
    _, res = server.json("POST", "/api/buckets/alice-docs/move", {"from": "reports/", "to": "archive"},
                         token=alice, expect=200)
    assert res["moved"] == 2  # the marker and the file
    _, inner = server.json("GET", "/api/buckets/alice-docs/objects?prefix=archive/", token=alice, expect=200)
    assert [e["key"] for e in inner["entries"]] == ["archive/2024-q1.bin"]
    assert server.request("GET", "/api/buckets/alice-docs/object?key=archive/2024-q1.bin", token=alice)[2] == body

    # a non-empty bucket cannot go; a folder delete is recursive
    assert server.json("DELETE", "/api/buckets/alice-docs", token=alice)[0] == 409
    _, res = server.json("DELETE", "/api/buckets/alice-docs/object?key=archive/&recursive=1", token=alice, expect=200)
    assert res["deleted"] == 2
    assert server.json("DELETE", "/api/buckets/alice-docs/object?key=nothing", token=alice)[0] == 404
    assert server.request("DELETE", "/api/buckets/alice-docs", token=alice)[0] == 204


def test_unicode_and_odd_keys_round_trip(server, alice):
    import urllib.parse

    server.json("POST", "/api/buckets", {"name": "alice-unicode"}, token=alice, expect=201)
    for key in ["ordner/naïve 文件.txt", "a+b&c=d?.txt", "100% sure#.txt"]:
        q = urllib.parse.quote(key, safe="")
        assert server.request("PUT", f"/api/buckets/alice-unicode/object?key={q}", key.encode(), token=alice)[0] == 201
        status, headers, body = server.request("GET", f"/api/buckets/alice-unicode/object?key={q}", token=alice)
        assert status == 200 and body == key.encode()
        assert urllib.parse.quote(key.rsplit("/", 1)[-1], safe="") in headers["Content-Disposition"]
    _, listing = server.json("GET", "/api/buckets/alice-unicode/objects?prefix=" + urllib.parse.quote("ordner/"),
                             token=alice, expect=200)
    assert [e["name"] for e in listing["entries"]] == ["naïve 文件.txt"]


def test_download_links_are_scoped_and_not_bearer_tokens(server, alice):
    server.json("POST", "/api/buckets", {"name": "alice-links"}, token=alice, expect=201)
    server.request("PUT", "/api/buckets/alice-links/object?key=a.txt", b"AAA", token=alice)
    server.request("PUT", "/api/buckets/alice-links/object?key=b.txt", b"BBB", token=alice)
    _, data = server.json("POST", "/api/buckets/alice-links/link?key=a.txt", token=alice, expect=200)
    url = data["url"]
    status, headers, body = server.request("GET", url)  # no Authorization header
    assert status == 200 and body == b"AAA" and headers["Content-Disposition"].startswith("attachment")
    link = url.split("link=")[1]
    status, _, body = server.request("GET", "/api/buckets/alice-links/object?key=b.txt&link=" + link)
    assert status == 401 and b"another object" in body
    status, _, body = server.request("GET", "/api/buckets", token=link.replace("%2E", "."))
    assert status == 401 and b"audience" in body


def test_multipart_upload_resumes_and_completes(server, alice):
    server.json("POST", "/api/buckets", {"name": "alice-big"}, token=alice, expect=201)
    data = os.urandom(13 << 20)
    _, up = server.json("POST", "/api/buckets/alice-big/uploads", {"key": "big.bin", "size": len(data)},
                        token=alice, expect=201)
    uid, part = up["upload_id"], up["part_size"]
    assert part >= 5 << 20
    chunks = [data[i:i + part] for i in range(0, len(data), part)]
    status, _, raw = server.request("PUT", f"/api/uploads/{uid}/parts/1", chunks[0], token=alice)
    assert status == 200
    # "network error" here; the client asks what the server already has, and sends the rest
    _, state = server.json("GET", f"/api/uploads/{uid}", token=alice, expect=200)
    assert [(p["number"], p["size"]) for p in state["parts"]] == [(1, len(chunks[0]))]
    etags = {1: state["parts"][0]["etag"]}
    for n, chunk in enumerate(chunks[1:], start=2):
        status, _, raw = server.request("PUT", f"/api/uploads/{uid}/parts/{n}", chunk, token=alice)
        assert status == 200
        etags[n] = json.loads(raw)["etag"]
    # other users cannot touch it
    assert server.json("GET", f"/api/uploads/{uid}", token=server.login(BOB, BOB_SECRET))[0] == 404
    _, obj = server.json("POST", f"/api/uploads/{uid}/complete",
                         {"parts": [{"number": n, "etag": e} for n, e in sorted(etags.items())]},
                         token=alice, expect=200)
    assert obj["size"] == len(data) and obj["etag"].endswith(f"-{len(chunks)}")
    status, _, got = server.request("GET", "/api/buckets/alice-big/object?key=big.bin", token=alice)
    assert status == 200 and hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    assert server.json("GET", f"/api/uploads/{uid}", token=alice)[0] == 404  # completed: gone

    _, up = server.json("POST", "/api/buckets/alice-big/uploads", {"key": "x"}, token=alice, expect=201)
    assert server.request("DELETE", f"/api/uploads/{up['upload_id']}", token=alice)[0] == 204


def test_users_see_only_their_own_buckets(server, root_token, alice, bob):
    server.json("POST", "/api/buckets", {"name": "bob-private"}, token=bob, expect=201)
    server.request("PUT", "/api/buckets/bob-private/object?key=secret.txt", b"top secret", token=bob)
    _, mine = server.json("GET", "/api/buckets", token=alice, expect=200)
    assert "bob-private" not in [b["name"] for b in mine["buckets"]]
    _, everything = server.json("GET", "/api/buckets", token=root_token, expect=200)
    assert "bob-private" in [b["name"] for b in everything["buckets"]]
    # someone else's bucket looks missing, for every operation
    assert server.json("GET", "/api/buckets/bob-private/objects", token=alice)[0] == 404
    assert server.request("GET", "/api/buckets/bob-private/object?key=secret.txt", token=alice)[0] == 404
    assert server.request("PUT", "/api/buckets/bob-private/object?key=x", b"x", token=alice)[0] == 404
    assert server.request("DELETE", "/api/buckets/bob-private/object?key=secret.txt", token=alice)[0] == 404
    assert server.json("POST", "/api/buckets/bob-private/move", {"from": "secret.txt", "to": "y"}, token=alice)[0] == 404
    assert server.json("POST", "/api/buckets/bob-private/link?key=secret.txt", token=alice)[0] == 404
    assert server.request("DELETE", "/api/buckets/bob-private", token=alice)[0] == 404
    assert server.request("GET", "/api/buckets/bob-private/object?key=secret.txt", token=root_token)[2] == b"top secret"


def test_stats_users_and_metrics_are_scoped(server, root_token, alice):
    _, s = server.json("GET", "/api/stats", token=root_token, expect=200)
    assert s["scope"] == "store"
    assert {"objects", "logical_bytes", "unique_blocks", "stored_bytes", "dedup_ratio", "compression_ratio"} <= set(s)
    _, mine = server.json("GET", "/api/stats", token=alice, expect=200)
    assert mine["scope"] == "user" and "stored_bytes" not in mine and "dedup_ratio" not in mine
    _, users = server.json("GET", "/api/users", token=root_token, expect=200)
    names = {u["name"]: u for u in users["users"]}
    assert names[ROOT_USER]["root"] and {ALICE, BOB} <= set(names)
    assert server.json("GET", "/api/users", token=alice)[0] == 403
    assert server.request("GET", "/metrics", token=alice)[0] == 403
    assert server.request("GET", "/metrics", token=root_token)[0] == 200


def test_errors_are_json(server, alice):
    status, data = server.json("GET", "/api/nothing-here", token=alice)
    assert status == 404 and data["error"] == "NotFound"
    status, headers, _ = server.request("PATCH", "/api/buckets", token=alice)
    assert status == 405 and "GET" in headers["Allow"]
    status, data = server.json("POST", "/api/buckets", {"name": "Not_A_Bucket!"}, token=alice)
    assert status == 400 and data["error"] == "InvalidName"
    status, _, body = server.request("POST", "/api/buckets", b"{not json", token=alice,
                                     headers={"Content-Type": "application/json"})
    assert status == 400 and b"MalformedJSON" in body
    assert server.json("GET", "/api/events?wait=abc", token=alice)[0] == 400


def test_anonymous_access_is_read_only(start_web_server):
    srv = start_web_server(extra_args=["--anonymous"])
    token = srv.login()
    srv.json("POST", "/api/buckets", {"name": "public"}, token=token, expect=201)
    srv.request("PUT", "/api/buckets/public/object?key=hello.txt", b"hi", token=token)
    _, data = srv.json("GET", "/api/whoami", expect=200)
    assert data["anonymous"] is True
    assert srv.request("GET", "/api/buckets/public/object?key=hello.txt")[2] == b"hi"
    assert srv.json("POST", "/api/buckets", {"name": "mine"})[0] == 403
    assert srv.request("PUT", "/api/buckets/public/object?key=x", b"x")[0] == 403
    assert srv.json("GET", "/api/users")[0] == 403
    # a wrong token is still refused: anonymous is for requests without credentials
    assert srv.json("GET", "/api/buckets", token="not-a-token")[0] == 401
