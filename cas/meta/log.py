"""LoggedIndex: every change of a durable name also appends a metadata log record, in the same txn.

``LoggedIndex(index)`` wraps any ``Index``. Its write txns intercept the changes that make up a
store's content — ``put_bucket``/``delete_bucket``, ``put_object``/``delete_object``,
``put_user``/``delete_user`` and ``kv_put``/``kv_delete`` of the ``records.LOGGED_KV`` namespaces
— and append one record (``cas.meta.records``) per change to the index's ``mlog`` table, at the
position ``add_counter("mlog", 1)`` hands out inside that same txn. So a record exists exactly
when its change committed (an aborted txn leaves neither), positions are dense and in commit
order, and ``counter("mlog")`` is the last position handed out. A delete that deletes nothing
logs nothing. Everything else is forwarded untouched; ``read()`` hands out the inner index's
txns as they are (no cost on read paths).

``MetaShipper`` (``shipper.py``) moves the records to the backend and trims them from ``mlog``.
``after_commit`` (set by the shipper when ``meta.interval`` is 0) is called after a write txn
that logged records has committed, with the last position it logged: it returns once those
records are in the backend (or raises), which is how a synchronous store acknowledges a commit
only once its record is durable in the backend.

Records carry ``time`` (the commit's wall clock) besides the fields of ``records.py``: the
shipper's lag figure is the age of the oldest unshipped record. ``records.apply`` ignores it.

Thread-safety: as the wrapped index; a ``LoggedTxn`` belongs to the thread that opened it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from . import records

_LOGGED_KV = records.LOGGED_KV


class LoggedTxn:
    """A write txn of the inner index whose durable-name changes also append log records."""

    def __init__(self, txn, clock: Callable[[], float]):
        self._t = txn
        self._clock = clock
        self.last = 0  # the last log position this txn handed out (0: none)

    def __getattr__(self, name: str):
        # everything not intercepted is the inner txn's own method; kept on the instance so that
        # a second call of the same method does not come through here again
        value = getattr(self._t, name)
        self.__dict__[name] = value
        return value

    def _log(self, make, *args) -> None:
        n = self._t.add_counter("mlog", 1)
        rec = make(n, *args)
        rec["time"] = self._clock()
        # the commit sequence as of this change: recover restarts sequence numbers above it
        rec["seq"] = self._t.last_seq()
        self._t.put_mlog(n, rec)
        self.last = n

    # -- buckets
    def put_bucket(self, name: str, record: dict) -> None:
        self._t.put_bucket(name, record)
        self._log(records.put_bucket, name, record)

    def delete_bucket(self, name: str) -> bool:
        done = self._t.delete_bucket(name)
        if done:
            self._log(records.delete_bucket, name)
        return done

    # -- objects
    def put_object(self, bucket: str, key: str, record: dict) -> None:
        self._t.put_object(bucket, key, record)
        self._log(records.put_object, bucket, key, record)

    def delete_object(self, bucket: str, key: str) -> bool:
        done = self._t.delete_object(bucket, key)
        if done:
            self._log(records.delete_object, bucket, key)
        return done

    # -- users (records.put_user leaves the secret out)
    def put_user(self, name: str, record: dict) -> None:
        self._t.put_user(name, record)
        self._log(records.put_user, name, record)

    def delete_user(self, name: str) -> bool:
        done = self._t.delete_user(name)
        if done:
            self._log(records.delete_user, name)
        return done

    # -- small state: only the namespaces that are part of the store's content
    def kv_put(self, ns: str, key: str, value: bytes) -> None:
        self._t.kv_put(ns, key, value)
        if ns in _LOGGED_KV:
            self._log(records.kv_put, ns, key, bytes(value))

    def kv_delete(self, ns: str, key: str) -> bool:
        done = self._t.kv_delete(ns, key)
        if done and ns in _LOGGED_KV:
            self._log(records.kv_delete, ns, key)
        return done


class LoggedIndex:
    """An ``Index`` whose write txns log every durable-name change (see the module docstring)."""

    def __init__(self, index, *, clock: Callable[[], float] = time.time):
        self.inner = index.inner if isinstance(index, LoggedIndex) else index
        self.clock = clock
        #: called with the last logged position after a commit that logged (``MetaShipper``)
        self.after_commit: Callable[[int], None] | None = None
        #: off for a store whose blocks are not in packs (nowhere to ship records to) or with meta.log off
        self.enabled = True

    def read(self, *, snapshot: bool = True):
        return self.inner.read(snapshot=snapshot)

    @contextlib.contextmanager
    def write(self, *, durable: bool = True) -> Iterator:
        if not self.enabled:
            with self.inner.write(durable=durable) as t:
                yield t
            return
        with self.inner.write(durable=durable) as t:
            lt = LoggedTxn(t, self.clock)
            yield lt
        if lt.last and self.after_commit is not None:
            self.after_commit(lt.last)

    def disk_usage(self) -> int:
        return self.inner.disk_usage()

    def other_processes(self) -> list[int]:
        return self.inner.other_processes()

    def lock(self, name: str, *, wait: float = 0.0):
        return self.inner.lock(name, wait=wait)

    def watch(self, callback) -> bool:
        return self.inner.watch(callback)

    def close(self) -> None:
        self.inner.close()
