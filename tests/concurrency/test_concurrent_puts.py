"""Concurrent writers: threads in one process and CLI processes on the same store."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from tests.fixtures.core import bytes_of

pytestmark = pytest.mark.concurrency

MiB = 1 << 20


def test_threads_and_processes_with_overlapping_content(local_store, tmp_path):
    s = local_store
    s.create_bucket("bkt")
    shared = bytes_of(3 * MiB, seed=100)
    bodies = {f"t{i}": bytes_of(MiB, seed=i) + shared + bytes_of(MiB // 2, seed=50 + i) for i in range(8)}
    files = {}
    for i in range(2):
        p = tmp_path / f"cli{i}.bin"
        p.write_bytes(shared + bytes_of(2 * MiB, seed=200 + i))
        files[f"cli/{i}"] = p
    errors: list[BaseException] = []

    def put(key, body):
        try:
            for round_ in range(3):
                s.put("bkt", f"{key}/{round_}", body)
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    procs = [subprocess.Popen([sys.executable, "-m", "cas.cli", "put", "--data", str(s.settings.data_dir),
                               str(p), f"bkt/{k}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for k, p in files.items()]
    threads = [threading.Thread(target=put, args=kv) for kv in bodies.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    outs = [p.communicate(timeout=300) for p in procs]
    assert not errors
    assert all(p.returncode == 0 for p in procs), outs
    for key, body in bodies.items():
        for round_ in range(3):
            assert s.get_bytes("bkt", f"{key}/{round_}") == body
    for key, p in files.items():
        assert s.get_bytes("bkt", key) == p.read_bytes()
    st = s.stats()
    assert st["objects"] == 8 * 3 + 2
    # the shared 3 MiB is stored about once, not 26 times
    assert st["stored_bytes"] < (8 * 1.5 + 2 * 2 + 3 + 2) * MiB
    with s.index.read() as t:
        # no pins, no writer leases but the one of this store's open pack
        assert list(t.iter_pins()) == [] and [w for w, _ in t.iter_writers() if t.get_pack(w) is None] == []
