"""A 1 GiB PUT over WebDAV (chunked, no Content-Length, as Finder sends) keeps server memory flat."""

from __future__ import annotations

import hashlib
import http.client
import os
import threading

import pytest

from tests.fixtures.webdav import unique_bucket

pytestmark = [pytest.mark.integration, pytest.mark.slow]

GIB = 1 << 30
PIECE = 1 << 20
RSS_GROWTH_LIMIT = 256 << 20  # generous: a few batches of chunks in flight, not the body


class RssSampler(threading.Thread):
    def __init__(self, server):
        super().__init__(daemon=True)
        self.server = server
        self.peak = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.wait(0.05):
            self.peak = max(self.peak, self.server.rss())


def test_one_gib_put_streams_and_reads_back(dav_server_factory):
    server = dav_server_factory()
    dav = server.client()
    bucket = unique_bucket("big")
    assert dav.mkcol(f"/{bucket}").status == 201
    assert dav.put(f"/{bucket}/warmup", os.urandom(4 << 20)).status == 201
    baseline = server.rss()
    sent = hashlib.md5()

    def body():
        for _ in range(GIB // PIECE):
            piece = os.urandom(PIECE)
            sent.update(piece)
            yield piece

    sampler = RssSampler(server)
    sampler.start()
    try:
        resp = dav.request("PUT", f"/{bucket}/one-gib.bin", body=body(), chunked=True, timeout=900)
        assert resp.status == 201, resp
        assert resp.header("ETag") == f'"{sent.hexdigest()}"'

        got = hashlib.md5()
        size = 0
        conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=900)
        try:
            conn.request("GET", f"/dav/{bucket}/one-gib.bin", headers=dav.auth_header())
            r = conn.getresponse()
            assert r.status == 200
            while True:
                block = r.read(PIECE)
                if not block:
                    break
                size += len(block)
                got.update(block)
        finally:
            conn.close()
    finally:
        sampler.stop.set()
        sampler.join()
    assert size == GIB
    assert got.hexdigest() == sent.hexdigest()
    print(f"server RSS: {baseline >> 20} MiB before, {sampler.peak >> 20} MiB peak during 1 GiB PUT + GET")
    assert sampler.peak - baseline < RSS_GROWTH_LIMIT, (baseline, sampler.peak)


def test_refused_big_body_is_drained_not_buffered(dav_server_factory):
    """An unauthenticated 256 MiB PUT gets its 401 and the server's memory stays flat."""
    server = dav_server_factory()
    baseline = server.rss()
    sampler = RssSampler(server)
    sampler.start()
    size = 256 << 20
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=300)
        conn.putrequest("PUT", "/dav/nobucket/big.bin")
        conn.putheader("Content-Length", str(size))
        conn.endheaders()
        piece = b"\0" * PIECE
        try:
            for _ in range(size // PIECE):
                conn.send(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass
        resp = conn.getresponse()
        assert resp.status == 401
        resp.read()
        conn.close()
    finally:
        sampler.stop.set()
        sampler.join()
    assert sampler.peak - baseline < 64 << 20, (baseline, sampler.peak)
