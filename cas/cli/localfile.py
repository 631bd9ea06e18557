"""The local side of ``cas put`` and ``cas get``: files a user names, as aws cli treats them.

- A target key that is empty or ends with ``/`` names a folder: a file goes *into* it
  (``f.bin`` + ``bkt/dir/`` → key ``dir/f.bin``), never under the key ``dir/`` itself.
- A local path that is a directory (or ends with ``/``) receives a download as
  ``DIR/<last part of the key>``.
- An ``OSError`` on a user's file becomes the ``CasError`` of the same meaning here, once,
  so the command line prints one line: missing → ``NotFound``, permission → ``AccessDenied``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from ..errors import AccessDenied, CasError, NotFound


def file_error(exc: OSError, verb: str, path: str | os.PathLike) -> CasError:
    """The CasError for an OSError on a local file (``verb`` is 'read' or 'write')."""
    reason = (exc.strerror or str(exc)).lower()
    message = f"cannot {verb} {os.fsdecode(path)}: {reason}"
    if isinstance(exc, FileNotFoundError):
        return NotFound(message)
    if isinstance(exc, PermissionError):
        return AccessDenied(message)
    return CasError(message)


def key_for(key: str, path: str) -> str:
    """The key a single file is stored under: ``key``, or ``key + basename`` when it names a folder."""
    if key and not key.endswith("/"):
        return key
    return key + os.path.basename(os.path.normpath(path))


def tree(root: str, prefix: str) -> Iterator[tuple[str, str]]:
    """(path, key) of every regular file under ``root``, sorted, keys = prefix/relative path with '/'.

    Symbolic links to files are followed, links to directories are not (no cycles).
    """
    if prefix and not prefix.endswith("/"):
        prefix += "/"

    def fail(exc: OSError) -> None:
        raise file_error(exc, "read", exc.filename or root) from exc

    for top, dirs, files in os.walk(root, onerror=fail):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(top, name)
            if not os.path.isfile(path):
                continue  # a socket, a fifo or a dangling link: not a file to upload
            rel = os.path.relpath(path, root).replace(os.sep, "/")
            yield path, prefix + rel


def out_path(out: str, key: str) -> str:
    """Where ``cas get KEY OUT`` writes: OUT, or OUT/<last part of KEY> when OUT is a directory."""
    if out.endswith("/") or os.path.isdir(out):
        return os.path.join(out, key.rstrip("/").rsplit("/", 1)[-1])
    return out
