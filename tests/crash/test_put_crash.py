"""SIGKILL during `cas put`: the name is absent or complete, never partial; the store still works."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from cas.config import load_settings
from cas.errors import ObjectNotFound
from cas.store import Store
from tests.fixtures.core import stream_of

pytestmark = pytest.mark.crash

MiB = 1 << 20


def _cas(*args, env=None):
    return [sys.executable, "-m", "cas.cli", *args]


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("crash") / "big.bin"
    with open(p, "wb") as f:
        for part in stream_of(192 * MiB, seed=77):
            f.write(part)
    return p


def _check_store(data, key, expected_md5):
    """Absent or complete; the store opens, reads and writes afterwards."""
    with Store.open_store(load_settings(data, env={})) as s:
        try:
            info = s.stat("bkt", key)
        except ObjectNotFound:
            complete = False
        else:
            h = hashlib.md5()
            for part in s.open("bkt", key):
                h.update(part)
            assert info.etag == expected_md5 == h.hexdigest(), "a partial object is visible"
            complete = True
        s.put("bkt", f"after-{key}", b"still works")
        assert s.get_bytes("bkt", f"after-{key}") == b"still works"
        return complete


def test_sigkill_at_random_moments(tmp_path, big_file):
    data = tmp_path / "data"
    subprocess.run(_cas("init", "--data", str(data)), check=True)
    subprocess.run(_cas("mb", "--data", str(data), "bkt"), check=True)
    expected = hashlib.md5(big_file.read_bytes()).hexdigest()
    # how long a full put takes here, to spread kills over its whole run
    t0 = time.monotonic()
    subprocess.run(_cas("put", "--data", str(data), str(big_file), "bkt/timing"), check=True,
                   stdout=subprocess.DEVNULL)
    full = time.monotonic() - t0
    rng = random.Random(1234)
    outcomes = []
    for round_ in range(10):
        proc = subprocess.Popen(_cas("put", "--data", str(data), str(big_file), f"bkt/k{round_}"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, full * 1.1))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        outcomes.append(_check_store(data, f"k{round_}", expected))
    assert False in outcomes, "no kill landed before the commit: the test did not test anything"
    _verify_clean(data)


def _verify_clean(data) -> None:
    """`cas verify --deep` finds no damage (orphans of killed writers are garbage, not damage)."""
    proc = subprocess.run(_cas("verify", "--data", str(data), "--deep", "--json"), capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["clean"] and report["findings"] == [] and report["damaged_objects"] == [], report


@pytest.mark.parametrize("point", ["writer.after_pin", "writer.before_commit"])
def test_kill_at_named_points_leaves_no_name(tmp_path, big_file, point):
    data = tmp_path / "data"
    subprocess.run(_cas("init", "--data", str(data)), check=True)
    subprocess.run(_cas("mb", "--data", str(data), "bkt"), check=True)
    env = dict(os.environ, CAS_TESTONLY_CRASH_AT=point)
    proc = subprocess.run(_cas("put", "--data", str(data), str(big_file), "bkt/k"), env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert proc.returncode == -signal.SIGKILL
    assert _check_store(data, "k", hashlib.md5(big_file.read_bytes()).hexdigest()) is False
    _verify_clean(data)
    with Store.open_store(load_settings(data, env={})) as s:
        with s.index.read() as t:
            assert list(t.iter_writers()), "the dead writer's lease is left for GC to expire"
