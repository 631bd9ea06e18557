#!/usr/bin/env python3
"""Listing a bucket of 1M keys: cas's Store.list next to SQLite (indexed table) in the same run.

Seeds N object records (default 1,000,000) under a three-level key layout, then times, for both:
first page of 1,000 keys; a page starting after a key deep in the bucket; a delimiter listing that
groups keys into common prefixes; and a full walk of every key, page by page (keys/s).
Seeding writes the index directly in large transactions (a million acknowledged PUTs would measure
fsync, not listing); both are synced to disk before timing. Every figure is the median (min–max) of
``--runs`` runs (default 3); in each run cas and SQLite take turns going first (run 1: cas, run 2:
SQLite, ...). Nothing is written to the repository; everything lives in a temp dir.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from common import Samples, import_cas, runs_arg, runs_label, sync_inputs, text_table, turns

import_cas()

from cas.config import load_settings  # noqa: E402
from cas.store import Store  # noqa: E402


def key_of(i: int) -> str:
    return f"dir{i % 1000:03d}/sub{(i // 1000) % 100:02d}/file-{i:08d}.dat"


def paired(cas_fn, sql_fn, runs: int) -> tuple[Samples, Samples]:
    """Seconds of ``cas_fn`` and ``sql_fn`` over ``runs`` runs, the two taking turns going first."""
    times = {"cas": Samples(), "sqlite": Samples()}
    fns = {"cas": cas_fn, "sqlite": sql_fn}
    for run in range(runs):
        for side in turns(["cas", "sqlite"], run):
            t = time.perf_counter()
            fns[side]()
            times[side].add(time.perf_counter() - t)
    return times["cas"], times["sqlite"]


def seed_cas(store: Store, n: int) -> None:
    store.create_bucket("bench")
    info = store.put("bench", "seed", b"x" * 100)
    rec = {"size": 100, "etag": info.etag, "ct": "application/octet-stream", "mtime": info.mtime,
           "owner": "root", "seq": 0, "m": info.manifest_id.hex()}
    step = 50_000
    for lo in range(0, n, step):
        with store.index.write() as t:
            for i in range(lo, min(n, lo + step)):
                t.put_object("bench", key_of(i), rec)
            t.add_counter("objects", min(n, lo + step) - lo)


def seed_sqlite(db: sqlite3.Connection, n: int) -> None:
    db.execute("CREATE TABLE objects (bucket TEXT, key BLOB, rec TEXT, PRIMARY KEY (bucket, key)) WITHOUT ROWID")
    rec = '{"size":100,"etag":"x","ct":"application/octet-stream","mtime":0}'
    db.executemany("INSERT INTO objects VALUES ('bench', ?, ?)", ((key_of(i).encode(), rec) for i in range(n)))
    db.commit()


def sqlite_page(db, after: str, limit: int):
    """One page, decoded to (key, record) as a listing needs it (cas decodes its records too)."""
    rows = db.execute("SELECT key, rec FROM objects WHERE bucket='bench' AND key > ? ORDER BY key LIMIT ?",
                      (after.encode(), limit)).fetchall()
    return [(k.decode(), json.loads(r)) for k, r in rows]


def sqlite_delimited(db, limit: int):
    """Common prefixes the way an SQL index does it: seek past each group, one query per group."""
    out, after = [], b""
    while len(out) < limit:
        row = db.execute("SELECT key FROM objects WHERE bucket='bench' AND key > ? ORDER BY key LIMIT 1",
                         (after,)).fetchone()
        if row is None:
            break
        group = row[0][: row[0].index(b"/") + 1]
        out.append(group)
        after = group + b"\xff"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--runs", type=runs_arg, default=3, help="runs; figures are medians (default 3)")
    args = ap.parse_args()
    n = args.keys
    with tempfile.TemporaryDirectory(prefix="cas-bench-list-") as tmp:
        store = Store.open_store(load_settings(Path(tmp) / "cas", env={}))
        t = time.perf_counter()
        seed_cas(store, n)
        seed_cas_s = time.perf_counter() - t
        db = sqlite3.connect(Path(tmp) / "baseline.sqlite")
        t = time.perf_counter()
        seed_sqlite(db, n)
        seed_sql_s = time.perf_counter() - t
        deep = key_of(n * 3 // 4)

        def cas_walk():
            count, after = 0, ""
            while True:
                page = store.list("bench", start_after=after, limit=1000)
                count += len(page.entries)
                if not page.truncated:
                    return count
                after = page.next_start_after

        def sql_walk():
            count, after = 0, ""
            while True:
                rows = sqlite_page(db, after, 1000)
                count += len(rows)
                if len(rows) < 1000:
                    return count
                after = rows[-1][0]

        assert cas_walk() == n + 1 and sql_walk() == n
        sync_inputs()
        rows = [
            ("first page (1,000 keys)", *paired(lambda: store.list("bench", limit=1000),
                                                lambda: sqlite_page(db, "", 1000), args.runs)),
            ("page after a deep key", *paired(lambda: store.list("bench", start_after=deep, limit=1000),
                                              lambda: sqlite_page(db, deep, 1000), args.runs)),
            ("delimiter '/': 1,000 prefixes", *paired(lambda: store.list("bench", delimiter="/", limit=1000),
                                                      lambda: sqlite_delimited(db, 1000), args.runs)),
        ]
        walk_cas, walk_sql = paired(cas_walk, sql_walk, args.runs)
        print(f"listing a bucket of {n:,} keys, {runs_label(args.runs)}, cas and SQLite taking turns; baseline: "
              f"SQLite table, PRIMARY KEY (bucket, key), same keys, same run")
        print(f"seeding: cas index {n / seed_cas_s:,.0f} keys/s, SQLite {n / seed_sql_s:,.0f} keys/s")
        table = []
        for name, c, q in rows:
            ms_c, ms_q = Samples(v * 1000 for v in c.values), Samples(v * 1000 for v in q.values)
            table.append([name, ms_c.cell(".2f"), ms_q.cell(".2f"), "ms", f"{q.median / c.median:.2f}x"])
        kc, kq = Samples(n / v for v in walk_cas.values), Samples(n / v for v in walk_sql.values)
        table.append(["full walk, pages of 1,000", kc.cell(",.0f"), kq.cell(",.0f"), "keys/s",
                      f"{walk_sql.median / walk_cas.median:.2f}x"])
        print(text_table(["operation", "cas", "SQLite", "unit", "cas/SQLite"], table))
        print("(cells: median (min–max) over runs; cas/SQLite: SQLite's median time / cas's, "
              "> 1 means cas is faster)")
        store.close()
        db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
