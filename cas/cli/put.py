"""cas put: store a file (or stdin) under BUCKET/KEY, or a directory tree under BUCKET[/PREFIX].

As ``aws s3 cp``: a key ending in ``/`` (or no key) is a folder the file goes into; a
directory is uploaded recursively, keys = prefix + path relative to it with ``/``. Each
stored object prints one ``BUCKET/KEY<TAB>SIZE<TAB>ETAG`` line on stdout; a tree ends with
a summary on stderr. A byte progress bar shows on a terminal only.
"""

from __future__ import annotations

import mimetypes
import os
import sys

from ..errors import InvalidName
from ..store import Store
from . import split_target
from .localfile import file_error, key_for, tree


def register(sub):
    p = sub.add_parser("put", help="store FILE (or - for stdin) as BUCKET/KEY, or a directory under BUCKET[/PREFIX]")
    p.add_argument("file", help="a file, a directory (uploaded recursively) or - for stdin")
    p.add_argument("target", metavar="BUCKET/KEY",
                   help="BUCKET/KEY; BUCKET/DIR/ (or BUCKET) stores FILE as DIR/<its name>")
    p.add_argument("--content-type", default=None)
    return p


class _Counted:
    """A file object that moves a progress bar by the bytes read from it."""

    def __init__(self, f, bar):
        self._f, self._bar = f, bar

    def readinto(self, out) -> int:
        n = self._f.readinto(out)
        self._bar.update(n or 0)
        return n


def _bar(total: int | None):
    from tqdm import tqdm

    return tqdm(total=total, file=sys.stderr, disable=None, leave=False, unit="B", unit_scale=True,
                unit_divisor=1024, dynamic_ncols=True, mininterval=0.2, desc="put")


def _open(path: str):
    try:
        return open(path, "rb")
    except OSError as exc:
        raise file_error(exc, "read", path) from exc


def _put_file(store, bucket: str, key: str, path: str, content_type: str | None, bar) -> int:
    ctype = content_type or mimetypes.guess_type(path)[0]
    with _open(path) as f:
        try:
            info = store.put(bucket, key, _Counted(f, bar), content_type=ctype, user="cli")
        except OSError as exc:  # reading the user's file failed midway (EIO, a vanished mount)
            raise file_error(exc, "read", path) from exc
    print(f"{bucket}/{key}\t{info.size}\t{info.etag}", flush=True)
    return info.size


def run(args, settings) -> int:
    bucket, key = split_target(args.target)
    if args.file == "-":
        if not key or key.endswith("/"):
            raise InvalidName("give a key for stdin: BUCKET/KEY")
        with Store.open_store(settings, create=False) as store:
            info = store.put(bucket, key, sys.stdin.buffer, content_type=args.content_type, user="cli")
        print(f"{bucket}/{key}\t{info.size}\t{info.etag}")
        return 0
    if os.path.isdir(args.file):
        return _put_tree(args, settings, bucket, key)
    key = key_for(key, args.file)
    _open(args.file).close()  # a missing or unreadable file fails before the store is touched
    size = os.path.getsize(args.file) if os.path.isfile(args.file) else None  # a pipe: unknown
    with Store.open_store(settings, create=False) as store, _bar(size) as bar:
        _put_file(store, bucket, key, args.file, args.content_type, bar)
    return 0


def _put_tree(args, settings, bucket: str, prefix: str) -> int:
    files = list(tree(args.file, prefix))
    total = sum(os.path.getsize(path) for path, _ in files)
    count = stored = 0
    with Store.open_store(settings, create=False) as store, _bar(total) as bar:
        store.bucket(bucket)  # a missing bucket fails before the first file
        for path, key in files:
            stored += _put_file(store, bucket, key, path, args.content_type, bar)
            count += 1
    where = f"{bucket}/{prefix.rstrip('/')}/" if prefix else f"{bucket}/"
    print(f"cas put: {count} files, {stored} bytes under {where}", file=sys.stderr)
    return 0
