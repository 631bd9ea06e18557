"""cas recover: rebuild DATA/index from the backend (packs, store.json, metadata log); logic in
cas.gc.recover. Offline: refuses while a server has the index open. Exit 0 when everything
found was recovered, 1 when names were skipped or packs could not be read (the report says which)."""

from __future__ import annotations

import json

from ..config import parse_duration
from ..gc.progress import tqdm_progress
from ..gc.recover import recover

EXIT_INCOMPLETE = 1


def register(sub):
    p = sub.add_parser("recover", help="rebuild the index (names, manifests, block table) from the backend: "
                                       "pack footers, manifests in packs, metadata snapshot and log; offline")
    p.add_argument("--wait", default="0", metavar="DURATION",
                   help="wait this long for a running gc or verify to finish (default: fail at once)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def run(args, settings) -> int:
    report = recover(settings, progress=tqdm_progress, lock_wait=parse_duration(args.wait))
    print(json.dumps(report.to_dict()) if args.json else report.summary(), flush=True)
    return EXIT_INCOMPLETE if report.names_skipped or report.packs_unreadable else 0
