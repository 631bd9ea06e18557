"""The writer's body hashing: every byte to every hasher once and in order, on shared threads."""

from __future__ import annotations

import hashlib
import os
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest

from cas import writer
from cas.blocks.memory import MemoryBlockStore
from cas.errors import ObjectNotFound
from cas.protocols.s3 import checksum
from cas.store import Store

pytestmark = pytest.mark.unit


@pytest.fixture
def mem_store(settings):
    s = Store.open_store(settings, blocks=MemoryBlockStore())
    s.create_bucket("bkt")
    yield s
    s.close()


class ThreadRecorder:
    """A hasher that notes which threads fed it (and nothing else)."""

    def __init__(self):
        self.threads = set()

    def update(self, data) -> None:
        self.threads.add(threading.current_thread())

    def digest(self) -> bytes:
        return b""


class FailingHasher:
    def __init__(self, after: int):
        self.left = after

    def update(self, data) -> None:
        self.left -= len(data)
        if self.left < 0:
            raise ValueError("hasher broke")

    def digest(self) -> bytes:
        return b""


@pytest.mark.parametrize("inline", [0, writer.INLINE_HASH_BYTES])
def test_concurrent_bodies_get_their_own_digests(mem_store, monkeypatch, inline):
    # many bodies hashed at once on the shared threads: each digest is of its own bytes, in order
    monkeypatch.setattr(writer, "INLINE_HASH_BYTES", inline)
    monkeypatch.setattr(writer, "HASH_BACKLOG", 2)
    bodies = [os.urandom(n) for n in (0, 1, 70_000, 3 << 20, (5 << 20) + 3, 9 << 20, 6 << 20, 2 << 20)]

    def put(i):
        hashers = {"crc32": checksum.new_hasher("crc32"), "sha256": checksum.new_hasher("sha256")}
        info = mem_store.put("bkt", f"k{i}", bodies[i], hashers=hashers,
                             before_commit=lambda r: {n: checksum.b64(d) for n, d in r.digests.items()})
        return info.etag, info.checksums

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(put, range(len(bodies))))
    for body, (etag, sums) in zip(bodies, results):
        assert etag == hashlib.md5(body).hexdigest()
        assert sums["crc32"] == checksum.b64(zlib.crc32(body).to_bytes(4, "big"))
        assert sums["sha256"] == checksum.b64(hashlib.sha256(body).digest())


def test_large_bodies_share_the_hashing_threads(mem_store, monkeypatch):
    # no thread started per body: successive uploads are hashed on the same few threads
    monkeypatch.setattr(writer, "INLINE_HASH_BYTES", 0)
    recorder = ThreadRecorder()
    for i in range(writer.HASH_THREADS + 4):
        mem_store.put("bkt", f"k{i}", os.urandom(2 << 20), hashers={"who": recorder})
    hashing = {t for t in recorder.threads if t is not threading.current_thread()}
    assert hashing and len(hashing) <= writer.HASH_THREADS
    assert all(t.name.startswith("cas-hash") for t in hashing)


@pytest.mark.parametrize("size", [100_000, 12 << 20])
def test_a_failing_hasher_fails_the_write_and_stores_nothing(mem_store, size):
    with pytest.raises(ValueError, match="hasher broke"):
        mem_store.put("bkt", "broken", os.urandom(size), hashers={"bad": FailingHasher(size // 2)})
    with pytest.raises(ObjectNotFound):
        mem_store.stat("bkt", "broken")
    # the shared threads are still fine for the next body
    body = os.urandom(6 << 20)
    assert mem_store.put("bkt", "after", body).etag == hashlib.md5(body).hexdigest()
