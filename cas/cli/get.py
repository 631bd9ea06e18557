"""cas get: write BUCKET/KEY to a file or stdout (verified block by block)."""

from __future__ import annotations

import os
import sys

from ..store import Store
from . import split_target


def register(sub):
    p = sub.add_parser("get", help="write BUCKET/KEY to OUT (default: stdout)")
    p.add_argument("target", metavar="BUCKET/KEY")
    p.add_argument("out", nargs="?", default="-")
    return p


def run(args, settings) -> int:
    bucket, key = split_target(args.target)
    with Store.open(settings) as store:
        reader = store.open(bucket, key)
        if args.out == "-":
            out = sys.stdout.buffer
            for part in reader:
                out.write(part)
            out.flush()
            return 0
        tmp = f"{args.out}.cas-partial"
        try:
            with open(tmp, "wb") as f:
                for part in reader:
                    f.write(part)
            os.replace(tmp, args.out)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    return 0
