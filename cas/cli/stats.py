"""cas stats: objects, logical and stored bytes, dedup and compression ratios."""

from __future__ import annotations

import json

from ..store import Store


def register(sub):
    p = sub.add_parser("stats", help="logical bytes, stored bytes, dedup and compression ratios")
    p.add_argument("--json", action="store_true", help="print JSON")
    return p


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


def run(args, settings) -> int:
    with Store.open_store(settings, create=False) as store:
        s = store.stats()
    if args.json:
        print(json.dumps(s))
        return 0
    print(f"objects            {s['objects']}")
    print(f"logical bytes      {s['logical_bytes']} ({_human(s['logical_bytes'])})")
    print(f"unique blocks      {s['unique_blocks']}")
    print(f"stored bytes       {s['stored_bytes']} ({_human(s['stored_bytes'])})")
    print(f"dedup ratio        {s['dedup_ratio']:.2f}x")
    print(f"compression ratio  {s['compression_ratio']:.2f}x")
    print(f"index bytes        {s['index_bytes']} ({_human(s['index_bytes'])}, "
          f"{s['index_bytes_per_object']} per object)")
    return 0
