"""cas rb: remove an empty bucket."""

from __future__ import annotations

from ..store import Store


def register(sub):
    p = sub.add_parser("rb", help="remove an empty bucket")
    p.add_argument("bucket")
    return p


def run(args, settings) -> int:
    with Store.open_store(settings, create=False) as store:
        store.delete_bucket(args.bucket.strip("/"), user="cli")
    return 0
