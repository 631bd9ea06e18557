"""cas events: print the journal (every committed mutation), optionally following new ones.

Reads the store's index directly, so it works while ``cas serve`` runs (LMDB allows readers in
other processes); ``--follow`` polls for commits made by other processes. The journal is what
``GET /api/events`` serves to sync clients.
"""

from __future__ import annotations

import json
import logging
import sys
import time

from ..store import Store

log = logging.getLogger(__name__)

FOLLOW_POLL = 1.0
PAGE = 1000


def register(sub):
    p = sub.add_parser("events", help="print the journal of changes (seq, time, user, op, bucket, key, size, etag)")
    p.add_argument("--after", type=int, default=0, metavar="SEQ", help="only events after this sequence number")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="stop after N events")
    p.add_argument("--bucket", default=None, help="only events of this bucket")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events as they happen")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    return p


def _line(ev, as_json: bool) -> str:
    if as_json:
        return json.dumps(ev.to_dict())
    when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ev.time)) + f".{int(ev.time % 1 * 1000):03d}Z"
    name = f"{ev.bucket}/{ev.key}" if ev.key else ev.bucket
    return f"{ev.seq:>8} {when} {ev.user or '-':<12} {ev.op:<13} {name} {ev.size} {ev.etag or '-'}"


def run(args, settings) -> int:
    printed = 0
    cursor = max(0, args.after)

    def visible(ev) -> bool:
        return args.bucket is None or ev.bucket == args.bucket

    told = []

    def waiting(now: bool) -> None:
        if now and not told:  # once: a follower (or a test) can tell when it is caught up
            told.append(True)
            log.info("caught up at seq %d; waiting for new events", cursor)

    with Store.open_store(settings, create=False) as store:
        while True:
            sys.stdout.flush()
            batch, cursor = store.follow_events(cursor, limit=PAGE, visible=visible, scan_cap=sys.maxsize,
                                                wait=FOLLOW_POLL if args.follow else 0.0, on_wait=waiting)
            for ev in batch:
                print(_line(ev, args.json), flush=args.follow)
                printed += 1
                if args.limit is not None and printed >= args.limit:
                    return 0
            if not batch and not args.follow and cursor >= store.last_seq():
                return 0
