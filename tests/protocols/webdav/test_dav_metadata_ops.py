"""COPY and MOVE over WebDAV are metadata operations: no block is read or written.

Runs the real cheroot ``Server`` in this process over a real Store so that the
BlockStore's operation counters can be read while a client talks over TCP.
"""

from __future__ import annotations

import os

import pytest

from tests.fixtures.webdav import unique_bucket

pytestmark = pytest.mark.integration


def test_move_and_copy_of_a_folder_touch_no_block(dav_inproc):
    store, dav = dav_inproc.store, dav_inproc.client
    b = unique_bucket("meta")
    assert dav.mkcol(f"/{b}").status == 201
    assert dav.mkcol(f"/{b}/big").status == 201
    assert dav.mkcol(f"/{b}/big/sub").status == 201
    payload = os.urandom(3 << 20)
    for i in range(4):
        assert dav.put(f"/{b}/big/sub/f{i}.bin", payload[i:] + bytes([i])).status == 201
    before = store.blocks.counters.snapshot()
    assert dav.move(f"/{b}/big", f"/{b}/renamed").status == 201
    assert dav.copy(f"/{b}/renamed", f"/{b}/copied").status == 201
    other = unique_bucket("meta2")
    assert dav.move(f"/{b}/copied", f"/{other}").status == 201  # into a new bucket
    assert dav.move(f"/{b}/renamed/sub/f0.bin", f"/{b}/f0.bin").status == 201
    assert dav.delete(f"/{b}/renamed").status == 204
    assert store.blocks.counters.snapshot() == before
    assert store.get_bytes(other, "sub/f1.bin") == payload[1:] + b"\x01"
    assert store.get_bytes(b, "f0.bin") == payload + b"\x00"


def test_put_of_known_content_writes_no_new_block(dav_inproc):
    store, dav = dav_inproc.store, dav_inproc.client
    b = unique_bucket("dedup")
    assert dav.mkcol(f"/{b}").status == 201
    data = os.urandom(2 << 20)
    assert dav.put(f"/{b}/one", data).status == 201
    puts = store.blocks.counters.snapshot()["puts"]
    assert dav.request("PUT", f"/{b}/two", body=iter([data[:5000], data[5000:]]), chunked=True).status == 201
    assert store.blocks.counters.snapshot()["puts"] == puts
    assert dav.get(f"/{b}/two").body == data
