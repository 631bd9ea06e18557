"""Header injection and response splitting: no stored or echoed value reaches the wire raw.

Every request that matters here is written byte by byte on a raw socket (HTTP clients refuse
to send a bare CR in a header), and every response is read raw: the injected ``Set-Cookie``
must not appear as a header, and the connection must carry exactly one response. One real
``cas serve`` (``web_server``) answers S3, WebDAV and the web API; the test of records written
by older versions forges such a record in a stopped server's index and starts it again.
"""

from __future__ import annotations

import base64
import json
import socket
import urllib.parse
import uuid
from dataclasses import dataclass

import pytest

from cas.errors import InvalidHeaderValue
from cas.headers import check_content_type, check_metadata, check_value, parse_content_type
from cas.protocols import headers as safe
from tests.fixtures.s3api import sign_request
from tests.fixtures.web import ROOT_PASSWORD, ROOT_USER

INJECTED = "\rSet-Cookie: pwn=1"
BASIC = "Basic " + base64.b64encode(f"{ROOT_USER}:{ROOT_PASSWORD}".encode()).decode()
MAX_RESPONSE = 1 << 20


# -- a raw HTTP/1.1 exchange -------------------------------------------------------------------


@dataclass
class Raw:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    rest: bytes  # whatever followed the first response on the connection

    def header(self, name: str) -> str | None:
        values = [v for n, v in self.headers if n.lower() == name.lower()]
        assert len(values) <= 1, (name, values)
        return values[0] if values else None

    def assert_clean(self) -> None:
        """One response, and no header that a stored or echoed value smuggled in."""
        assert self.rest == b"", self.rest[:200]
        assert self.header("Set-Cookie") is None, self.headers
        for name, value in self.headers:
            assert not any(c in value for c in "\r\n\x00"), (name, value)


def exchange(port: int, method: str, target: str, headers: dict[str, str], body: bytes = b"") -> Raw:
    """Send one request exactly as given (``Connection: close``) and read the raw answer."""
    lines = [f"{method} {target} HTTP/1.1"]
    if not any(n.lower() == "host" for n in headers):
        lines.append(f"Host: 127.0.0.1:{port}")
    lines += [f"{n}: {v}" for n, v in headers.items()]
    if body or method in ("PUT", "POST"):
        lines.append(f"Content-Length: {len(body)}")
    lines.append("Connection: close")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body
    chunks = []
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(data)
        size = 0
        while size < MAX_RESPONSE:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    raw = b"".join(chunks)
    head, sep, rest = raw.partition(b"\r\n\r\n")
    assert sep, raw[:200]
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in header_lines:
        name, colon, value = line.partition(":")
        assert colon, ("not a header line", line)
        headers.append((name.strip(), value.strip()))
    length = 0 if method == "HEAD" else int(dict((n.lower(), v) for n, v in headers).get("content-length", len(rest)))
    return Raw(int(status_line.split()[1]), headers, rest[:length], rest[length:])


# -- the three front ends of one server ----------------------------------------------------------


@dataclass
class Fronts:
    s3_port: int
    http_port: int

    def s3(self, method: str, bucket: str, key: str = "", *, headers=None, query: str = "", body: bytes = b"") -> Raw:
        path = f"/{bucket}/{key}" if key else f"/{bucket}"
        req = sign_request(method, f"127.0.0.1:{self.s3_port}", path, access_key=ROOT_USER, secret=ROOT_PASSWORD,
                           headers=headers or {}, query=query)
        return exchange(self.s3_port, method, req.path + (f"?{query}" if query else ""), req.headers, body)

    def dav(self, method: str, path: str, *, headers=None, body: bytes = b"") -> Raw:
        return exchange(self.http_port, method, "/dav/" + urllib.parse.quote(path),
                        {"Authorization": BASIC, **(headers or {})}, body)

    def web(self, method: str, path: str, *, headers=None, body: bytes = b"") -> Raw:
        return exchange(self.http_port, method, path, {"Authorization": BASIC, **(headers or {})}, body)

    def web_object(self, bucket: str, key: str) -> str:
        return f"/api/buckets/{bucket}/object?" + urllib.parse.urlencode({"key": key})


def fronts_of(server) -> Fronts:
    return Fronts(urllib.parse.urlsplit(server.s3_url).port, urllib.parse.urlsplit(server.web_url).port)


@pytest.fixture(scope="module")
def fronts(web_server) -> Fronts:
    return fronts_of(web_server)


@pytest.fixture
def bucket(fronts) -> str:
    name = "hdr-" + uuid.uuid4().hex[:12]
    assert fronts.s3("PUT", name).status == 200
    return name


def assert_s3_error(resp: Raw, code: str = "InvalidArgument") -> None:
    assert resp.status == 400, (resp.status, resp.body)
    assert f"<Code>{code}</Code>".encode() in resp.body, resp.body
    resp.assert_clean()


def assert_absent(fronts: Fronts, bucket: str, key: str) -> None:
    assert fronts.s3("HEAD", bucket, key).status == 404


# -- unit: the validator and the parser --------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize("value", [
    "text/plain", "text/plain; charset=utf-8", "text/plain;charset=UTF-8", 'multipart/form-data; boundary="a b;c"',
    "application/vnd.api+json", "text/plain; a=1 ; b=\"x\\\"y\"", "text/plain;", "image/svg+xml ",
])
def test_valid_content_types_are_kept_as_given(value):
    assert check_content_type(value) == value
    assert safe.content_type(value) == value


@pytest.mark.unit
@pytest.mark.parametrize("value", [
    "text/html\r\nSet-Cookie: pwn=1", "text/html\rX: y", "text/html\nX: y", "text/plain\x00", "text/plain\x0b",
    "text/html Set-Cookie: pwn=1", "texthtml", "/plain", "text/", "text/plain; charset", "text/plain; =x",
    'text/plain; a="unterminated', "text/pl ain", "text/plain; a=b c", "x/" + "y" * 1100, 42, ["text/plain"],
])
def test_invalid_content_types_are_refused(value):
    with pytest.raises(InvalidHeaderValue):
        check_content_type(value)
    assert safe.content_type(value) == safe.FALLBACK_CONTENT_TYPE


@pytest.mark.unit
def test_parsed_content_type_has_its_parts():
    parsed = parse_content_type('Text/HTML; charset=utf-8; q="a;b"')
    assert parsed.essence == "text/html"
    assert parsed.params == (("charset", "utf-8"), ("q", '"a;b"'))


@pytest.mark.unit
def test_values_and_metadata_are_checked():
    assert check_value("Cache-Control", "max-age=60, private") == "max-age=60, private"
    assert check_value("x", "tab\tand ünïcode 日本") == "tab\tand ünïcode 日本"
    for bad in ("a\r\nb", "a\rb", "a\nb", "a\x00b", "a\x7fb", "a\x1bb", "\ud800", "v" * 8193, None, 3):
        with pytest.raises(InvalidHeaderValue):
            check_value("x", bad)
        assert safe.value(bad) is None
    assert check_metadata({"colour": "blue"}) == {"colour": "blue"}
    for bad in ({"bad name": "v"}, {"n\r\nx": "v"}, {"n": "v\r\n"}, {"big": "v" * 2100}, {"": "v"}):
        with pytest.raises(InvalidHeaderValue):
            check_metadata(bad)


@pytest.mark.unit
def test_wire_values_and_active_types():
    assert safe.value("ü") == "ü"  # latin-1 text goes as it is (as before)
    assert safe.value("日本") == "日本".encode().decode("latin-1")  # the client's UTF-8 bytes, not a crash
    for ctype in ("text/html", "TEXT/HTML; charset=utf-8", "application/xhtml+xml", "image/svg+xml", "text/xml",
                  "application/xml", "text/javascript", "application/javascript", "application/pdf", "x/unknown"):
        assert safe.renders_actively(ctype), ctype
    for ctype in ("text/plain; charset=utf-8", "image/png", "video/mp4", "audio/ogg", "application/octet-stream",
                  "application/json", "garbage\r\n"):
        assert not safe.renders_actively(ctype), ctype
    assert safe.is_attachment('Attachment ; filename="x"') and not safe.is_attachment("inline; filename=attachment")
    assert safe.attachment("a b\"c.html") == "attachment; filename=\"a b_c.html\"; filename*=UTF-8''a%20b%22c.html"


# -- S3 inputs ---------------------------------------------------------------------------------


S3_STORED = ["Content-Type", "Content-Disposition", "Content-Encoding", "Cache-Control", "Content-Language",
             "Expires", "x-amz-meta-note"]


@pytest.mark.integration
@pytest.mark.parametrize("header", S3_STORED)
@pytest.mark.parametrize("bad", [INJECTED, "\x00X-A: b", "\x0bX-A: b"])  # cheroot strips the ends
def test_s3_put_with_a_control_character_is_refused(fronts, bucket, header, bad):
    resp = fronts.s3("PUT", bucket, "obj", headers={header: "text/html" + bad}, body=b"<p>hi</p>")
    assert_s3_error(resp)
    assert_absent(fronts, bucket, "obj")


@pytest.mark.integration
def test_s3_put_with_a_malformed_content_type_is_refused(fronts, bucket):
    assert_s3_error(fronts.s3("PUT", bucket, "obj", headers={"Content-Type": "text/html Set-Cookie: pwn=1"}, body=b"x"))
    assert_absent(fronts, bucket, "obj")


@pytest.mark.integration
@pytest.mark.parametrize("header", ["Content-Type", "x-amz-meta-note", "Content-Disposition"])
def test_s3_create_multipart_upload_with_a_control_character_is_refused(fronts, bucket, header):
    resp = fronts.s3("POST", bucket, "mp", headers={header: "text/html" + INJECTED}, query="uploads=")
    assert_s3_error(resp)
    listing = fronts.s3("GET", bucket, query="uploads=")
    assert listing.status == 200 and b"<UploadId>" not in listing.body, listing.body


@pytest.mark.integration
@pytest.mark.parametrize("header", ["Content-Type", "x-amz-meta-note", "Cache-Control"])
def test_s3_copy_replace_with_a_control_character_is_refused(fronts, bucket, header):
    assert fronts.s3("PUT", bucket, "src", body=b"source").status == 200
    resp = fronts.s3("PUT", bucket, "dst", headers={
        "x-amz-copy-source": f"/{bucket}/src", "x-amz-metadata-directive": "REPLACE", header: "text/html" + INJECTED})
    assert_s3_error(resp)
    assert_absent(fronts, bucket, "dst")


OVERRIDES = ["response-content-type", "response-content-disposition", "response-content-encoding",
             "response-content-language", "response-cache-control", "response-expires"]


@pytest.mark.integration
@pytest.mark.parametrize("param", OVERRIDES)
def test_s3_response_override_with_crlf_is_refused(fronts, bucket, param):
    assert fronts.s3("PUT", bucket, "obj", body=b"data").status == 200
    query = f"{param}=" + urllib.parse.quote("text/html\r\nSet-Cookie: pwn=1\r\n\r\nHTTP/1.1 200 OK", safe="")
    assert_s3_error(fronts.s3("GET", bucket, "obj", query=query))


@pytest.mark.integration
def test_s3_response_override_that_is_valid_is_sent(fronts, bucket):
    assert fronts.s3("PUT", bucket, "obj", body=b"data").status == 200
    query = "response-content-type=" + urllib.parse.quote("text/plain; charset=utf-8", safe="")
    resp = fronts.s3("GET", bucket, "obj", query=query)
    assert resp.status == 200 and resp.body == b"data"
    assert resp.header("Content-Type") == "text/plain; charset=utf-8"
    resp.assert_clean()


# -- web API and WebDAV inputs -------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.parametrize("header", ["X-Content-Type", "Content-Type"])
def test_web_upload_with_a_control_character_is_refused(fronts, bucket, header):
    resp = fronts.web("PUT", fronts.web_object(bucket, "up.html"), headers={header: "text/html" + INJECTED},
                      body=b"<script>alert(1)</script>")
    assert resp.status == 400, resp.body
    assert json.loads(resp.body)["error"] == "InvalidHeaderValue"
    resp.assert_clean()
    assert_absent(fronts, bucket, "up.html")


@pytest.mark.integration
@pytest.mark.parametrize("ctype", ["text/html\r\nSet-Cookie: pwn=1", "text/html\u0000", 42, ["text/html"]])
def test_web_resumable_upload_with_a_bad_content_type_is_refused(fronts, bucket, ctype):
    body = json.dumps({"key": "big.html", "size": 10, "content_type": ctype}).encode()
    resp = fronts.web("POST", f"/api/buckets/{bucket}/uploads", headers={"Content-Type": "application/json"}, body=body)
    assert resp.status == 400, resp.body
    assert json.loads(resp.body)["error"] == "InvalidHeaderValue"
    listing = fronts.s3("GET", bucket, query="uploads=")
    assert b"<UploadId>" not in listing.body, listing.body


@pytest.mark.integration
def test_dav_put_with_a_control_character_is_refused(fronts, bucket):
    resp = fronts.dav("PUT", f"{bucket}/page.html", headers={"Content-Type": "text/html" + INJECTED}, body=b"<p>x</p>")
    assert resp.status == 400, (resp.status, resp.body)
    resp.assert_clean()
    assert_absent(fronts, bucket, "page.html")


# -- outputs: nosniff, downloads on the UI's origin, exact round trips ----------------------------


@pytest.mark.integration
def test_object_responses_say_nosniff_and_html_is_a_download_on_the_ui_origin(fronts, bucket):
    page = b"<script>alert(document.domain)</script>"
    assert fronts.s3("PUT", bucket, "dir/page.html", headers={"Content-Type": "text/html"}, body=page).status == 200
    for method in ("GET", "HEAD"):
        s3 = fronts.s3(method, bucket, "dir/page.html")
        assert s3.status == 200 and s3.header("X-Content-Type-Options") == "nosniff"
        assert s3.header("Content-Type") == "text/html"  # the S3 listener is not the UI's origin
        s3.assert_clean()
        for resp in (fronts.dav(method, f"{bucket}/dir/page.html"),
                     fronts.web(method, fronts.web_object(bucket, "dir/page.html"))):
            assert resp.status == 200, resp.status
            assert resp.header("X-Content-Type-Options") == "nosniff"
            assert resp.header("Content-Security-Policy") == "default-src 'none'; sandbox"
            disposition = resp.header("Content-Disposition") or ""
            assert disposition.startswith("attachment;") and 'filename="page.html"' in disposition, disposition
            resp.assert_clean()
            if method == "GET":
                assert resp.body == page


@pytest.mark.integration
def test_a_stored_inline_disposition_does_not_render_html_on_the_ui_origin(fronts, bucket):
    headers = {"Content-Type": "image/svg+xml", "Content-Disposition": "inline"}
    assert fronts.s3("PUT", bucket, "x.svg", headers=headers, body=b"<svg onload='alert(1)'/>").status == 200
    assert fronts.s3("GET", bucket, "x.svg").header("Content-Disposition") == "inline"  # S3 keeps what was set
    resp = fronts.dav("GET", f"{bucket}/x.svg")
    assert resp.status == 200 and resp.header("Content-Disposition").startswith("attachment;"), resp.headers
    assert resp.header("Content-Security-Policy") == "default-src 'none'; sandbox"


@pytest.mark.integration
def test_passive_types_stay_inline_on_webdav(fronts, bucket):
    assert fronts.s3("PUT", bucket, "a.png", headers={"Content-Type": "image/png"}, body=b"\x89PNG").status == 200
    resp = fronts.dav("GET", f"{bucket}/a.png")
    assert resp.status == 200 and resp.header("Content-Disposition") is None
    assert resp.header("X-Content-Type-Options") == "nosniff"
    assert resp.header("Content-Security-Policy") == "default-src 'none'; sandbox"


@pytest.mark.integration
def test_content_type_with_parameters_round_trips_exactly(fronts, bucket):
    ctype = 'text/plain; charset=utf-8; x="a \\"b\\";c"'
    assert fronts.s3("PUT", bucket, "s3.txt", headers={"Content-Type": ctype}, body=b"one").status == 200
    assert fronts.web("PUT", fronts.web_object(bucket, "web.txt"), headers={"X-Content-Type": ctype},
                      body=b"two").status == 201
    assert fronts.dav("PUT", f"{bucket}/dav.txt", headers={"Content-Type": ctype}, body=b"three").status in (201, 204)
    for key in ("s3.txt", "web.txt", "dav.txt"):
        for resp in (fronts.s3("GET", bucket, key), fronts.dav("GET", f"{bucket}/{key}"),
                     fronts.web("GET", fronts.web_object(bucket, key))):
            assert resp.status == 200, (key, resp.status)
            assert resp.header("Content-Type") == ctype, (key, resp.headers)
            resp.assert_clean()


# -- outputs: records written by older versions --------------------------------------------------


def _forge(data_dir, bucket: str, key: str, **fields) -> None:
    """Overwrite fields of an object's record, as an older version without these checks stored them."""
    from cas.config import load_settings
    from cas.store import Store

    store = Store.open_store(load_settings(data_dir, {}, env={}))
    try:
        with store.index.write() as t:
            record = t.get_object(bucket, key)
            record.update(fields)
            t.put_object(bucket, key, record)
    finally:
        store.close()


@pytest.mark.integration
def test_bad_values_stored_by_older_versions_never_reach_the_wire(start_web_server, tmp_path):
    data = tmp_path / "old"
    server = start_web_server(data)
    fronts = fronts_of(server)
    bucket = "old-records"
    assert fronts.s3("PUT", bucket).status == 200
    assert fronts.s3("PUT", bucket, "page.html", headers={"x-amz-meta-good": "kept"}, body=b"<p>old</p>").status == 200
    server.stop()
    split = "\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nSet-Cookie: pwn=1\r\n\r\n<script>alert(1)</script>"
    _forge(data, bucket, "page.html", ct="text/html" + split,
           meta={"good": "kept", "evil": "x" + split, "bad\r\nname": "v"},
           hdr={"content-disposition": "inline\r\nSet-Cookie: pwn=1", "cache-control": "no-cache"})
    fronts = fronts_of(start_web_server(data))
    for method in ("GET", "HEAD"):
        s3 = fronts.s3(method, bucket, "page.html")
        dav = fronts.dav(method, f"{bucket}/page.html")
        web = fronts.web(method, fronts.web_object(bucket, "page.html"))
        for resp in (s3, dav, web):
            assert resp.status == 200, resp.status
            resp.assert_clean()
            assert resp.header("Content-Type") == "application/octet-stream"
            if method == "GET":
                assert resp.body == b"<p>old</p>"
        assert s3.header("x-amz-meta-good") == "kept" and s3.header("Cache-Control") == "no-cache"
        assert s3.header("x-amz-meta-evil") is None and s3.header("Content-Disposition") is None
