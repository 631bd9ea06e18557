"""Metadata indexes behind one protocol (``base.Index``) and their factory."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from .base import Index, IndexTxn
from .schema import BlockRow


def open_index(settings, path=None) -> Index:
    """The index of the store in ``settings``: the embedded default is LMDB in ``DATA/index``
    (in ``path`` instead when given: ``cas recover`` builds a new one beside it); with
    ``index.url`` a PostgreSQL database (``path`` then names the table prefix recover builds in)."""
    if settings.index.remote:
        from .pg_index import PgIndex

        return PgIndex(settings.index.url, pool_size=settings.index.pool_size,
                       **({"prefix": path} if path is not None else {}))
    from .lmdb_index import LmdbIndex

    return LmdbIndex(path or settings.index_dir, map_size=settings.index.map_size)


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


__all__ = ["BlockRow", "Index", "IndexTxn", "lock_unopened", "open_index"]
