"""Metadata indexes behind one protocol (``base.Index``) and their factory."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from .base import Index, IndexTxn
from .schema import BlockRow


#: LMDB: where ``cas recover`` builds a new index (beside ``DATA/index``), and what the index it
#: replaced is renamed to (+ a time stamp); PostgreSQL: schemas of the same database (pg_index)
STAGED_DIR = "index.recover"
OLD_PREFIX = "index.old-"


def open_index(settings) -> Index:
    """The index of the store in ``settings``: the embedded default is LMDB in ``DATA/index``;
    with ``index.url`` a PostgreSQL database."""
    if settings.index.remote:
        from .pg_index import PgIndex

        return PgIndex(settings.index.url, pool_size=settings.index.pool_size)
    from .lmdb_index import LmdbIndex

    return LmdbIndex(settings.index_dir, map_size=settings.index.map_size)


def index_exists(settings) -> bool:
    """Whether the store in ``settings`` has an index to replace (looked at, not opened: a damaged
    LMDB file counts; a PostgreSQL database counts when its tables hold something)."""
    if settings.index.remote:
        from .pg_index import has_index

        return has_index(settings.index.url)
    return (settings.index_dir / "data.mdb").exists()


def open_staged_index(settings) -> Index:
    """A new, empty index beside the store's, for ``cas recover`` to build in (whatever an
    interrupted run left there is dropped first): ``DATA/index.recover``, or the schema
    ``cas_recover`` of the PostgreSQL database."""
    if settings.index.remote:
        from .pg_index import STAGED_SCHEMA, PgIndex, drop_schema

        drop_schema(settings.index.url, STAGED_SCHEMA)
        return PgIndex(settings.index.url, pool_size=settings.index.pool_size, schema=STAGED_SCHEMA)
    from .lmdb_index import LmdbIndex

    staged = settings.data_dir / STAGED_DIR
    shutil.rmtree(staged, ignore_errors=True)
    return LmdbIndex(staged, map_size=settings.index.map_size)


def adopt_staged_index(settings, *, stamp: str, between=lambda: None) -> str | None:
    """Put the index ``open_staged_index`` built (and closed) in the place of the store's; the
    store's index, when it had one, is kept aside: returns where (a directory, or a schema of the
    PostgreSQL database), else None. PostgreSQL swaps in one transaction; LMDB renames the old
    directory, calls ``between`` (a crash point), then renames the new one into place."""
    if settings.index.remote:
        from .pg_index import STAGED_SCHEMA, adopt_schema

        kept = adopt_schema(settings.index.url, STAGED_SCHEMA, stamp)
        return None if kept is None else f"schema {kept} of {settings.index_where}"
    current = Path(settings.index_dir)
    kept = None
    if current.exists():
        old = current.with_name(OLD_PREFIX + stamp)
        n = 1
        while old.exists():
            old = current.with_name(f"{OLD_PREFIX}{stamp}.{n}")
            n += 1
        os.rename(current, old)
        kept = str(old)
        between()
    os.rename(settings.data_dir / STAGED_DIR, current)
    fd = os.open(current.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return kept


@contextlib.contextmanager
def lock_unopened(settings, name: str, *, wait: float = 0.0) -> Iterator[None]:
    """The lock ``open_index(settings).lock(name)`` takes, for a command that has not opened the index
    (``cas recover`` replaces an LMDB index that may not open: its locks are files beside it; a
    PostgreSQL index is opened for the lock's lifetime)."""
    if not settings.index.remote:
        from .lmdb_index import named_lock

        with named_lock(settings.index_dir.parent, name, wait=wait):
            yield
        return
    index = open_index(settings)
    try:
        with index.lock(name, wait=wait):
            yield
    finally:
        index.close()


__all__ = ["BlockRow", "Index", "IndexTxn", "adopt_staged_index", "index_exists", "lock_unopened", "open_index",
           "open_staged_index"]
