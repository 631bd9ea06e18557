"""cas mb: make a bucket."""

from __future__ import annotations

from ..errors import UserNotFound
from ..store import Store


def register(sub):
    p = sub.add_parser("mb", help="make a bucket")
    p.add_argument("bucket")
    p.add_argument("--owner", default=None, help="owning user (default: root)")
    return p


def run(args, settings) -> int:
    with Store.open_store(settings, create=False) as store:
        owner = args.owner or store.users.root()[0]
        if store.users.secret(owner) is None:  # a typo would make a bucket nobody but root can use
            raise UserNotFound(f"user {owner!r} does not exist")
        store.create_bucket(args.bucket.strip("/"), owner=owner)
    return 0
