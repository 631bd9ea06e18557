"""The PackFiles contract (cas/blocks/packs/files.py), run against every implementation:
memory, local disk and S3 (SeaweedFS, 5 MiB parts, so a pack of a few MiB is a multipart
upload with parts in parallel). S3-only behaviour (request counts, multipart uploads left
behind, the memory bound) is in test_s3_packfiles.py."""

from __future__ import annotations

import os
import threading
import time

import pytest

from cas.errors import BlockNotFound, IntegrityError
from tests.fixtures.core import bytes_of

pytestmark = pytest.mark.unit

MiB = 1 << 20


def _pid() -> bytes:
    return os.urandom(16)


def _store(files, data: bytes, piece: int = 64 << 10, pack_id: bytes | None = None) -> bytes:
    """Write ``data`` as a new pack in pieces of ``piece`` bytes; returns its id."""
    pid = pack_id or _pid()
    sink = files.create(pid)
    for i in range(0, len(data), piece):
        sink.write(data[i:i + piece])
    sink.finish()
    return pid


def _listed(files) -> dict[bytes, tuple[int, float]]:
    return {pid: (size, created) for pid, size, created in files.iter_packs()}


def test_small_pack_round_trips(packfiles):
    data = bytes_of(300_000, seed=1)
    pid = _store(packfiles, data, piece=4099)
    assert packfiles.size(pid) == len(data)
    assert packfiles.read(pid, 0, len(data)) == data
    size, created = _listed(packfiles)[pid]
    assert size == len(data)
    assert abs(created - time.time()) < 300


def test_large_pack_round_trips(packfiles):
    # 17 MiB + a bit: on S3 with 5 MiB parts, four parts of which three go up while writing
    data = bytes_of(17 * MiB + 12_345, seed=2)
    pid = _store(packfiles, data, piece=MiB + 7)
    assert packfiles.size(pid) == len(data)
    assert packfiles.read(pid, 0, len(data)) == data
    assert _listed(packfiles)[pid][0] == len(data)


def test_one_large_write_round_trips(packfiles):
    data = bytes_of(11 * MiB, seed=3)
    pid = _store(packfiles, data, piece=len(data))
    assert packfiles.read(pid, 0, len(data)) == data


def test_empty_pack_round_trips(packfiles):
    pid = _store(packfiles, b"")
    assert packfiles.size(pid) == 0
    assert packfiles.read(pid, 0, 0) == b""
    assert _listed(packfiles)[pid][0] == 0


@pytest.mark.parametrize("size", [200_000, 12 * MiB + 5])
def test_ranged_reads_at_start_middle_and_end(packfiles, size):
    data = bytes_of(size, seed=4)
    pid = _store(packfiles, data, piece=MiB)
    third = size // 3
    for offset, length in [(0, 1), (0, 4096), (third, 12_345), (third, third), (size - 4096, 4096),
                           (size - 1, 1), (0, size)]:
        assert packfiles.read(pid, offset, length) == data[offset:offset + length], (offset, length)
    if size > 6 * MiB:  # a range across a part boundary of the S3 upload
        assert packfiles.read(pid, 5 * MiB - 100, 200) == data[5 * MiB - 100:5 * MiB + 100]
    assert packfiles.read(pid, third, 0) == b""


def test_read_past_the_end_is_an_integrity_error(packfiles):
    data = bytes_of(100_000, seed=5)
    pid = _store(packfiles, data)
    for offset, length in [(len(data) - 10, 11), (0, len(data) + 1), (len(data), 1), (len(data) + 500, 10)]:
        with pytest.raises(IntegrityError, match=pid.hex()):
            packfiles.read(pid, offset, length)
    assert packfiles.read(pid, 0, len(data)) == data  # and the pack is still fine


def test_missing_pack_is_block_not_found(packfiles):
    pid = _pid()
    with pytest.raises(BlockNotFound, match=pid.hex()):
        packfiles.read(pid, 0, 10)
    with pytest.raises(BlockNotFound):
        packfiles.read(pid, 0, 0)
    with pytest.raises(BlockNotFound):
        packfiles.size(pid)
    assert pid not in _listed(packfiles)


def test_delete_removes_and_is_idempotent(packfiles):
    keep = _store(packfiles, bytes_of(1000, seed=6))
    gone = _store(packfiles, bytes_of(1000, seed=7))
    packfiles.delete(gone)
    packfiles.delete(gone)
    packfiles.delete(_pid())  # never existed
    with pytest.raises(BlockNotFound):
        packfiles.read(gone, 0, 1)
    with pytest.raises(BlockNotFound):
        packfiles.size(gone)
    assert set(_listed(packfiles)) == {keep}
    assert packfiles.read(keep, 0, 1000) == bytes_of(1000, seed=6)


def test_iter_packs_is_sorted_and_complete(packfiles):
    packs = {_pid(): bytes_of(1000 + i, seed=i) for i in range(25)}
    packs[bytes(16)] = b"x"  # the smallest and the largest possible ids
    packs[b"\xff" * 16] = b"yy"
    for pid, data in packs.items():
        _store(packfiles, data, pack_id=pid)
    listed = list(packfiles.iter_packs())
    assert [pid for pid, _, _ in listed] == sorted(packs)
    assert {pid: size for pid, size, _ in listed} == {pid: len(data) for pid, data in packs.items()}
    assert all(abs(created - time.time()) < 300 for _, _, created in listed)


def test_abort_leaves_nothing(packfiles):
    before = _listed(packfiles)
    for size in [0, 1000, 12 * MiB]:  # nothing written, a buffer, parts uploaded
        pid = _pid()
        sink = packfiles.create(pid)
        data = bytes_of(size, seed=size)
        for i in range(0, size, MiB):
            sink.write(data[i:i + MiB])
        sink.abort()
        sink.abort()  # twice is fine
        with pytest.raises(BlockNotFound):
            packfiles.read(pid, 0, 1)
        with pytest.raises(BlockNotFound):
            packfiles.size(pid)
    assert _listed(packfiles) == before


@pytest.mark.parametrize("size", [1000, 11 * MiB])
def test_a_sink_takes_nothing_after_abort(packfiles, size):
    pid = _pid()
    sink = packfiles.create(pid)
    sink.write(bytes_of(size, seed=8))
    sink.abort()
    with pytest.raises(RuntimeError):
        sink.finish()  # a caller's bug, and it must not bring the pack back
    with pytest.raises(RuntimeError):
        sink.write(b"more")
    with pytest.raises(BlockNotFound):
        packfiles.read(pid, 0, 1)
    assert pid not in _listed(packfiles)


@pytest.mark.parametrize("size", [1000, 11 * MiB])
def test_a_finished_pack_never_changes(packfiles, size):
    data = bytes_of(size, seed=10)
    pid = _pid()
    sink = packfiles.create(pid)
    sink.write(data)
    sink.finish()
    with pytest.raises(RuntimeError):
        sink.write(b"more")
    with pytest.raises(RuntimeError):
        sink.finish()
    assert packfiles.size(pid) == size
    assert packfiles.read(pid, 0, size) == data


def test_an_unfinished_pack_is_invisible_unless_the_backend_can_flush(packfiles):
    pid = _pid()
    data = bytes_of(7 * MiB, seed=9)
    sink = packfiles.create(pid)
    sink.write(data)
    if packfiles.can_flush:
        sink.flush()
        assert packfiles.read(pid, 0, len(data)) == data  # durable and readable as it grows
    else:
        with pytest.raises(NotImplementedError):
            sink.flush()
        with pytest.raises(BlockNotFound):
            packfiles.read(pid, 0, 1)
        assert pid not in _listed(packfiles)
    sink.write(b"tail")
    sink.finish()
    assert packfiles.read(pid, 0, len(data) + 4) == data + b"tail"


def test_concurrent_writers_and_readers(packfiles):
    packs = {_pid(): bytes_of(MiB * (i % 3) * 3 + 1000 * i, seed=100 + i) for i in range(6)}
    errors: list[BaseException] = []

    def write_and_read(pid: bytes) -> None:
        try:
            data = packs[pid]
            _store(packfiles, data, piece=256 << 10, pack_id=pid)
            for offset in range(0, len(data), max(1, len(data) // 4)):
                assert packfiles.read(pid, offset, min(5000, len(data) - offset)) == data[offset:offset + 5000]
        except BaseException as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write_and_read, args=(pid,)) for pid in packs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert {pid: size for pid, size, _ in packfiles.iter_packs()} == {pid: len(d) for pid, d in packs.items()}


# -- meta objects (store identity, metadata log, snapshots: cas/meta) ---------------------------

def test_meta_objects_round_trip_list_and_delete(packfiles):
    assert packfiles.get_meta("store.json") is None
    assert list(packfiles.list_meta()) == []
    packfiles.put_meta("store.json", b'{"id": 1}')
    packfiles.put_meta("log/0000000000000002.seg", b"two")
    packfiles.put_meta("log/0000000000000001.seg", b"one")
    packfiles.put_meta("snap/0000000000000001/part-000000", bytes(range(256)) * 10)
    assert packfiles.get_meta("store.json") == b'{"id": 1}'
    assert packfiles.get_meta("snap/0000000000000001/part-000000") == bytes(range(256)) * 10
    assert list(packfiles.list_meta("log/")) == ["log/0000000000000001.seg", "log/0000000000000002.seg"]
    assert list(packfiles.list_meta()) == ["log/0000000000000001.seg", "log/0000000000000002.seg",
                                           "snap/0000000000000001/part-000000", "store.json"]
    packfiles.put_meta("store.json", b"replaced")  # replaced whole, never appended to
    assert packfiles.get_meta("store.json") == b"replaced"
    packfiles.delete_meta("log/0000000000000001.seg")
    packfiles.delete_meta("log/0000000000000001.seg")  # absent: not an error
    assert list(packfiles.list_meta("log/")) == ["log/0000000000000002.seg"]
    assert packfiles.get_meta("log/0000000000000001.seg") is None


def test_meta_objects_are_not_packs(packfiles):
    pid = _store(packfiles, b"x" * 1000)
    packfiles.put_meta("store.json", b"{}")
    assert [p for p, _, _ in packfiles.iter_packs()] == [pid]


@pytest.mark.parametrize("name", ["../escape", "/abs", "a/../../b", "UPPER", "", "a//b", "a/", "sp ace", "x" * 101])
def test_meta_names_are_confined(packfiles, name):
    with pytest.raises(ValueError):
        packfiles.put_meta(name, b"")
    with pytest.raises(ValueError):
        packfiles.get_meta(name)


def test_meta_list_pages_through_a_long_listing(packfiles, monkeypatch):
    if hasattr(packfiles, "page_size"):
        monkeypatch.setattr(packfiles, "page_size", 2)  # S3: several listing pages
    names = [f"log/{i:016x}.seg" for i in range(1, 8)]
    for n in reversed(names):
        packfiles.put_meta(n, n.encode())
    packfiles.put_meta("logs-other/x", b"")
    assert list(packfiles.list_meta("log/")) == names
    assert [packfiles.get_meta(n) for n in names] == [n.encode() for n in names]
