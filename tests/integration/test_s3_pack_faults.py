"""S3PackFiles under faults, against a real SeaweedFS (issue 12).

- the loopback fault proxy answering 503 / resetting / cutting a fraction of requests during
  multipart pack uploads and ranged reads: every pack still round-trips byte-identical;
- every request failing: a clean ``TransientStoreError`` after the policy's attempts;
- a part failing for good: the upload is aborted, the error raised, nothing left behind;
- the answer to CompleteMultipartUpload lost: the retry still ends with the pack complete;
- the S3 server killed mid-pack: ``TransientStoreError``; after a restart finished packs read
  back, the abandoned upload is aborted by ``abort_stale_uploads``, and writing resumes.
"""

from __future__ import annotations

import random
import threading
import time

import pytest

from cas.blocks.retry import RetryPolicy
from cas.errors import BlockNotFound, TransientStoreError
from tests.fixtures.core import bytes_of, stream_of
from tests.fixtures.seaweed import FaultProxy

pytestmark = [pytest.mark.integration, pytest.mark.s3backend]

MiB = 1 << 20
FAST = RetryPolicy(attempts=3, base=0.05, cap=0.2)
PATIENT = RetryPolicy(attempts=12, base=0.01, cap=0.1)


def _port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def _pid(rng: random.Random) -> bytes:
    return rng.randbytes(16)


def _write(files, pid: bytes, size: int, seed: int, piece: int = MiB) -> None:
    sink = files.create(pid)
    for chunk in stream_of(size, seed, piece):
        sink.write(chunk)
    sink.finish()


def _run_threads(fn, args, timeout: float = 120) -> list[BaseException]:
    errors: list[BaseException] = []

    def wrapped(arg) -> None:
        try:
            fn(arg)
        except BaseException as exc:  # noqa: BLE001 - collected and asserted by the caller
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(a,)) for a in args]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout)
    assert not any(t.is_alive() for t in threads), "worker threads hung"
    return errors


def test_packs_round_trip_through_503s_resets_and_cut_responses(seaweed, s3_packfiles_factory):
    rng = random.Random(3)
    sizes = {_pid(rng): size for size in (1 * MiB, 17 * MiB + 3, 23 * MiB)}
    seeds = {pid: i for i, pid in enumerate(sizes)}
    with FaultProxy(_port(seaweed.endpoint), rate=0.3, faults=("503", "reset", "truncate"), seed=7) as proxy:
        files = s3_packfiles_factory(endpoint=proxy.endpoint, part_size=5 * MiB, concurrency=4, retry=PATIENT)
        assert _run_threads(lambda pid: _write(files, pid, sizes[pid], seeds[pid]), sizes) == []
        for pid, size in sizes.items():
            data = bytes_of(size, seeds[pid])
            assert files.read(pid, 0, size) == data
            for _ in range(10):
                offset = rng.randrange(size)
                length = rng.randrange(1, min(size - offset, 3 * MiB) + 1)
                assert files.read(pid, offset, length) == data[offset:offset + length]
        assert {pid: size for pid, size, _ in files.iter_packs()} == sizes
        # a CreateMultipartUpload whose answer was cut leaves an upload nobody knows: GC's to abort
        files.abort_stale_uploads(0, now=time.time() + 120)
        assert list(files.iter_uploads()) == []
    assert proxy.stats["503"] > 0 and proxy.stats["reset"] > 0 and proxy.stats["truncate"] > 0
    counts = files.request_counts()
    assert counts["UploadPart"] > 8 and counts["CompleteMultipartUpload"] >= 2  # multipart, with retries
    assert sum(counts.values()) == sum(proxy.stats.values())  # every attempt went through the proxy once


def test_ranged_reads_through_cut_responses(seaweed, s3_packfiles_factory):
    rng = random.Random(4)
    files = s3_packfiles_factory(part_size=5 * MiB)
    pid, size = _pid(rng), 12 * MiB
    _write(files, pid, size, seed=4)
    data = bytes_of(size, seed=4)
    with FaultProxy(_port(seaweed.endpoint), rate=0.5, faults=("truncate", "reset"), seed=8,
                    match=lambda line: line.startswith(b"GET ")) as proxy:
        reader = s3_packfiles_factory(endpoint=proxy.endpoint, prefix=files.prefix, retry=PATIENT)
        for _ in range(30):
            offset = rng.randrange(size)
            length = rng.randrange(1, min(size - offset, 2 * MiB) + 1)
            assert reader.read(pid, offset, length) == data[offset:offset + length]
    assert proxy.stats["truncate"] > 0 and proxy.stats["reset"] > 0
    assert reader.request_counts()["GetObject"] == 30 + proxy.stats["truncate"] + proxy.stats["reset"]


def test_every_request_failing_gives_up_with_transient_error(seaweed, s3_packfiles_factory):
    rng = random.Random(5)
    with FaultProxy(_port(seaweed.endpoint), rate=1.0, faults=("503", "reset")) as proxy:
        files = s3_packfiles_factory(endpoint=proxy.endpoint, part_size=5 * MiB, retry=FAST)
        t0 = time.monotonic()
        with pytest.raises(TransientStoreError, match="gave up after 3 attempts"):
            _write(files, _pid(rng), 1000, seed=1)  # one PutObject at finish
        sink = files.create(_pid(rng))
        with pytest.raises(TransientStoreError):
            sink.write(bytes_of(6 * MiB, seed=2))  # CreateMultipartUpload as the first part fills
        with pytest.raises(TransientStoreError):
            sink.finish()  # the failure again, not a half-made pack
        for op in (lambda: files.read(_pid(rng), 0, 10), lambda: files.size(_pid(rng)),
                   lambda: files.delete(_pid(rng)), lambda: list(files.iter_packs())):
            with pytest.raises(TransientStoreError):
                op()
        with pytest.raises(TransientStoreError):
            files.check()
        assert time.monotonic() - t0 < 15
    assert files.request_counts() == {"PutObject": 3, "CreateMultipartUpload": 3, "GetObject": 3, "HeadObject": 3,
                                      "DeleteObject": 3, "ListObjectsV2": 3, "HeadBucket": 1}


def test_a_part_failing_for_good_aborts_the_upload(seaweed, s3_packfiles_factory):
    rng = random.Random(6)
    with FaultProxy(_port(seaweed.endpoint), rate=1.0, faults=("503",),
                    match=lambda line: b"partNumber=2&" in line or line.endswith(b"partNumber=2 HTTP/1.1")) as proxy:
        files = s3_packfiles_factory(endpoint=proxy.endpoint, part_size=5 * MiB, retry=FAST)
        pid = _pid(rng)
        sink = files.create(pid)
        with pytest.raises(TransientStoreError, match="UploadPart"):
            for chunk in stream_of(80 * MiB, seed=6):  # 16 parts
                sink.write(chunk)
            sink.finish()
        with pytest.raises(TransientStoreError, match="UploadPart"):
            sink.finish()  # the first failure again
        with pytest.raises(TransientStoreError, match="UploadPart"):
            sink.write(b"more")
        sink.abort()  # nothing left to do
        assert list(files.iter_uploads()) == []
        with pytest.raises(BlockNotFound):
            files.size(pid)
        assert pid not in {p for p, _, _ in files.iter_packs()}
    assert proxy.stats["503"] == 3  # part 2, three attempts
    counts = files.request_counts()
    assert counts["AbortMultipartUpload"] == 1 and "CompleteMultipartUpload" not in counts
    # the failure stopped the writer: while part 2 retried, the other pending slot went on sending
    # parts (how many depends on the retry pauses against the upload speed), but far from all 15
    assert counts["UploadPart"] < 3 + 15


def test_lost_completion_answer_is_retried_to_a_complete_pack(seaweed, s3_packfiles_factory):
    completes: list[bytes] = []

    def first_completion(line: bytes) -> bool:
        if line.startswith(b"POST ") and b"uploadId=" in line:
            completes.append(line)
            return len(completes) == 1
        return False

    with FaultProxy(_port(seaweed.endpoint), rate=1.0, faults=("truncate",), match=first_completion) as proxy:
        files = s3_packfiles_factory(endpoint=proxy.endpoint, part_size=5 * MiB, retry=FAST)
        pid = _pid(random.Random(7))
        _write(files, pid, 11 * MiB, seed=7)
        assert files.read(pid, 0, 11 * MiB) == bytes_of(11 * MiB, seed=7)
    assert proxy.stats["truncate"] == 1
    assert files.request_counts()["CompleteMultipartUpload"] == 2


def test_server_killed_mid_pack_then_recovers_after_restart(seaweed_private, s3_packfiles_factory):
    rng = random.Random(8)
    server = seaweed_private.server
    files = s3_packfiles_factory(endpoint=seaweed_private.endpoint, access_key=seaweed_private.access_key,
                                 secret_key=seaweed_private.secret_key, part_size=5 * MiB, retry=FAST,
                                 connect_timeout=1, read_timeout=5)
    done = _pid(rng)
    _write(files, done, 7 * MiB, seed=8)
    pid = _pid(rng)
    sink = files.create(pid)
    for chunk in stream_of(11 * MiB, seed=9):  # two parts up, a third in the buffer
        sink.write(chunk)
    server.stop(kill=True)
    killed_at = time.monotonic()
    with pytest.raises(TransientStoreError):
        sink.write(bytes_of(5 * MiB, seed=10))
        sink.finish()
    assert time.monotonic() - killed_at < 20
    with pytest.raises(TransientStoreError):
        files.read(done, 0, 10)  # an unreachable backend is not "the pack is absent"

    server.start()
    assert files.read(done, 0, 7 * MiB) == bytes_of(7 * MiB, seed=8)
    with pytest.raises(BlockNotFound):
        files.size(pid)
    files.abort_stale_uploads(0, now=time.time() + 120)  # the abort the dead server could not take
    assert list(files.iter_uploads()) == []
    again = _pid(rng)
    _write(files, again, 11 * MiB, seed=11)
    assert files.read(again, 0, 11 * MiB) == bytes_of(11 * MiB, seed=11)
    assert {p for p, _, _ in files.iter_packs()} == {done, again}
