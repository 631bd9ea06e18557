"""Idle and slow clients do not starve ``cas serve`` (slowloris), and each source address is capped.

A real ``cas serve`` with 8 worker threads per listener (the web fixture's ``--threads 8``);
clients bind their source address inside 127/8 (Linux loopback accepts any of them), so
the server sees several distinct clients.
"""

from __future__ import annotations

import base64
import http.client
import socket
import ssl
import time
import urllib.parse
from contextlib import ExitStack

import pytest

from tests.fixtures.web import ROOT_PASSWORD, ROOT_USER

pytestmark = pytest.mark.integration

HEAD_TIMEOUT = 3  # --head-timeout for these servers: short, so its expiry is observed quickly
PER_SOURCE = 64  # the default --max-conns-per-ip


def _addr(url: str) -> tuple[str, int]:
    u = urllib.parse.urlsplit(url)
    return u.hostname, u.port


def _connect(stack: ExitStack, addr, source: str) -> socket.socket:
    s = stack.enter_context(socket.create_connection(addr, timeout=5, source_address=(source, 0)))
    return s


def _get(addr, path: str, source: str = "127.0.0.1", headers: dict | None = None, timeout: float = 3.0):
    conn = http.client.HTTPConnection(*addr, timeout=timeout, source_address=(source, 0))
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _closed_by_server(s: socket.socket, deadline: float) -> bool:
    """Whether the server closes ``s`` (after an optional short answer) before ``deadline``."""
    while time.monotonic() < deadline:
        s.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            data = s.recv(4096)
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        if not data:
            return True
    return False


@pytest.fixture
def server(start_web_server):
    return start_web_server(extra_args=["--head-timeout", str(HEAD_TIMEOUT)])


def test_idle_and_slow_connections_do_not_starve_the_listeners(server):
    web, s3 = _addr(server.web_url), _addr(server.s3_url)
    # spread over sources under the per-source cap: what the cap does not stop must not hurt either
    sources = [f"127.0.0.{n}" for n in range(10, 15)]
    with ExitStack() as stack:
        idle, slow = [], []
        for i in range(200):  # connect and send nothing; half on each listener
            idle.append(_connect(stack, web if i % 2 else s3, sources[i % len(sources)]))
        for i in range(50):  # a partial request head, to be continued slowly
            s = _connect(stack, web if i % 2 else s3, sources[i % len(sources)])
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            slow.append(s)
        # kept-alive connections that finished one request and now sit idle
        for i in range(10):
            s = _connect(stack, web, sources[i % len(sources)])
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(4096).startswith(b"HTTP/1.1 200")
            idle.append(s)

        began = time.monotonic()
        for s in slow:  # a trickle: each byte would restart a per-read timeout
            s.sendall(b"X")
        status, body = _get(web, "/healthz")
        assert status == 200 and b'"ok"' in body
        auth = "Basic " + base64.b64encode(f"{ROOT_USER}:{ROOT_PASSWORD}".encode()).decode()
        status, body = _get(web, "/api/buckets", headers={"Authorization": auth})
        assert status == 200, body
        status, body = _get(s3, "/")  # an S3 request (unsigned: refused, but answered)
        assert status == 403 and b"<Error>" in body
        assert time.monotonic() - began < 3.0
        for s in slow:
            s.sendall(b"-")

        # the head deadline: idle and slow connections are closed once it passes, the slow
        # ones with a 408, whatever they trickle
        deadline = began + HEAD_TIMEOUT + 3.0
        assert _closed_by_server(slow[0], deadline)
        assert _closed_by_server(idle[0], deadline)
        assert all(_closed_by_server(s, deadline) for s in slow[1:] + idle[1:200])
    status, _ = _get(web, "/healthz")
    assert status == 200


def test_slow_head_gets_408(server):
    web = _addr(server.web_url)
    with socket.create_connection(web, timeout=5, source_address=("127.0.0.20", 0)) as s:
        began = time.monotonic()
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        s.settimeout(HEAD_TIMEOUT + 3)
        answer = s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 408")
        assert HEAD_TIMEOUT - 0.5 < time.monotonic() - began < HEAD_TIMEOUT + 2


def test_per_source_cap(server):
    web, s3 = _addr(server.web_url), _addr(server.s3_url)
    with ExitStack() as stack:
        held = [_connect(stack, web, "127.0.0.2") for _ in range(PER_SOURCE)]
        held[0].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # those in the cap are served
        assert held[0].recv(4096).startswith(b"HTTP/1.1 200")
        extra = _connect(stack, web, "127.0.0.2")
        extra.settimeout(3)
        answer = extra.recv(4096)  # refused at once, with a 503, then closed
        assert answer.startswith(b"HTTP/1.1 503"), answer
        assert _closed_by_server(extra, time.monotonic() + 3)
        # another address is not affected, nor is the other listener for the same address
        status, _ = _get(web, "/healthz", source="127.0.0.3")
        assert status == 200
        status, _ = _get(s3, "/", source="127.0.0.2")
        assert status == 403
        # a closed connection frees its place
        held.pop().close()
        t_end = time.monotonic() + 3
        status = None
        while status != 200 and time.monotonic() < t_end:
            try:
                status, _ = _get(web, "/healthz", source="127.0.0.2")
            except (ConnectionError, http.client.HTTPException):
                status = None
            if status != 200:
                time.sleep(0.05)  # the server notices the close on its next select round
        assert status == 200


def test_tls_handshakes_do_not_block_the_listener(cas_s3_tls):
    """On HTTPS, clients that connect and never finish (or never start) the handshake do not
    hold the listener: cheroot itself would shake hands in its one selector thread."""
    ctx = ssl.create_default_context(cafile=cas_s3_tls.ca_bundle)
    with ExitStack() as stack:
        for i in range(20):
            _connect(stack, ("127.0.0.1", cas_s3_tls.port), f"127.0.0.{30 + i % 4}")
        for i in range(5):  # the first bytes of a ClientHello, then nothing
            s = _connect(stack, ("127.0.0.1", cas_s3_tls.port), f"127.0.0.{30 + i % 4}")
            s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        began = time.monotonic()
        conn = http.client.HTTPSConnection("127.0.0.1", cas_s3_tls.port, timeout=5, context=ctx)
        try:
            conn.request("GET", "/")
            resp = conn.getresponse()
            assert resp.status == 403 and b"<Error>" in resp.read()
        finally:
            conn.close()
        assert time.monotonic() - began < 3.0
