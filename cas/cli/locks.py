"""cas locks list|break: see and remove WebDAV locks (logic in cas.protocols.webdav.lock).

Works while the server runs: locks live in the shared index and the server caches none,
so a broken lock stops blocking writes at the server's next request. PATH is a WebDAV
path below /dav, as ``list`` prints it (``/bucket/dir``).
"""

from __future__ import annotations

import json
import sys
import time

from ..protocols.webdav.lock import break_locks, list_locks
from ..store import Store
from .user import _accept_common_options


def register(sub):
    p = sub.add_parser("locks", help="list or break WebDAV locks")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = actions.add_parser("list", help="list the live WebDAV locks")
    ls.add_argument("--json", action="store_true", help="print a JSON list")
    br = actions.add_parser("break", help="remove locks: by token, by --path (and below), or --all")
    br.add_argument("tokens", nargs="*", metavar="TOKEN", help="lock tokens as `cas locks list` prints them")
    br.add_argument("--path", default=None, help="break every lock on PATH or below it, e.g. /bucket/dir")
    br.add_argument("--all", action="store_true", help="break every lock")
    br.add_argument("--json", action="store_true", help="print the removed locks as JSON")
    for action_parser in (ls, br):
        _accept_common_options(action_parser)
    return p


def run(args, settings) -> int:
    if args.action == "break" and (bool(args.tokens) + (args.path is not None) + bool(args.all)) != 1:
        print("cas locks break: give lock tokens, or --path PATH, or --all (one of them)", file=sys.stderr)
        return 2
    with Store.open_store(settings, create=False) as store:
        if args.action == "list":
            rows = list_locks(store)
            if args.json:
                print(json.dumps(rows))
            else:
                now = time.time()
                for r in rows:
                    print(f"{r['token']}\t{r['path']}\t{r['principal']}\t{r['scope']}\tdepth={r['depth']}"
                          f"\texpires in {max(0, int(r['expire'] - now))}s")
            return 0
        removed, missing = break_locks(store, tokens=args.tokens, path=args.path, everything=args.all)
    if args.json:
        print(json.dumps(removed))
    else:
        for r in removed:
            print(f"broke {r['token']}\t{r['path']}\t{r['principal']}")
        print(f"{len(removed)} lock(s) broken", file=sys.stderr)
    for token in missing:
        print(f"cas locks break: no live lock {token}", file=sys.stderr)
    return 1 if missing else 0
