"""KvSpace: the small key-value space (WebDAV locks and bucket properties, run reports) inside one
index transaction.

``Store.kv_write()`` hands out a space over one write txn: whatever is read and written through it
is one atomic step for every thread, process and node sharing the index (write txns are
serialisable, DESIGN §7's compare-and-set for kv): a WebDAV lock decision sees the locks in force
and records the new one with no other decision in between; a read-modify-write of a bucket's
properties loses no concurrent change. ``Store.kv_read()`` hands out one over a snapshot read txn
(``writable`` False: a write fails). A space is valid only inside its ``with`` block, in the thread
that opened it, and its txn must stay short like any other.
"""

from __future__ import annotations

from .records import BucketInfo


class KvSpace:
    """Namespaced keys → bytes inside one txn (see the module docstring)."""

    __slots__ = ("_t", "writable")

    def __init__(self, t, *, writable: bool):
        self._t = t
        self.writable = writable

    def get(self, ns: str, key: str) -> bytes | None:
        return self._t.kv_get(ns, key)

    def put(self, ns: str, key: str, value: bytes) -> None:
        self._t.kv_put(ns, key, value)

    def delete(self, ns: str, key: str) -> bool:
        return self._t.kv_delete(ns, key)

    def scan(self, ns: str, prefix: str = "") -> list[tuple[str, bytes]]:
        """The entries of ``ns`` under ``prefix``, in key order."""
        return list(self._t.kv_scan(ns, prefix))

    def bucket(self, name: str) -> BucketInfo | None:
        """Bucket ``name`` as of this txn (None: there is none)."""
        rec = self._t.get_bucket(name)
        return None if rec is None else BucketInfo.from_record(name, rec)
