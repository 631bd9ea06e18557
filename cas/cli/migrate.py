"""cas migrate: move a store from before packs (one file or object per block) into packs, offline
(logic in cas.gc.migrate). Exit 0 when done (or nothing to do), 1 when corrupt blocks were left behind."""

from __future__ import annotations

import json

from ..config import parse_duration
from ..gc.migrate import BATCH, migrate
from ..gc.progress import tqdm_progress

EXIT_LEFT_BEHIND = 1


def register(sub):
    p = sub.add_parser("migrate", help="move a store of one file per block (format 1) into packs; "
                                       "offline: stop the server first; safe to re-run after an interruption")
    p.add_argument("--batch", type=int, default=BATCH, metavar="N",
                   help=f"blocks moved between syncs; their old copies are deleted after each (default {BATCH})")
    p.add_argument("--wait", default="0", metavar="DURATION",
                   help="wait this long for a running gc or verify to finish (default: fail at once)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    return p


def run(args, settings) -> int:
    report = migrate(settings, batch=args.batch, progress=tqdm_progress, lock_wait=parse_duration(args.wait))
    print(json.dumps(report.to_dict()) if args.json else report.summary(), flush=True)
    return EXIT_LEFT_BEHIND if report.blocks_corrupt or report.manifests_damaged else 0
