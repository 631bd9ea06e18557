"""WebDAV over a real ``cas serve``: namespace, statuses, auth and tenancy, streaming PUT, locks."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import time
from urllib.parse import unquote
from xml.etree import ElementTree

import pytest

from tests.fixtures.webdav import ROOT_SECRET, ROOT_USER, DavClient, unique_bucket

pytestmark = pytest.mark.integration

D = "{DAV:}"
LOCK_BODY = (b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
             b"<D:locktype><D:write/></D:locktype><D:owner>tests</D:owner></D:lockinfo>")


def hrefs(resp) -> list[str]:
    root = ElementTree.fromstring(resp.body)
    return [el.text for el in root.iter(D + "href")]


def names(resp, base: str) -> set[str]:
    """Member names of a Depth-1 PROPFIND of ``base`` (the collection itself excluded)."""
    out = set()
    for href in hrefs(resp):
        rel = unquote(href)[len(base):].strip("/")
        if rel:
            out.add(rel)
    return out


def lock(client: DavClient, path: str, depth: str = "0") -> str:
    resp = client.request("LOCK", path, body=LOCK_BODY,
                          headers={"Content-Type": "application/xml", "Depth": depth, "Timeout": "Second-600"})
    assert resp.status in (200, 201), resp
    return resp.header("Lock-Token").strip("<>")


# -- auth and tenancy -----------------------------------------------------------------------


def test_anonymous_gets_401_with_basic_challenge(dav_server):
    anon = dav_server.client(None, None)
    for method in ("PROPFIND", "GET", "PUT", "OPTIONS"):
        resp = anon.request(method, "/", body=b"x" if method == "PUT" else None)
        assert resp.status == 401, method
        assert resp.header("WWW-Authenticate").startswith('Basic realm="cas"')


@pytest.mark.parametrize("header", [
    "Basic !!!not-base64", "Basic " + base64.b64encode(b"no-colon").decode(), "Basic", "Digest foo=bar",
    "Bearer abc", "Basic " + base64.b64encode(b"\xff\xfe:\xff").decode(),
])
def test_malformed_or_unknown_credentials_are_401_not_500(dav_server, header):
    resp = dav_server.client(None, None).request("PROPFIND", "/", headers={"Authorization": header, "Depth": "0"})
    assert resp.status == 401


def test_wrong_password_is_401(dav_server):
    assert dav_server.client(ROOT_USER, "wrong-password").request("PROPFIND", "/").status == 401


def test_users_see_only_their_buckets(dav_server, dav_user, dav_root):
    alice, bob = dav_user(), dav_user()
    a_bucket, b_bucket = unique_bucket("alice"), unique_bucket("bob")
    assert alice.mkcol("/" + a_bucket).status == 201
    assert bob.mkcol("/" + b_bucket).status == 201
    assert alice.put(f"/{a_bucket}/secret.txt", b"alice's").status == 201

    listing = names(alice.propfind("/"), "/dav/")
    assert a_bucket in listing and b_bucket not in listing
    assert b_bucket in names(dav_root.propfind("/"), "/dav/")  # root sees all

    # bob cannot reach alice's bucket: not found (no existence leak) ...
    assert bob.get(f"/{a_bucket}/secret.txt").status == 404
    assert bob.propfind(f"/{a_bucket}/", depth="0").status == 404
    assert bob.delete(f"/{a_bucket}/secret.txt").status == 404
    assert bob.delete(f"/{a_bucket}").status == 404
    assert bob.move(f"/{a_bucket}/secret.txt", f"/{b_bucket}/stolen.txt").status == 404
    assert bob.put(f"/{a_bucket}/x.txt", b"x").status == 404
    assert bob.request("LOCK", f"/{a_bucket}/new", body=LOCK_BODY).status == 404
    assert bob.request("PROPPATCH", f"/{a_bucket}", body=PROPPATCH).status == 404
    # as a destination it is a parent that does not exist
    assert bob.copy(f"/{b_bucket}", f"/{a_bucket}/in").status == 409
    # the name itself is taken
    assert bob.mkcol(f"/{a_bucket}").status == 403
    assert alice.get(f"/{a_bucket}/secret.txt").body == b"alice's"


# -- namespace ------------------------------------------------------------------------------


def test_buckets_dirs_and_markers(dav_root, dav_bucket):
    b = dav_bucket
    assert dav_root.mkcol(f"/{b}/empty").status == 201
    assert dav_root.mkcol(f"/{b}/empty").status == 405  # exists
    assert dav_root.mkcol(f"/{b}/no/parent").status == 409
    assert dav_root.put(f"/{b}/a/b/c.txt", b"x").status == 409  # parent must exist
    assert dav_root.mkcol(f"/{b}/a").status == 201
    assert dav_root.mkcol(f"/{b}/a/b").status == 201
    assert dav_root.put(f"/{b}/a/b/c.txt", b"hello").status == 201
    assert dav_root.put(f"/{b}/a/b/c.txt", b"hello again").status == 204
    assert names(dav_root.propfind(f"/{b}/"), f"/dav/{b}/") == {"empty", "a"}
    assert names(dav_root.propfind(f"/{b}/a/b/"), f"/dav/{b}/a/b/") == {"c.txt"}
    # a file is not a collection and the other way round
    assert dav_root.mkcol(f"/{b}/a/b/c.txt").status == 405
    assert dav_root.put(f"/{b}/a", b"x").status == 405
    assert dav_root.get(f"/{b}/a/b/c.txt").body == b"hello again"
    # deleting the last file keeps its folder (a file system would)
    assert dav_root.delete(f"/{b}/a/b/c.txt").status == 204
    assert dav_root.propfind(f"/{b}/a/b/", depth="0").status == 207
    # deleting a collection deletes everything under it
    assert dav_root.put(f"/{b}/a/b/d.txt", b"d").status == 201
    assert dav_root.delete(f"/{b}/a").status == 204
    assert dav_root.propfind(f"/{b}/a/", depth="0").status == 404
    assert dav_root.get(f"/{b}/a/b/d.txt").status == 404
    # files cannot live at the top level; buckets need valid names
    assert dav_root.put("/toplevel.txt", b"x").status == 403
    assert dav_root.mkcol("/No_Such_Name").status == 403
    # the bucket itself goes with DELETE
    assert dav_root.delete(f"/{b}").status == 204
    assert dav_root.propfind(f"/{b}", depth="0").status == 404


def test_utf8_and_spaces_in_names(dav_root, dav_bucket):
    path = f"/{dav_bucket}/Ünïcødé dir"
    assert dav_root.mkcol(path).status == 201
    assert dav_root.put(path + "/fïle 1 %.txt", "grüße".encode()).status == 201
    assert dav_root.get(path + "/fïle 1 %.txt").body == "grüße".encode()
    assert names(dav_root.propfind(path + "/"), f"/dav/{dav_bucket}/Ünïcødé dir/") == {"fïle 1 %.txt"}


def test_propfind_infinity_is_refused_with_precondition(dav_root, dav_bucket):
    resp = dav_root.propfind(f"/{dav_bucket}/", depth="infinity")
    assert resp.status == 403
    assert b"propfind-finite-depth" in resp.body


def test_client_mistakes_get_4xx(dav_root, dav_bucket):
    b = dav_bucket
    assert dav_root.put(f"/{b}/f", b"data").status == 201
    bad_xml = b"<?xml version='1.0'?><D:propfind xmlns:D='DAV:'><D:prop>"
    assert dav_root.propfind(f"/{b}/f", depth="0", body=bad_xml).status == 400
    assert dav_root.request("PROPPATCH", f"/{b}/f", body=bad_xml).status == 400
    # entity expansion (billion laughs) is refused by defusedxml, not evaluated
    bomb = (b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]>'
            b'<D:propfind xmlns:D="DAV:"><D:prop><x>&b;</x></D:prop></D:propfind>')
    assert dav_root.propfind(f"/{b}/f", depth="0", body=bomb).status == 400
    assert dav_root.propfind(f"/{b}/f", depth="2").status == 400
    assert dav_root.propfind(f"/{b}/f", depth="0", body=b"<a>" + b"x" * (2 << 20) + b"</a>").status == 413
    assert dav_root.delete(f"/{b}/nope").status == 404
    assert dav_root.get(f"/{b}/nope").status == 404
    assert dav_root.request("MOVE", f"/{b}/f").status == 400  # no Destination
    assert dav_root.move(f"/{b}/f", f"/{b}/g", headers={"Overwrite": "X"}).status == 400
    assert dav_root.put(f"/{b}/g", b"g").status == 201
    assert dav_root.move(f"/{b}/f", f"/{b}/g", overwrite=False).status == 412
    assert dav_root.copy(f"/{b}/f", f"/{b}/f").status == 403
    assert dav_root.move(f"/{b}/f", "/toplevel").status == 403
    assert dav_root.put(f"/{b}/m", b"x", headers={"X-OC-Mtime": "yesterday"}).status == 400
    assert dav_root.request("PUT", f"/{b}/r", body=b"x", headers={"Content-Range": "bytes 0-0/1"}).status == 400
    assert dav_root.get(f"/{b}/f", headers={"Range": "bytes=100-200"}).status == 416
    assert dav_root.put(f"/{b}/f", b"x", headers={"If-Match": '"0123"'}).status == 412
    assert dav_root.put(f"/{b}/f", b"x", headers={"If-None-Match": "*"}).status == 412
    assert dav_root.get(f"/{b}/f").body == b"data"


def test_range_get_and_etag(dav_root, dav_bucket):
    data = os.urandom(300_000)
    resp = dav_root.put(f"/{dav_bucket}/r.bin", data)
    assert resp.status == 201
    etag = resp.header("ETag")
    assert etag == f'"{hashlib.md5(data).hexdigest()}"'
    resp = dav_root.get(f"/{dav_bucket}/r.bin", headers={"Range": "bytes=1000-199999"})
    assert resp.status == 206
    assert resp.body == data[1000:200000]
    assert resp.header("Content-Range") == f"bytes 1000-199999/{len(data)}"
    resp = dav_root.get(f"/{dav_bucket}/r.bin", headers={"Range": "bytes=-10"})
    assert resp.status == 206 and resp.body == data[-10:]
    assert dav_root.get(f"/{dav_bucket}/r.bin", headers={"If-None-Match": etag}).status == 304
    head = dav_root.request("HEAD", f"/{dav_bucket}/r.bin")
    assert head.status == 200 and head.header("Content-Length") == str(len(data)) and head.body == b""


# -- PUT streaming --------------------------------------------------------------------------


def test_chunked_put_without_content_length(dav_root, dav_bucket):
    parts = [os.urandom(n) for n in (1, 70_000, 5, 300_000, 12)]
    resp = dav_root.request("PUT", f"/{dav_bucket}/chunked.bin", body=iter(parts), chunked=True)
    assert resp.status == 201
    assert dav_root.get(f"/{dav_bucket}/chunked.bin").body == b"".join(parts)


def _raw(server, request: bytes, *, read: bool = True) -> bytes:
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=30) as s:
        s.sendall(request)
        s.shutdown(socket.SHUT_WR)
        out = b""
        deadline = time.monotonic() + 30
        while read and time.monotonic() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
        return out


def _auth() -> bytes:
    return b"Authorization: Basic " + base64.b64encode(f"{ROOT_USER}:{ROOT_SECRET}".encode()) + b"\r\n"


def test_cut_short_body_binds_nothing(dav_server, dav_root, dav_bucket):
    # Content-Length announces more than arrives: the name must not appear
    req = (f"PUT /dav/{dav_bucket}/short.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n".encode()
           + _auth() + b"\r\n" + b"x" * 5000)
    _raw(dav_server, req)
    # a chunked body that stops in the middle of a chunk
    req = (f"PUT /dav/{dav_bucket}/broken.bin HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n".encode()
           + _auth() + b"\r\n" + b"1000\r\n" + b"y" * 100)
    _raw(dav_server, req)
    # malformed chunk framing is a 400
    req = (f"PUT /dav/{dav_bucket}/bad.bin HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n".encode()
           + _auth() + b"\r\n" + b"zz\r\nabc\r\n0\r\n\r\n")
    assert _raw(dav_server, req).startswith(b"HTTP/1.1 400")
    for name in ("short.bin", "broken.bin", "bad.bin"):
        assert dav_root.get(f"/{dav_bucket}/{name}").status == 404
    assert "Traceback" not in dav_server.log_tail(2000)


def test_oc_mtime_and_checksums(dav_root, dav_bucket):
    data = b"rclone keeps mtimes"
    resp = dav_root.put(f"/{dav_bucket}/m.txt", data, headers={
        "X-OC-Mtime": "1577934245", "OC-Checksum": "SHA1:" + hashlib.sha1(data).hexdigest()})
    assert resp.status == 201
    assert resp.header("X-OC-MTime") == "accepted"
    body = (b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:oc="http://owncloud.org/ns"><D:prop>'
            b"<D:getlastmodified/><oc:checksums/></D:prop></D:propfind>")
    text = dav_root.propfind(f"/{dav_bucket}/m.txt", depth="0", body=body).body.decode()
    assert "Thu, 02 Jan 2020 03:04:05 GMT" in text
    assert "SHA1:" + hashlib.sha1(data).hexdigest() in text and "MD5:" + hashlib.md5(data).hexdigest() in text
    bad = dav_root.put(f"/{dav_bucket}/bad.txt", data, headers={"OC-Checksum": "MD5:" + "0" * 32})
    assert bad.status == 400
    assert dav_root.get(f"/{dav_bucket}/bad.txt").status == 404


# -- properties, copy and move ----------------------------------------------------------------

PROPPATCH = (b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:cas-test"><D:set><D:prop>'
             b"<Z:color>blue</Z:color></D:prop></D:set></D:propertyupdate>")
PROPGET = (b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:Z="urn:cas-test"><D:prop><Z:color/>'
           b"</D:prop></D:propfind>")


def _color(client, path):
    resp = client.propfind(path, depth="0", body=PROPGET)
    root = ElementTree.fromstring(resp.body)
    el = root.find(".//{urn:cas-test}color")
    status = root.find(".//" + D + "status").text
    return el.text if el is not None and "200" in status else None


def test_dead_properties_move_and_copy_with_their_resource(dav_root, dav_bucket):
    b = dav_bucket
    assert dav_root.mkcol(f"/{b}/dir").status == 201
    assert dav_root.put(f"/{b}/dir/f", b"f").status == 201
    for path in (f"/{b}/dir/f", f"/{b}/dir", f"/{b}"):
        assert dav_root.request("PROPPATCH", path, body=PROPPATCH).status == 207
        assert _color(dav_root, path) == "blue"
    assert dav_root.copy(f"/{b}/dir", f"/{b}/copy").status == 201
    assert _color(dav_root, f"/{b}/copy") == "blue"
    assert _color(dav_root, f"/{b}/copy/f") == "blue"
    assert dav_root.move(f"/{b}/dir", f"/{b}/moved").status == 201
    assert _color(dav_root, f"/{b}/moved") == "blue"
    assert _color(dav_root, f"/{b}/moved/f") == "blue"
    assert dav_root.propfind(f"/{b}/dir", depth="0").status == 404
    # a resource created again under an old name does not inherit old properties
    assert dav_root.delete(f"/{b}/moved/f").status == 204
    assert dav_root.put(f"/{b}/moved/f", b"new").status == 201
    assert _color(dav_root, f"/{b}/moved/f") is None
    # PUT over an existing file keeps its properties (content changes, not the resource)
    assert dav_root.put(f"/{b}/copy/f", b"changed").status == 204
    assert _color(dav_root, f"/{b}/copy/f") == "blue"


def test_copy_move_statuses_and_overwrite(dav_root, dav_bucket):
    b = dav_bucket
    assert dav_root.put(f"/{b}/src", b"src").status == 201
    assert dav_root.copy(f"/{b}/src", f"/{b}/dst").status == 201
    assert dav_root.copy(f"/{b}/src", f"/{b}/dst").status == 204
    assert dav_root.mkcol(f"/{b}/coll").status == 201
    assert dav_root.put(f"/{b}/coll/inner", b"i").status == 201
    # a file over a collection replaces the whole collection
    assert dav_root.move(f"/{b}/dst", f"/{b}/coll").status == 204
    assert dav_root.get(f"/{b}/coll").body == b"src"
    assert dav_root.get(f"/{b}/coll/inner").status == 404
    # Depth 0 copy of a collection copies the collection, not its members
    assert dav_root.mkcol(f"/{b}/tree").status == 201
    assert dav_root.put(f"/{b}/tree/x", b"x").status == 201
    assert dav_root.copy(f"/{b}/tree", f"/{b}/shallow", depth="0").status == 201
    assert names(dav_root.propfind(f"/{b}/shallow/"), f"/dav/{b}/shallow/") == set()
    # a collection into a new bucket, and back
    other = unique_bucket("dst")
    assert dav_root.move(f"/{b}/tree", f"/{other}").status == 201
    assert dav_root.get(f"/{other}/x").body == b"x"
    assert dav_root.move(f"/{other}", f"/{b}/tree2").status == 201
    assert dav_root.get(f"/{b}/tree2/x").body == b"x"
    assert dav_root.propfind(f"/{other}", depth="0").status == 404


# -- locks ----------------------------------------------------------------------------------


def test_locks_between_users(dav_server, dav_user):
    alice = dav_user()
    b = unique_bucket("lk")
    assert alice.mkcol(f"/{b}").status == 201
    assert alice.put(f"/{b}/f", b"1").status == 201
    token = lock(alice, f"/{b}/f")
    assert alice.put(f"/{b}/f", b"2").status == 423  # no token submitted
    assert alice.put(f"/{b}/f", b"2", headers={"If": f"(<{token}>)"}).status == 204
    assert alice.request("UNLOCK", f"/{b}/f", headers={"Lock-Token": "<opaquelocktoken:nope>"}).status == 409
    assert alice.request("UNLOCK", f"/{b}/f", headers={"Lock-Token": f"<{token}>"}).status == 204
    assert alice.put(f"/{b}/f", b"3").status == 204
    # a lock on a shared name blocks the other user until released
    root = alice.as_user(ROOT_USER, ROOT_SECRET)
    token = lock(alice, f"/{b}/f")
    assert root.put(f"/{b}/f", b"root").status == 423
    assert root.request("LOCK", f"/{b}/f", body=LOCK_BODY).status == 423
    assert root.request("UNLOCK", f"/{b}/f", headers={"Lock-Token": f"<{token}>"}).status == 403
    assert root.delete(f"/{b}").status == 423
    assert alice.request("UNLOCK", f"/{b}/f", headers={"Lock-Token": f"<{token}>"}).status == 204
    assert root.delete(f"/{b}").status == 204


def test_bearer_token_logs_in(dav_server, dav_user):
    from cas.auth.tokens import issue_token
    from cas.config import load_settings
    from cas.store import Store

    alice = dav_user()
    bucket = unique_bucket("jwt")
    assert alice.mkcol(f"/{bucket}").status == 201
    # a login token as the web UI would issue it (same data dir: same signing secret)
    settings = load_settings(dav_server.data_dir, env={"CAS_ROOT_USER": ROOT_USER, "CAS_ROOT_PASSWORD": ROOT_SECRET})
    with Store.open_store(settings) as store:
        token = issue_token(store, alice.user)
    anon = dav_server.client(None, None)
    resp = anon.propfind(f"/{bucket}/", depth="0", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 207
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert anon.propfind(f"/{bucket}/", depth="0", headers={"Authorization": f"Bearer {forged}"}).status == 401


def test_anonymous_mode_is_read_only(dav_server_factory):
    server = dav_server_factory(extra_args=("--anonymous",))
    root = server.client()
    bucket = unique_bucket("pub")
    assert root.mkcol(f"/{bucket}").status == 201
    assert root.put(f"/{bucket}/readme.txt", b"public").status == 201
    anon = server.client(None, None)
    assert anon.get(f"/{bucket}/readme.txt").body == b"public"
    assert anon.propfind(f"/{bucket}/").status == 207
    assert anon.put(f"/{bucket}/x", b"x").status == 403
    assert anon.delete(f"/{bucket}/readme.txt").status == 403
    assert anon.mkcol("/anon-bucket").status == 403
    assert anon.request("LOCK", f"/{bucket}/readme.txt", body=LOCK_BODY).status == 403
    # wrong credentials are still refused rather than downgraded to anonymous
    assert server.client(ROOT_USER, "wrong").get(f"/{bucket}/readme.txt").status == 401
