"""cas user add|list|remove|reset-secret: manage users (name = S3 access key; secret = S3 secret key = password).

Works while the server runs: the index is shared between processes. ``add`` prints the
secret once (generated unless ``--secret`` is given; ``--json`` prints
``{"access_key": ..., "secret_key": ...}``); so does ``reset-secret`` (users brought back by
``cas recover`` have no secret until it gives them one).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from ..store import Store


def register(sub):
    p = sub.add_parser("user", help="add, list or remove users (S3 access keys / WebDAV logins)")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="add a user; prints its secret once")
    add.add_argument("name", help="user name, which is also its S3 access key")
    add.add_argument("--secret", default=None, help="use this secret instead of generating one")
    add.add_argument("--json", action="store_true", help='print {"access_key": ..., "secret_key": ...}')
    ls = actions.add_parser("list", help="list users")
    ls.add_argument("--json", action="store_true", help="print a JSON list")
    rm = actions.add_parser("remove", help="remove a user (its buckets stay)")
    rm.add_argument("name")
    reset = actions.add_parser("reset-secret", help="give a user a new secret (users restored by "
                                                    "`cas recover` have none); prints it once")
    reset.add_argument("name")
    reset.add_argument("--secret", default=None, help="use this secret instead of generating one")
    reset.add_argument("--json", action="store_true", help='print {"access_key": ..., "secret_key": ...}')
    for action_parser in (add, ls, rm, reset):
        _accept_common_options(action_parser)
    return p


def _accept_common_options(parser: argparse.ArgumentParser) -> None:
    """Let ``--data`` etc. follow the action too (``cas user add --data DIR NAME``).

    The framework adds the common options to ``cas user`` itself; here each action parser
    gets the same flags with SUPPRESS defaults, so a flag given before the action is kept.
    """
    from . import _common

    scratch = argparse.ArgumentParser(add_help=False)
    _common(scratch)
    for action in scratch._actions:
        parser.add_argument(*action.option_strings, dest=action.dest, default=argparse.SUPPRESS,
                            help=argparse.SUPPRESS)


def run(args, settings) -> int:
    with Store.open_store(settings, create=False) as store:
        users = store.users
        if args.action in ("add", "reset-secret"):
            secret = (users.add if args.action == "add" else users.reset_secret)(args.name, args.secret)
            if args.json:
                print(json.dumps({"access_key": args.name, "secret_key": secret}))
            else:
                print(f"access key / user: {args.name}\nsecret / password: {secret}")
            return 0
        if args.action == "list":
            root_name = users.root()[0]
            rows = [{"name": root_name, "root": True, "created": None}]
            rows += [{"name": u["name"], "root": False, "created": u["created"]} for u in users.list()]
            if args.json:
                print(json.dumps(rows))
            else:
                for row in rows:
                    when = "-" if row["created"] is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["created"]))
                    print(f"{row['name']}\t{'root' if row['root'] else 'user'}\t{when}")
            return 0
        if args.action == "remove":
            users.remove(args.name)
            print(f"removed user {args.name}", file=sys.stderr)
            return 0
    return 2
