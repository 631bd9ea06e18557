"""A writer's process identity: GC may drop the pins of a writer whose process is certainly dead."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys

import pytest

from cas.blocklife import PROCESS_OWNER, owner_is_dead

pytestmark = pytest.mark.unit


def test_own_process_is_alive_and_unknown_owners_are_left_to_the_lease():
    assert PROCESS_OWNER, "this platform should give a process identity"
    assert not owner_is_dead(PROCESS_OWNER)
    assert not owner_is_dead(b"")
    assert not owner_is_dead(b"garbage")


def test_exited_process_is_dead_only_in_the_same_boot_and_namespace():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait(timeout=30)
    pid, pidns, boot = struct.unpack(">IQ16s", PROCESS_OWNER)
    assert owner_is_dead(struct.pack(">IQ16s", child.pid, pidns, boot))
    assert not owner_is_dead(struct.pack(">IQ16s", child.pid, pidns, bytes(16)))  # another boot
    assert not owner_is_dead(struct.pack(">IQ16s", child.pid, pidns + 1, boot))  # another pid namespace


def test_gc_reclaims_a_killed_writers_blocks_at_once(tmp_path):
    data = str(tmp_path / "d")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(3 << 20))

    def cas(*args, **kw):
        return subprocess.run([sys.executable, "-m", "cas.cli", *args, "--data", data], capture_output=True,
                              text=True, timeout=300, **kw)

    assert cas("init").returncode == 0
    assert cas("mb", "bkt").returncode == 0
    killed = cas("put", str(big), "bkt/k", env=dict(os.environ, CAS_TESTONLY_CRASH_AT="writer.before_commit"))
    assert killed.returncode == -signal.SIGKILL
    report = json.loads(cas("gc", "--delete", "--min-age", "0", "--json").stdout)
    # its blocks were flushed into its open pack but never located: the abandoned pack goes whole
    assert report["dead_writers"] == 1 and report["abandoned_packs"] == 1 and report["packs_deleted"] == 1
    after = json.loads(cas("verify", "--json").stdout)
    assert after["clean"] and after["orphans"] == 0
    assert json.loads(cas("stats", "--json").stdout)["packs"] == 0
