"""WebDAV lock storage in the index (``store.kv_*``), so locks survive a restart.

Implements the storage interface wsgidav's ``LockManager`` drives (the one
``wsgidav.lock_man.lock_storage.LockStorageDict`` documents). Two key spaces:

- ``davlock``:    token -> JSON lock record (root, type, scope, depth, owner,
                  principal, timeout, expire, token)
- ``davlockurl``: lock root + ``\\0`` + token -> b"" — the index by URL, so the
                  locks on one URL, or below it, are a prefix scan.
- ``davlocklong``: the same index for roots too long for an index key (LMDB
                  keys are at most 511 bytes): SHA-256 of the root + ``\\0`` +
                  token -> root. Such locks are rare; a child scan reads all.

Lock roots are wsgidav "ref URLs": the quoted path below ``/dav`` without a
trailing slash (``/bucket/dir/file``). Bucket names are global, so a URL names
one resource whoever asks.

Lifetime: a lock lives at most :data:`LOCK_TIMEOUT_MAX` (one hour) from its
creation or last refresh, whatever ``Timeout`` the client asks for
(``Infinite`` and no header included). wsgidav has no setting for this (its
own storages allow four weeks); clients that hold locks longer (Windows,
Office, davfs2) refresh them well within an hour. A record written with a
longer lifetime (by an older cas) is cut to the cap when first read.
Expired locks are dropped lazily when read, as in wsgidav's own storages,
and stop blocking at once.

Nothing is cached in memory: every decision reads the index, so a lock broken
by another process (``cas locks break``) or taken on another node sharing the
index stops or starts blocking this server's next request. :func:`list_locks`
and :func:`break_locks` are the administration behind that command.
Each method is one short kv transaction (``cas.store.kv``), and a LOCK is
decided in one write txn (``StoreLockManager``: the check of the locks in
force and the new lock's record together), so two nodes never both grant
conflicting locks. Safe to call from several request threads.

Locks bind WebDAV clients only: S3 requests never consult them (a lock is an
advisory agreement between WebDAV clients, as in most DAV servers backed by a
store that other protocols also write).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from urllib.parse import quote, unquote

from defusedxml import DefusedXmlException
from defusedxml import ElementTree as DefusedET
from wsgidav.lock_man.lock_manager import (
    LockManager,
    generate_lock_token,
    normalize_lock_root,
    validate_lock,
)


log = logging.getLogger(__name__)

NS_LOCK = "davlock"
NS_URL = "davlockurl"
NS_LONG = "davlocklong"
_SEP = "\0"
_MAX_KEY = 400  # bytes of an index key we allow ourselves (LMDB: 511 with the namespace)


def _is_long(root: str) -> bool:
    return len(root.encode()) > _MAX_KEY


def _long_id(root: str) -> str:
    return hashlib.sha256(root.encode()).hexdigest()


#: the longest a lock lives without a refresh (seconds); also the default
LOCK_TIMEOUT_MAX = 3600


def _owner_element(owner: bytes) -> bytes:
    """The LOCK body's ``<owner>`` as one well-formed element.

    wsgidav serialises the element with its tail, so text after ``</D:owner>`` (``...</D:owner>x``)
    would be stored and later break every lockdiscovery answer with a 500; the tail is dropped. An
    owner that still does not parse is kept as text (escaped) rather than as XML.
    """
    if not owner:
        return owner
    end = owner.rfind(b">")
    candidate = owner[: end + 1] if end >= 0 else owner
    try:
        DefusedET.fromstring(candidate)
        return candidate
    except (DefusedET.ParseError, ValueError, DefusedXmlException):
        text = owner.decode("utf-8", "replace").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return f'<D:owner xmlns:D="DAV:">{text}</D:owner>'.encode()


class StoreLockStorage:
    """wsgidav lock storage persisted in the store's kv space (``cas.store.kv``).

    Every method reads and writes through one kv space: a snapshot for what only reads, a write
    txn for what changes locks. While ``transaction()`` is open in a thread, every call from that
    thread goes into its one write txn (``StoreLockManager`` decides a LOCK that way). What a read
    finds to tidy (an expired lock, a lock cut to the cap, an index entry without its lock) is
    written in a write txn of its own afterwards, never while the snapshot is open.
    """

    LOCK_TIME_OUT_DEFAULT = LOCK_TIMEOUT_MAX
    LOCK_TIME_OUT_MAX = LOCK_TIMEOUT_MAX

    def __init__(self, store, *, clock: Callable[[], float] = time.time):
        self._store = store
        self._clock = clock
        self._local = threading.local()  # .kv: the space of an open ``transaction()`` of this thread

    def __repr__(self) -> str:
        return "StoreLockStorage()"

    # --- lifecycle (the store outlives us; nothing to open or close) -------
    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def cleanup(self) -> None:
        """Drop expired locks (optional; reads drop them lazily anyway)."""
        with self.transaction() as kv:
            for token, _ in kv.scan(NS_LOCK):
                self._get(kv, token)

    def clear(self) -> None:
        with self.transaction() as kv:
            for token, _ in kv.scan(NS_LOCK):
                self._delete(kv, token)

    @contextlib.contextmanager
    def transaction(self) -> Iterator:
        """One write txn for every call of this thread until the block ends (nested: the same)."""
        with self._space(write=True) as kv:
            yield kv

    @contextlib.contextmanager
    def _space(self, *, write: bool) -> Iterator:
        cur = getattr(self._local, "kv", None)
        if cur is not None and (cur.writable or not write):
            yield cur
            return
        with (self._store.kv_write() if write else self._store.kv_read()) as kv:
            self._local.kv = kv
            try:
                yield kv
            finally:
                self._local.kv = cur

    # --- records -------------------------------------------------------------
    @staticmethod
    def _encode(lock: dict) -> bytes:
        rec = dict(lock)
        rec["owner"] = lock["owner"].decode("utf-8", "surrogateescape")
        return json.dumps(rec, separators=(",", ":")).encode()

    @staticmethod
    def _decode(raw: bytes) -> dict:
        rec = json.loads(raw)
        rec["owner"] = rec["owner"].encode("utf-8", "surrogateescape")
        return rec

    def _expired(self, lock: dict) -> bool:
        expire = float(lock["expire"])
        return 0 <= expire < self._clock()

    @staticmethod
    def _bucket_of(kv, root: str):
        """The BucketInfo a lock root lies in; None for ``/`` or when the bucket is gone."""
        name = root.lstrip("/").split("/", 1)[0]
        return kv.bucket(urllib.parse.unquote(name)) if name else None

    def _outlived(self, kv, lock: dict) -> bool:
        """Whether the lock was taken on an earlier bucket of the same name (deleted since)."""
        if lock["root"].strip("/") == "":
            return False
        bucket = self._bucket_of(kv, lock["root"])
        taken = float(lock["expire"]) - float(lock["timeout"])
        if "bucket_id" not in lock:  # a lock from before bucket ids
            return bucket is None or taken < bucket.created
        if not lock["bucket_id"]:  # taken on a name whose bucket did not exist yet (lock, then MKCOL)
            return bucket is not None and bucket.created < taken
        return bucket is None or lock["bucket_id"] != bucket.id

    def _get(self, kv, token: str) -> tuple[dict | None, bool]:
        """The lock of ``token`` in ``kv`` (None if unknown, expired or outlived its bucket), and
        whether its record needs a write that a read-only ``kv`` could not make (dropped, or cut to
        the cap)."""
        raw = kv.get(NS_LOCK, token)
        if raw is None:
            return None, False
        lock = self._decode(raw)
        if self._expired(lock) or self._outlived(kv, lock):
            if not kv.writable:
                return None, True
            log.debug("lock expired or outlived its bucket: %s on %s", token[-8:], lock["root"])
            self._delete(kv, token)
            return None, False
        latest = self._clock() + self.LOCK_TIME_OUT_MAX
        if float(lock["expire"]) < 0 or float(lock["expire"]) > latest:
            # written under an older, longer cap: cut it to this one
            lock["expire"] = latest
            lock["timeout"] = self.LOCK_TIME_OUT_MAX
            if not kv.writable:
                return lock, True
            kv.put(NS_LOCK, token, self._encode(lock))
        return lock, False

    def _tidy(self, tokens: list[str], dangling: list[tuple[str, str]]) -> None:
        """What reads found to write: ``tokens`` to drop or cut (re-judged now), index entries
        whose lock is gone."""
        if not tokens and not dangling:
            return
        with self._space(write=True) as kv:
            for token in tokens:
                self._get(kv, token)
            for ns, key in dangling:
                kv.delete(ns, key)

    def _delete(self, kv, token: str) -> bool:
        raw = kv.get(NS_LOCK, token)
        if raw is None:
            return False
        root = self._decode(raw)["root"]
        if _is_long(root):
            kv.delete(NS_LONG, _long_id(root) + _SEP + token)
        else:
            kv.delete(NS_URL, root + _SEP + token)
        kv.delete(NS_LOCK, token)
        return True

    # --- interface -----------------------------------------------------------
    def get(self, token: str) -> dict | None:
        """The lock of ``token``, or None if unknown or expired (then dropped)."""
        with self._space(write=False) as kv:
            lock, fix = self._get(kv, token)
        if fix:
            self._tidy([token], [])
        return lock

    def create(self, path: str, lock: dict) -> dict:
        """Store a new direct lock on ``path``; fills in root, expire and token."""
        assert lock.get("token") is None and lock.get("expire") is None
        root = normalize_lock_root(path)
        lock["root"] = root
        timeout = lock.get("timeout")
        timeout = self.LOCK_TIME_OUT_DEFAULT if timeout is None else float(timeout)
        if timeout < 0 or timeout > self.LOCK_TIME_OUT_MAX:
            timeout = self.LOCK_TIME_OUT_MAX
        lock["timeout"] = timeout
        lock["expire"] = self._clock() + timeout
        lock["owner"] = _owner_element(lock.get("owner") or b"")
        validate_lock(lock)
        token = generate_lock_token()
        lock["token"] = token
        with self._space(write=True) as kv:
            bucket = self._bucket_of(kv, root)
            lock["bucket_id"] = "" if bucket is None else bucket.id
            kv.put(NS_LOCK, token, self._encode(lock))
            if _is_long(root):
                kv.put(NS_LONG, _long_id(root) + _SEP + token, root.encode())
            else:
                kv.put(NS_URL, root + _SEP + token, b"")
        return lock

    def refresh(self, token: str, *, timeout: float) -> dict:
        with self._space(write=True) as kv:
            lock, _ = self._get(kv, token)
            if lock is None:
                raise ValueError("lock does not exist")
            if timeout is None:
                timeout = self.LOCK_TIME_OUT_DEFAULT
            if timeout < 0 or timeout > self.LOCK_TIME_OUT_MAX:
                timeout = self.LOCK_TIME_OUT_MAX
            lock["timeout"] = timeout
            lock["expire"] = self._clock() + timeout
            kv.put(NS_LOCK, token, self._encode(lock))
        return lock

    def delete(self, token: str) -> bool:
        with self._space(write=True) as kv:
            return self._delete(kv, token)

    def get_lock_list(self, path, *, include_root, include_children, token_only):
        """Valid direct locks on ``path`` and/or below it."""
        assert include_root or include_children
        root = normalize_lock_root(path)
        child_prefix = "/" if root == "/" else root + "/"
        found, fixes, dangling = [], [], []
        with self._space(write=False) as kv:
            candidates: list[tuple[str, str, str]] = []  # (namespace, index key, token)
            if include_root and not _is_long(root):
                for key, _ in kv.scan(NS_URL, root + _SEP):
                    candidates.append((NS_URL, key, key.rpartition(_SEP)[2]))
            if include_children:
                for key, _ in kv.scan(NS_URL, child_prefix):
                    lock_root, _, token = key.rpartition(_SEP)
                    if lock_root != root:
                        candidates.append((NS_URL, key, token))
            if include_children or _is_long(root):
                # long roots: exact matches by hash, children by reading them all
                scan = "" if include_children else _long_id(root) + _SEP
                for key, value in kv.scan(NS_LONG, scan):
                    lock_root = value.decode()
                    if (include_root and lock_root == root) or (
                        include_children and lock_root.startswith(child_prefix) and lock_root != root
                    ):
                        candidates.append((NS_LONG, key, key.rpartition(_SEP)[2]))
            seen = set()
            for ns, key, token in candidates:
                if token in seen:
                    continue
                seen.add(token)
                lock, fix = self._get(kv, token)
                if fix:
                    fixes.append(token)
                if lock is None:
                    if not fix:  # dangling index entry (its lock is gone): drop it
                        if kv.writable:
                            kv.delete(ns, key)
                        else:
                            dangling.append((ns, key))
                    continue
                found.append(token if token_only else lock)
        self._tidy(fixes, dangling)
        return found


class StoreLockManager(LockManager):
    """wsgidav's ``LockManager`` whose decisions are atomic in the index.

    ``acquire`` checks the locks in force and records the new one in one write txn of the index,
    so two nodes (or two processes, or a ``cas locks`` beside the server) never both grant
    conflicting locks; removing the locks of a deleted or moved tree is one txn too. wsgidav's own
    read-write lock still orders this process's threads, and is taken before the txn (its readers
    may write a txn of their own while tidying, never the other way round).
    """

    def acquire(self, **kwargs):
        self._lock.acquire_write()
        try:
            with self.storage.transaction():
                return super().acquire(**kwargs)
        finally:
            self._lock.release()

    def remove_all_locks_from_url(self, url, *, recursive=False):
        self._lock.acquire_write()
        try:
            with self.storage.transaction():
                super().remove_all_locks_from_url(url, recursive=recursive)
        finally:
            self._lock.release()


# ---------------------------------------------------------------------------------------
# administration (``cas locks``): works on the index directly, while the server runs
# ---------------------------------------------------------------------------------------


def lock_path(path: str) -> str:
    """The lock root (a quoted WebDAV path below /dav) of a path typed by an administrator:
    ``/bucket/dir``, ``bucket/dir/`` or ``/bucket/a%20b`` all name their resource."""
    return normalize_lock_root(quote(unquote(path or "/")))


def list_locks(store) -> list[dict]:
    """Every live lock, sorted by root, as JSON-able records (expired ones are dropped)."""
    storage = StoreLockStorage(store)
    locks = storage.get_lock_list("/", include_root=True, include_children=True, token_only=False)
    return sorted((_public(lock) for lock in locks), key=lambda r: (r["path"], r["token"]))


def break_locks(store, *, tokens: list[str] | None = None, path: str | None = None,
                everything: bool = False) -> tuple[list[dict], list[str]]:
    """Remove locks: the given ``tokens``, those on ``path`` or below it, or all of them.

    Returns (the locks removed, the tokens that named no live lock). A removed lock stops
    blocking the server's next request (nothing is cached).
    """
    storage = StoreLockStorage(store)
    if everything:
        path = "/"
    chosen: list[dict] = []
    missing: list[str] = []
    for token in tokens or []:
        token = token.strip().strip("<>")
        lock = storage.get(token)
        if lock is None:
            missing.append(token)
        else:
            chosen.append(lock)
    if path is not None:
        chosen += storage.get_lock_list(lock_path(path), include_root=True, include_children=True,
                                        token_only=False)
    removed = []
    for lock in chosen:
        if storage.delete(lock["token"]):
            log.info("broke lock %s on %s held by %s", lock["token"][-8:], lock["root"], lock["principal"])
            removed.append(_public(lock))
    return removed, missing


def _public(lock: dict) -> dict:
    return {
        "token": lock["token"],
        "path": unquote(lock["root"]),
        "principal": lock["principal"],
        "scope": lock["scope"],
        "depth": lock["depth"],
        "owner": lock["owner"].decode("utf-8", "replace"),
        "expire": float(lock["expire"]),
    }
