"""Metadata indexes behind one protocol (``base.Index``) and their factory."""

from __future__ import annotations

from .base import Index, IndexTxn
from .schema import BlockRow


def open_index(settings, path=None) -> Index:
    """The index of the store in ``settings`` (the embedded default: LMDB in ``DATA/index``; in
    ``path`` instead when given: ``cas recover`` builds a new one beside it)."""
    from .lmdb_index import LmdbIndex

    return LmdbIndex(path or settings.index_dir, map_size=settings.index.map_size)


def lock_unopened(settings, name: str, *, wait: float = 0.0):
    """The lock ``open_index(settings).lock(name)`` takes, without opening the index (``cas recover``
    replaces one that may not open): the LMDB index's locks are files beside it."""
    from .lmdb_index import named_lock

    return named_lock(settings.index_dir.parent, name, wait=wait)


__all__ = ["BlockRow", "Index", "IndexTxn", "lock_unopened", "open_index"]
