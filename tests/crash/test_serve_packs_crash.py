"""SIGKILL of `cas serve` over packs while several S3 clients upload and delete (boto3 over real
sockets), with small packs (sealed mid-run) and, in some rounds, GC running inside the server (so
kills also land in its repacks).

After the rounds: every acknowledged object reads back byte-identical, ``verify --deep`` is clean,
and ``cas gc`` reclaims the garbage, the open packs the killed servers left included: no open or
retired pack is left, the backend holds exactly the packs the index lists, and the dead bytes are
down to headers and footers.
"""

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
from cas.errors import ObjectNotFound
from cas.gc.packs import REPACK_BELOW, payload_bytes
from cas.index.schema import PACK_OPEN, PACK_RETIRED
from cas.store import Store
from tests.fixtures.core import bytes_of
from tests.fixtures.gc import assert_packs_sound, pack_files, pack_rows
from tests.fixtures.serve import CasServe

pytestmark = [pytest.mark.crash, pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]

USER, SECRET = "packcrash", "pack-crash-secret-123"
BUCKET = "packs"
KiB, MiB = 1 << 10, 1 << 20


def _client(url: str):
    return boto3.client("s3", endpoint_url=url, aws_access_key_id=USER, aws_secret_access_key=SECRET,
                        region_name="us-east-1",
                        config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=30))


def _cas(data, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cas.cli", *args, "--data", str(data)], capture_output=True,
                          text=True, timeout=600, env={k: v for k, v in os.environ.items() if not k.startswith("CAS_")})


def test_serve_over_packs_killed_at_random_keeps_acknowledged_writes_and_gc_reclaims_the_rest(tmp_path):
    rounds = int(os.environ.get("CAS_TEST_CRASH_ROUNDS", "8"))
    rng = random.Random(int(os.environ.get("CAS_TEST_SEED", "12")))
    data = tmp_path / "data"
    data.mkdir()
    (data / "cas.toml").write_text('[blocks]\npack_size = "4M"\n')  # packs sealed mid-run; gc and verify too
    env = {"CAS_ROOT_USER": USER, "CAS_ROOT_PASSWORD": SECRET}
    acked: dict[str, bytes] = {}
    maybe: dict[str, bytes] = {}  # in flight when the kill landed: absent, or exactly these bytes
    failures: list[str] = []
    lock = threading.Lock()
    shared = bytes_of(2 * MiB, seed=4242)  # dedup across uploads: kills hit pinned, shared blocks too
    n = [0]

    for round_ in range(rounds):
        in_server_gc = round_ % 3 == 1  # GC inside the server, killed with it (mid-repack at times)
        extra = ["--gc-interval", "1s", "--gc-min-age", "0"] if in_server_gc else []
        srv = CasServe(data, env=env, root=None, extra_args=extra).start()
        try:
            s3 = _client(srv.s3_url)
            if round_ == 0:
                s3.create_bucket(Bucket=BUCKET)
            stop = threading.Event()
            killing = threading.Event()

            def client(worker: int) -> None:
                wrng = random.Random(round_ * 100 + worker)
                while not stop.is_set():
                    with lock:
                        n[0] += 1
                        i = n[0]
                        victim = wrng.choice(sorted(acked)) if acked and wrng.random() < 0.3 else None
                        if victim is not None:
                            body = acked.pop(victim)
                            maybe[victim] = body
                    if victim is not None:
                        try:
                            s3.delete_object(Bucket=BUCKET, Key=victim)
                        except (BotoConnectionError, HTTPClientError):
                            if not killing.is_set():
                                failures.append(f"delete {victim}: connection failed before the kill")
                            return
                        except Exception as exc:  # an error answer while the server lived: a defect
                            failures.append(f"delete {victim}: {exc!r}")
                            return
                        with lock:
                            maybe.pop(victim, None)
                        continue
                    kind = wrng.random()
                    if kind < 0.5:  # small objects: group commits sharing packs
                        body = bytes_of(wrng.randrange(1, 64 * KiB), seed=i)
                    elif kind < 0.8:
                        body = bytes_of(wrng.randrange(64 * KiB, 3 * MiB), seed=i)
                    else:
                        body = shared + bytes_of(wrng.randrange(1, 1 * MiB), seed=i)
                    key = f"r{round_}/w{worker}/{i}"
                    with lock:
                        maybe[key] = body
                    try:
                        s3.put_object(Bucket=BUCKET, Key=key, Body=body)
                    except (BotoConnectionError, HTTPClientError):
                        if not killing.is_set():
                            failures.append(f"put {key}: connection failed before the kill")
                        return
                    except Exception as exc:
                        failures.append(f"put {key}: {exc!r}")
                        return
                    with lock:
                        acked[key] = maybe.pop(key)

            threads = [threading.Thread(target=client, args=(w,)) for w in range(3)]
            for t in threads:
                t.start()
            time.sleep(rng.uniform(0.5, 3.0) if not in_server_gc else rng.uniform(1.5, 4.0))
            killing.set()
            os.kill(srv.proc.pid, signal.SIGKILL)
            stop.set()
            for t in threads:
                t.join(timeout=60)
            assert not any(t.is_alive() for t in threads)
        finally:
            srv.stop()
    assert not failures, failures
    assert len(acked) > 20, f"only {len(acked)} uploads were acknowledged"

    def check_objects(store) -> None:
        for key, body in acked.items():
            assert store.get_bytes(BUCKET, key) == body, key
        for key, body in maybe.items():
            try:
                assert store.get_bytes(BUCKET, key) == body, key
            except ObjectNotFound:
                pass

    settings = load_settings(data, env={})
    with Store.open_store(settings) as store:
        check_objects(store)
        assert any(r.state == PACK_OPEN for r in pack_rows(store).values()), "no killed server left an open pack"
        assert_packs_sound(store)
    verify = _cas(data, "verify", "--deep", "--json")
    assert verify.returncode == 0 and json.loads(verify.stdout)["clean"], verify.stdout + verify.stderr
    first = json.loads(_cas(data, "gc", "--delete", "--min-age", "0", "--json").stdout)
    assert first["abandoned_packs"] >= 1 and first["packs_deleted"] >= 1, first
    again = json.loads(_cas(data, "gc", "--delete", "--min-age", "0", "--json").stdout)
    assert again["orphans"] == 0 and again["condemned"] == 0 and again["abandoned_packs"] == 0, again
    after = _cas(data, "verify", "--deep", "--json")
    report = json.loads(after.stdout)
    assert after.returncode == 0 and report["clean"], after.stdout + after.stderr
    assert report["orphans"] == 0 and report["blocks_unreferenced"] == 0
    with Store.open_store(settings) as store:
        rows = pack_rows(store)
        assert not [pid for pid, r in rows.items() if r.state in (PACK_OPEN, PACK_RETIRED)]
        assert pack_files(store) == set(rows)
        # nothing left that GC should reclaim: every pack at least REPACK_BELOW live
        # (headers and footers aside; deletions leave packs that are mostly live as they are)
        for pid, r in rows.items():
            assert r.live_bytes >= payload_bytes(r) * REPACK_BELOW, (pid.hex(), r)
        assert_packs_sound(store)
        check_objects(store)
