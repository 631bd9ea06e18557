"""cas put: store a file (or stdin) under BUCKET/KEY."""

from __future__ import annotations

import mimetypes
import sys

from ..errors import InvalidName
from ..store import Store
from . import split_target


def register(sub):
    p = sub.add_parser("put", help="store FILE (or - for stdin) as BUCKET/KEY")
    p.add_argument("file")
    p.add_argument("target", metavar="BUCKET/KEY")
    p.add_argument("--content-type", default=None)
    return p


def run(args, settings) -> int:
    bucket, key = split_target(args.target)
    if not key:
        raise InvalidName("give the target as BUCKET/KEY")
    ctype = args.content_type or (mimetypes.guess_type(args.file)[0] if args.file != "-" else None)
    with Store.open(settings) as store:
        if args.file == "-":
            info = store.put(bucket, key, sys.stdin.buffer, content_type=ctype, user="cli")
        else:
            with open(args.file, "rb") as f:
                info = store.put(bucket, key, f, content_type=ctype, user="cli")
    print(f"{bucket}/{key}\t{info.size}\t{info.etag}")
    return 0
