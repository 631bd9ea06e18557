"""cas get: write BUCKET/KEY to a file or stdout (verified block by block).

OUT may be a directory (or end with ``/``): the object is written as OUT/<last part of KEY>,
as ``aws s3 cp`` does.
"""

from __future__ import annotations

import os
import stat

from ..store import Store
from . import split_target
from .localfile import file_error, out_path


def register(sub):
    p = sub.add_parser("get", help="write BUCKET/KEY to OUT (default: stdout)")
    p.add_argument("target", metavar="BUCKET/KEY")
    p.add_argument("out", nargs="?", default="-", help="a file, a directory, or - for stdout (default)")
    return p


def run(args, settings) -> int:
    bucket, key = split_target(args.target)
    out = args.out if args.out == "-" else out_path(args.out, key)
    with Store.open_store(settings, create=False) as store:
        reader = store.open(bucket, key)
        if out == "-" or _is_special(out):
            # stdout, /dev/null, a pipe: write in place (renaming over a device would replace it)
            try:
                with (open(out, "wb") if out != "-" else os.fdopen(os.dup(1), "wb")) as f:
                    for part in reader:
                        f.write(part)
            except BrokenPipeError:
                raise
            except OSError as exc:
                raise file_error(exc, "write", "stdout" if out == "-" else out) from exc
            return 0
        # a regular file appears whole or not at all
        tmp = f"{out}.cas-partial"
        try:
            with open(tmp, "wb") as f:
                for part in reader:
                    f.write(part)
            os.replace(tmp, out)
        except OSError as exc:
            _discard(tmp)
            raise file_error(exc, "write", out) from exc
        except BaseException:
            _discard(tmp)
            raise
    return 0


def _discard(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


def _is_special(path: str) -> bool:
    try:
        return not stat.S_ISREG(os.stat(path).st_mode)
    except FileNotFoundError:
        return False
