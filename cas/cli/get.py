"""cas get: write BUCKET/KEY to a file or stdout (verified block by block)."""

from __future__ import annotations

import os
import stat

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
        if args.out == "-" or _is_special(args.out):
            # stdout, /dev/null, a pipe: write in place (renaming over a device would replace it)
            with (open(args.out, "wb") if args.out != "-" else os.fdopen(os.dup(1), "wb")) as out:
                for part in reader:
                    out.write(part)
            return 0
        # a regular file appears whole or not at all
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


def _is_special(path: str) -> bool:
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        return False
