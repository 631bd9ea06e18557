"""Metadata indexes behind one protocol (``base.Index``) and their factory."""

from __future__ import annotations

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


__all__ = ["BlockRow", "Index", "IndexTxn", "open_index"]
