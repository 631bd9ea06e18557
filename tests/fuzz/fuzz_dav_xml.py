"""Fuzz target: WebDAV request XML bodies (PROPFIND, PROPPATCH, LOCK) through the real stack.

wsgidav parses these bodies (with defusedxml: lxml is not installed) and our provider keeps
what they carry: dead property values (serialised by ``_prop_text``, parsed again on every
PROPFIND) and lock owners (stored by ``StoreLockStorage``, parsed again for
``lockdiscovery``). So each input is sent, in process, to the WSGI app of ``/dav`` over a
real Store in a temporary directory, and then the resource is read back with PROPFIND.

Input: one selector byte (PROPFIND, PROPPATCH, LOCK), then the body.

Property: no answer is a 5xx other than 507 (a property too large), every XML answer is
well-formed, and whatever a request stored does not break the PROPFIND after it.
"""

from __future__ import annotations

import atexit
import base64
import io
import itertools
import shutil
import sys
import tempfile
from pathlib import Path

if __name__ == "__main__":  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import defusedxml.ElementTree as SafeET

from cas.config import load_settings
from cas.protocols.webdav.app import make_app
from cas.store import Store

METHODS = ("PROPFIND", "PROPPATCH", "LOCK")
USER, SECRET, BUCKET = "fuzzer", "fuzz-secret-1234", "fuzz"
_AUTH = "Basic " + base64.b64encode(f"{USER}:{SECRET}".encode()).decode()

SEEDS = [
    b'\x00<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:allprop/></D:propfind>',
    b'\x00<propfind xmlns="DAV:"><prop><getetag/><x xmlns="urn:a"/><quota-used-bytes/></prop></propfind>',
    b'\x00<propfind xmlns="DAV:"><propname/></propfind>',
    b'\x01<D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z"><D:set><D:prop><Z:author>me &amp; you</Z:author>'
    b"<Z:n><Z:inner a='1'>t</Z:inner></Z:n></D:prop></D:set><D:remove><D:prop><Z:gone/></D:prop></D:remove>"
    b"</D:propertyupdate>",
    b'\x01<propertyupdate xmlns="DAV:"><set><prop><getlastmodified>x</getlastmodified></prop></set></propertyupdate>',
    b'\x02<?xml version="1.0" encoding="utf-8" ?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
    b"<D:locktype><D:write/></D:locktype><D:owner><D:href>http://example.org/~me</D:href></D:owner></D:lockinfo>",
    b'\x02<lockinfo xmlns="DAV:"><lockscope><shared/></lockscope><locktype><write/></locktype>'
    b'<owner xmlns:o="urn:o"><o:name>\xc3\xa9</o:name></owner></lockinfo>',
    b'\x01<!DOCTYPE p [<!ENTITY a "aaaa">]><propertyupdate xmlns="DAV:"><set><prop><x xmlns="urn:x">&a;</x>'
    b"</prop></set></propertyupdate>",
]

_state: dict = {}
_counter = itertools.count()


def _app():
    """The /dav app over a fresh store, made once per process (removed at exit)."""
    if not _state:
        tmp = tempfile.mkdtemp(prefix="cas-fuzz-dav-")
        settings = load_settings(Path(tmp) / "data", env={})
        store = Store.open_store(settings)
        store.users.add(USER, SECRET)
        store.create_bucket(BUCKET, owner=USER)
        _state.update(store=store, app=make_app(store, settings))

        def close():
            store.close()
            shutil.rmtree(tmp, ignore_errors=True)

        atexit.register(close)
    return _state["store"], _state["app"]


def _call(app, method: str, path: str, body: bytes = b"", **headers: str) -> tuple[int, dict, bytes]:
    environ = {
        "REQUEST_METHOD": method, "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8080", "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1:8080", "HTTP_AUTHORIZATION": _AUTH,
        "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body), "wsgi.errors": sys.stderr,
        "wsgi.version": (1, 0), "wsgi.multithread": False, "wsgi.multiprocess": False, "wsgi.run_once": False,
        "CONTENT_LENGTH": str(len(body)),
    }
    if body:
        environ["CONTENT_TYPE"] = "application/xml"
    environ.update({"HTTP_" + name.upper(): value for name, value in headers.items()})
    answer = {}

    def start_response(status, response_headers, exc_info=None):
        answer["status"] = int(status.split()[0])
        answer["headers"] = {n.lower(): v for n, v in response_headers}

    chunks = app(environ, start_response)
    try:
        out = b"".join(chunks)
    finally:
        getattr(chunks, "close", lambda: None)()
    return answer["status"], answer["headers"], out


def _check(method: str, status: int, headers: dict, body: bytes) -> None:
    assert status < 500 or status == 507, (method, status, body[:2000])
    if body and "xml" in headers.get("content-type", ""):
        try:
            SafeET.fromstring(body)
        except SafeET.ParseError as exc:
            raise AssertionError(f"{method} answered malformed XML: {body[:2000]!r}") from exc


def one_input(data: bytes) -> None:
    if not data:
        return
    store, app = _app()
    method = METHODS[data[0] % len(METHODS)]
    key = f"x{next(_counter)}"
    path = f"/dav/{BUCKET}/{key}"
    store.put(BUCKET, key, [b"fuzz"])
    lock_token = None
    try:
        status, headers, body = _call(app, method, path, data[1:], DEPTH="0", TIMEOUT="Second-60")
        _check(method, status, headers, body)
        lock_token = headers.get("lock-token")
        for probe in (b"", b'<propfind xmlns="DAV:"><prop><lockdiscovery/></prop></propfind>'):
            _check("PROPFIND after " + method, *_call(app, "PROPFIND", path, probe, DEPTH="0"))
    finally:
        if lock_token:
            _call(app, "UNLOCK", path, LOCK_TOKEN=lock_token)
        store.delete(BUCKET, key)


if __name__ == "__main__":
    from tests.fuzz.harness import main

    main(one_input, SEEDS, "dav_xml")
