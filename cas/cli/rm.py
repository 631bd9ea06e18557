"""cas rm: delete BUCKET/KEY (its blocks are reclaimed later by cas gc)."""

from __future__ import annotations

from ..errors import InvalidName
from ..store import Store
from . import split_target


def register(sub):
    p = sub.add_parser("rm", help="delete BUCKET/KEY")
    p.add_argument("target", metavar="BUCKET/KEY")
    return p


def run(args, settings) -> int:
    bucket, key = split_target(args.target)
    if not key:
        raise InvalidName("give the object as BUCKET/KEY (use cas rb to remove a bucket)")
    with Store.open_store(settings, create=False) as store:
        store.delete(bucket, key, user="cli")
    return 0
