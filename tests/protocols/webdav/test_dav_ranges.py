"""WebDAV GET with Range over a real ``cas serve``: the one parser of cas/protocols/http.py decides.

Invalid or multiple ranges get the whole body (200), one range exactly that range (206), an
unsatisfiable one 416 with ``Content-Range: bytes */SIZE``.
"""

from __future__ import annotations

import pytest

from tests.fixtures.webdav import raw_exchange

pytestmark = pytest.mark.integration

DATA = bytes(range(256)) * 4  # 1024 bytes, every offset distinguishable


@pytest.fixture
def obj(dav_root, dav_bucket) -> str:
    path = f"/{dav_bucket}/r.bin"
    assert dav_root.put(path, DATA).status == 201
    return path


@pytest.mark.parametrize("header", [
    "bytes=5-2",  # first > last: invalid (wsgidav served the suffix "-2")
    "items=0-1",  # another unit (wsgidav served bytes 0-1)
    "bytes=0-1,5-6",  # several ranges (wsgidav served only 5-6)
    "bytes=abc", "bytes=", "bytes=1-2-3",
])
def test_invalid_or_multiple_ranges_get_the_whole_body(dav_root, obj, header):
    resp = dav_root.get(obj, headers={"Range": header})
    assert resp.status == 200, (header, resp.status, resp.header("Content-Range"))
    assert resp.body == DATA
    assert resp.header("Content-Range") is None


@pytest.mark.parametrize("header, first, last", [
    ("bytes=0-1", 0, 1), ("bytes=1000-", 1000, 1023), ("bytes=-24", 1000, 1023),
    ("bytes=10-5000", 10, 1023), ("bytes=-5000", 0, 1023),
])
def test_one_range_is_served_exactly(dav_root, obj, header, first, last):
    resp = dav_root.get(obj, headers={"Range": header})
    assert resp.status == 206
    assert resp.header("Content-Range") == f"bytes {first}-{last}/{len(DATA)}"
    assert resp.body == DATA[first:last + 1]
    assert int(resp.header("Content-Length")) == last - first + 1


@pytest.mark.parametrize("header", ["bytes=1024-", "bytes=5000-6000", "bytes=-0"])
def test_unsatisfiable_range_is_416_with_the_size(dav_root, obj, header):
    resp = dav_root.get(obj, headers={"Range": header})
    assert resp.status == 416
    assert resp.header("Content-Range") == f"bytes */{len(DATA)}"
    assert len(resp.body) == int(resp.header("Content-Length"))


def test_preconditions_come_before_the_range(dav_root, obj):
    resp = dav_root.get(obj, headers={"Range": "bytes=5000-", "If-Match": '"nope"'})
    assert resp.status == 412
    etag = dav_root.get(obj).header("ETag")
    resp = dav_root.get(obj, headers={"Range": "bytes=5-2", "If-Range": etag})
    assert resp.status == 200 and resp.body == DATA
    resp = dav_root.get(obj, headers={"Range": "bytes=2-5", "If-Range": '"other"'})
    assert resp.status == 200 and resp.body == DATA


def test_head_with_range_sends_no_body(dav_server, obj):
    for header in ("bytes=0-1", "bytes=5000-"):
        head, after = raw_exchange(dav_server.http_port, [
            ("HEAD", "/dav" + obj, {**dav_server.client().auth_header(), "Range": header}),
            ("GET", "/healthz", {}),
        ])
        assert head.status in (200, 206, 416) and head.body == b""
        assert after.status == 200  # no stray body bytes were left before the next answer
