"""SIGKILL of `cas serve` while S3 clients upload: acknowledged writes survive, nothing is damaged,
and GC reclaims what the killed uploads left behind (DESIGN §4, issue: crash tests, 20 rounds)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.exceptions import HTTPClientError

from cas.config import load_settings
from cas.store import Store
from tests.fixtures.core import bytes_of
from tests.fixtures.serve import CasServe

pytestmark = [pytest.mark.crash, pytest.mark.integration]

USER, SECRET = "crashroot", "crash-secret-123"
MiB = 1 << 20


def _client(url: str):
    return boto3.client("s3", endpoint_url=url, aws_access_key_id=USER, aws_secret_access_key=SECRET,
                        region_name="us-east-1",
                        config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=20))


def _cas(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cas.cli", *args], capture_output=True, text=True, timeout=300)


def test_serve_killed_at_random_moments_keeps_every_acknowledged_write(tmp_path):
    data = tmp_path / "data"
    env = {"CAS_ROOT_USER": USER, "CAS_ROOT_PASSWORD": SECRET}
    rng = random.Random(2026)
    acked: dict[str, bytes] = {}
    interrupted: list[str] = []  # requests in flight when the kill landed
    failures: list[str] = []  # anything else that went wrong: a defect
    shared = bytes_of(3 * MiB, seed=999)  # dedup across uploads, so kills also hit pinned shared blocks
    for round_ in range(20):
        srv = CasServe(data, env=env, root=None).start()
        try:
            s3 = _client(srv.s3_url)
            if round_ == 0:
                s3.create_bucket(Bucket="crash")
            stop = threading.Event()
            killing = threading.Event()

            def upload(worker: int) -> None:
                for i in range(1000):  # bounded; the kill comes long before
                    if stop.is_set():
                        return
                    key = f"r{round_}/w{worker}/{i}"
                    body = bytes_of(rng.randrange(1, 4 * MiB), seed=round_ * 10_000 + worker * 1000 + i)
                    if i % 2:
                        body = shared + body
                    try:
                        s3.put_object(Bucket="crash", Key=key, Body=body)
                    except (BotoConnectionError, HTTPClientError) as exc:
                        if killing.is_set():  # the server died under this request: not acknowledged
                            interrupted.append(key)
                        else:
                            failures.append(f"{key}: connection failed before the kill: {exc!r}")
                        return
                    except Exception as exc:  # an HTTP error answer (or a client bug) while the server lived
                        failures.append(f"{key}: {exc!r}")
                        return
                    acked[key] = body

            threads = [threading.Thread(target=upload, args=(w,)) for w in range(2)]
            for t in threads:
                t.start()
            time.sleep(rng.uniform(0.2, 2.0))  # a random moment is the point of this test
            killing.set()
            os.kill(srv.proc.pid, signal.SIGKILL)
            stop.set()
            for t in threads:
                t.join(timeout=60)
            assert not any(t.is_alive() for t in threads)
        finally:
            srv.stop()
    assert not failures, failures
    assert len(acked) > 20, "too few uploads were acknowledged for the test to mean anything"
    assert len(interrupted) >= 10, f"only {len(interrupted)} kills landed during a request"

    with Store.open_store(load_settings(data, env={})) as store:
        for key, body in acked.items():
            assert store.get_bytes("crash", key) == body, key
    verify = _cas("verify", "--data", str(data), "--deep", "--json")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    gc = json.loads(_cas("gc", "--data", str(data), "--delete", "--min-age", "0", "--json").stdout)
    # killed uploads left blocks without a name (located orphans, or dead bytes in the open packs
    # the killed servers abandoned): reclaimed now
    assert gc["orphans"] + gc["packs_deleted"] > 0 and gc["abandoned_packs"] > 0, gc
    again = json.loads(_cas("gc", "--data", str(data), "--delete", "--min-age", "0", "--json").stdout)
    assert again["orphans"] == 0 and again["condemned"] == 0 and again["dead_writers"] == 0
    after = json.loads(_cas("verify", "--data", str(data), "--json").stdout)
    assert after["clean"] and after["orphans"] == 0 and after["blocks_unreferenced"] == 0
    with Store.open_store(load_settings(data, env={})) as store:
        for key, body in acked.items():
            assert store.get_bytes("crash", key) == body, key
