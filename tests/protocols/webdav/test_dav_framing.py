"""Every WebDAV answer sends exactly the body its headers announce (raw sockets, real ``cas serve``).

Each case is sent on one keep-alive connection followed by ``GET /healthz``: an answer that
announces more than it sends times out (3 s) in ``raw_exchange``; one that sends more (a body
on HEAD) garbles the next status line.
"""

from __future__ import annotations

import pytest

from tests.fixtures.webdav import raw_exchange, unique_bucket

pytestmark = pytest.mark.integration

LOCK_BODY = (b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
             b"<D:locktype><D:write/></D:locktype></D:lockinfo>")


def _exchange(server, method, target, headers=None, *, auth=True):
    hdrs = {**(server.client().auth_header() if auth else {}), **(headers or {})}
    answer, after = raw_exchange(server.http_port, [(method, target, hdrs), ("GET", "/healthz", {})])
    assert after.status == 200, "the next answer on the connection was garbled"
    return answer


@pytest.mark.parametrize("target", ["/dav/../../x", "/dav/..", "/dav/a/../../x", "/dav/%2e%2e/x"])
@pytest.mark.parametrize("method", ["GET", "PROPFIND", "PUT", "DELETE"])
def test_path_leaving_the_mount_is_400_with_its_body(dav_server, target, method):
    answer = _exchange(dav_server, method, target, {"Depth": "0", "Content-Length": "0"})
    assert answer.status == 400
    assert len(answer.body) == int(answer.headers["content-length"]) > 0


def test_error_answers_are_framed(dav_server):
    root = dav_server.client()
    bucket = unique_bucket()
    assert root.mkcol("/" + bucket).status == 201
    assert root.put(f"/{bucket}/f", b"0123456789").status == 201
    token = root.request("LOCK", f"/{bucket}/locked", body=LOCK_BODY,
                         headers={"Content-Type": "application/xml", "Timeout": "Second-60"}).header("Lock-Token")
    assert token
    cases = [
        ("GET", f"/dav/{bucket}/missing", {}, 404),
        ("GET", f"/dav/{bucket}/f", {"Range": "bytes=99-"}, 416),
        ("GET", f"/dav/{bucket}/f", {"If-Match": '"nope"'}, 412),
        ("GET", f"/dav/{bucket}", {}, 403),  # a collection
        ("PROPFIND", f"/dav/{bucket}", {"Depth": "infinity"}, 403),
        ("MKCOL", f"/dav/{bucket}/a/b/c", {}, 409),
        ("PUT", f"/dav/{bucket}/locked", {"Content-Length": "0"}, 423),
        ("LOCK", f"/dav/{bucket}/f", {"Depth": "2", "Content-Length": "0"}, 400),
        ("BREW", f"/dav/{bucket}/f", {}, 405),
    ]
    for method, target, headers, status in cases:
        answer = _exchange(dav_server, method, target, headers)
        assert answer.status == status, (method, target, answer.status)
        assert len(answer.body) == int(answer.headers.get("content-length", "0"))
    answer = _exchange(dav_server, "GET", f"/dav/{bucket}/f", auth=False)
    assert answer.status == 401


@pytest.mark.parametrize("target, headers", [
    ("/dav/nosuchbucket-x/f", {}),
    ("/dav/../x", {}),
])
def test_head_error_answers_send_no_body(dav_server, target, headers):
    answer = _exchange(dav_server, "HEAD", target, headers)
    assert answer.status in (400, 404)
    assert answer.body == b""
