"""cas ls: list buckets, or the keys of a bucket under a prefix."""

from __future__ import annotations

import time

from ..store import Store
from . import split_target


def register(sub):
    p = sub.add_parser("ls", help="list buckets, or keys in BUCKET[/PREFIX]")
    p.add_argument("target", nargs="?", default="", metavar="BUCKET[/PREFIX]")
    p.add_argument("-r", "--recursive", action="store_true", help="do not group keys by '/'")
    return p


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def run(args, settings) -> int:
    bucket, prefix = split_target(args.target)
    with Store.open_store(settings, create=False) as store:
        if not bucket:
            for b in store.buckets():
                print(f"{_when(b.created)}  {b.name}")
            return 0
        after = ""
        while True:
            page = store.list(bucket, prefix=prefix, delimiter="" if args.recursive else "/",
                              start_after=after, limit=1000)
            for p in page.common_prefixes:
                print(f"{'':19}  {'DIR':>12}  {p}")
            for o in page.entries:
                print(f"{_when(o.mtime)}  {o.size:>12}  {o.key}")
            if not page.truncated:
                return 0
            after = page.next_start_after
