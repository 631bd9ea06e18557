"""cas verify: check that every name's bytes are there; exit 0 only when clean (logic in cas.gc.verify)."""

from __future__ import annotations

import json

from ..config import parse_duration, parse_size
from ..gc.progress import tqdm_progress
from ..gc.verify import verify
from ..store import Store

EXIT_FINDINGS = 1


def register(sub):
    p = sub.add_parser("verify", help="consistency report; non-zero exit when anything is wrong")
    p.add_argument("--deep", action="store_true", help="read and re-hash every block")
    p.add_argument("--repair", action="store_true",
                   help="apply the fixes that need no guessing, after reporting (see docs)")
    p.add_argument("--rate-limit", default=None, metavar="SIZE",
                   help="with --deep, read at most SIZE bytes per second (e.g. 50M)")
    p.add_argument("--wait", default="1h", metavar="DURATION",
                   help="wait this long for a running gc to finish (default 1h)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    return p


def run(args, settings) -> int:
    rate = parse_size(args.rate_limit) if args.rate_limit else None
    with Store.open_store(settings, create=False) as store:
        report = verify(store, deep=args.deep, repair=args.repair, rate_limit=rate, progress=tqdm_progress,
                        lock_wait=parse_duration(args.wait))
    if args.json:
        print(json.dumps(report.to_dict()), flush=True)
    else:
        for finding in report.findings:
            print(finding)
        if report.damaged_objects:
            print("damaged objects: " + ", ".join(report.damaged_objects))
        print(report.summary(), flush=True)
    return 0 if report.clean else EXIT_FINDINGS
