#!/usr/bin/env python3
"""Listing a bucket of 1M keys: cas's Store.list next to SQLite (indexed table) in the same run.

Seeds N object records (default 1,000,000) under a three-level key layout, then times, for both:
first page of 1,000 keys; a page starting after a key deep in the bucket; a delimiter listing that
groups keys into common prefixes; and a full walk of every key, page by page (keys/s).
Seeding writes the index directly in large transactions (a million acknowledged PUTs would measure
fsync, not listing). Nothing is written to the repository; everything lives in a temp dir.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cas.config import load_settings  # noqa: E402
from cas.store import Store  # noqa: E402


def key_of(i: int) -> str:
    return f"dir{i % 1000:03d}/sub{(i // 1000) % 100:02d}/file-{i:08d}.dat"


def best(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


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
    ap.add_argument("--runs", type=int, default=5)
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
        rows = [
            ("first page (1,000 keys)", best(lambda: store.list("bench", limit=1000), args.runs),
             best(lambda: sqlite_page(db, "", 1000), args.runs), "ms"),
            ("page after a deep key", best(lambda: store.list("bench", start_after=deep, limit=1000), args.runs),
             best(lambda: sqlite_page(db, deep, 1000), args.runs), "ms"),
            ("delimiter '/': 1,000 prefixes", best(lambda: store.list("bench", delimiter="/", limit=1000), args.runs),
             best(lambda: sqlite_delimited(db, 1000), args.runs), "ms"),
        ]
        walk_cas = best(cas_walk, 1)
        walk_sql = best(sql_walk, 1)
        print(f"listing a bucket of {n:,} keys (medians of {args.runs}); baseline: SQLite table, "
              f"PRIMARY KEY (bucket, key), same keys, same run")
        print(f"seeding: cas index {n / seed_cas_s:,.0f} keys/s, SQLite {n / seed_sql_s:,.0f} keys/s")
        print(f"{'operation':34} {'cas':>12} {'SQLite':>12} {'cas/SQLite':>11}")
        for name, c, q, unit in rows:
            print(f"{name:34} {c * 1000:>10.2f}{unit} {q * 1000:>10.2f}{unit} {q / c:>10.2f}x")
        print(f"{'full walk, pages of 1,000':34} {n / walk_cas:>8,.0f} k/s {n / walk_sql:>8,.0f} k/s "
              f"{walk_sql / walk_cas:>10.2f}x")
        store.close()
        db.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
