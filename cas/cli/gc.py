"""cas gc: reclaim blocks no name relies on; a dry run unless --delete (logic in cas.gc.sweep)."""

from __future__ import annotations

import json

from ..config import parse_duration
from ..gc.progress import tqdm_progress
from ..gc.sweep import collect
from ..store import Store


def register(sub):
    p = sub.add_parser("gc", help="garbage-collect unreferenced blocks (dry run unless --delete)")
    p.add_argument("--delete", action="store_true", help="really condemn and delete (default: dry run)")
    p.add_argument("--min-age", default=None, metavar="DURATION",
                   help="grace before a condemned or unindexed block is deleted, e.g. 0, 90s, 1h "
                        "(default: gc.min_age, 1h)")
    p.add_argument("--wait", default="0", metavar="DURATION",
                   help="wait this long for another gc or verify to finish (default: fail at once)")
    p.add_argument("--force-orphans", action="store_true",
                   help="delete orphans even when they are more than half of the backend (a damaged or "
                        "wrong index looks like that: check with `cas verify` first)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def run(args, settings) -> int:
    min_age = parse_duration(args.min_age) if args.min_age is not None else None
    with Store.open_store(settings, create=False) as store:
        report = collect(store, delete=args.delete, min_age=min_age, progress=tqdm_progress,
                         lock_wait=parse_duration(args.wait), force_orphans=args.force_orphans)
    print(json.dumps(report.to_dict()) if args.json else report.summary(), flush=True)
    return 0
