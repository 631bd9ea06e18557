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
by another process (``cas locks break``, the LMDB index is shared) stops
blocking the running server's next request. :func:`list_locks` and
:func:`break_locks` are the administration behind that command.
Every method is one or a few short kv calls; the LockManager serialises
lock decisions with its own lock, and each kv call is atomic, so this class is
safe to call from several request threads.

Locks bind WebDAV clients only: S3 requests never consult them (a lock is an
advisory agreement between WebDAV clients, as in most DAV servers backed by a
store that other protocols also write).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import urllib.parse
from collections.abc import Callable
from urllib.parse import quote, unquote

from defusedxml import DefusedXmlException
from defusedxml import ElementTree as DefusedET
from wsgidav.lock_man.lock_manager import (
    generate_lock_token,
    normalize_lock_root,
    validate_lock,
)

from ...errors import NotFound

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
    """wsgidav lock storage persisted through ``store.kv_*``."""

    LOCK_TIME_OUT_DEFAULT = LOCK_TIMEOUT_MAX
    LOCK_TIME_OUT_MAX = LOCK_TIMEOUT_MAX

    def __init__(self, store, *, clock: Callable[[], float] = time.time):
        self._store = store
        self._clock = clock

    def __repr__(self) -> str:
        return "StoreLockStorage()"

    # --- lifecycle (the store outlives us; nothing to open or close) -------
    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def cleanup(self) -> None:
        """Drop expired locks (optional; reads drop them lazily anyway)."""
        for token, _ in list(self._store.kv_scan(NS_LOCK)):
            self.get(token)

    def clear(self) -> None:
        for token, _ in list(self._store.kv_scan(NS_LOCK)):
            self.delete(token)

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

    def _bucket_of(self, root: str):
        """The BucketInfo a lock root lies in; None for ``/`` or when the bucket is gone."""
        name = root.lstrip("/").split("/", 1)[0]
        if not name:
            return None
        try:
            return self._store.bucket(urllib.parse.unquote(name))
        except NotFound:
            return None

    def _outlived(self, lock: dict) -> bool:
        """Whether the lock was taken on an earlier bucket of the same name (deleted since)."""
        if lock["root"].strip("/") == "":
            return False
        bucket = self._bucket_of(lock["root"])
        taken = float(lock["expire"]) - float(lock["timeout"])
        if "bucket_id" not in lock:  # a lock from before bucket ids
            return bucket is None or taken < bucket.created
        if not lock["bucket_id"]:  # taken on a name whose bucket did not exist yet (lock, then MKCOL)
            return bucket is not None and bucket.created < taken
        return bucket is None or lock["bucket_id"] != bucket.id

    # --- interface -----------------------------------------------------------
    def get(self, token: str) -> dict | None:
        """The lock of ``token``, or None if unknown or expired (then dropped)."""
        raw = self._store.kv_get(NS_LOCK, token)
        if raw is None:
            return None
        lock = self._decode(raw)
        if self._expired(lock) or self._outlived(lock):
            log.debug("lock expired or outlived its bucket: %s on %s", token[-8:], lock["root"])
            self.delete(token)
            return None
        latest = self._clock() + self.LOCK_TIME_OUT_MAX
        if float(lock["expire"]) < 0 or float(lock["expire"]) > latest:
            # written under an older, longer cap: cut it to this one
            lock["expire"] = latest
            lock["timeout"] = self.LOCK_TIME_OUT_MAX
            self._store.kv_put(NS_LOCK, token, self._encode(lock))
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
        bucket = self._bucket_of(root)
        lock["bucket_id"] = "" if bucket is None else bucket.id
        token = generate_lock_token()
        lock["token"] = token
        self._store.kv_put(NS_LOCK, token, self._encode(lock))
        if _is_long(root):
            self._store.kv_put(NS_LONG, _long_id(root) + _SEP + token, root.encode())
        else:
            self._store.kv_put(NS_URL, root + _SEP + token, b"")
        return lock

    def refresh(self, token: str, *, timeout: float) -> dict:
        lock = self.get(token)
        if lock is None:
            raise ValueError("lock does not exist")
        if timeout is None:
            timeout = self.LOCK_TIME_OUT_DEFAULT
        if timeout < 0 or timeout > self.LOCK_TIME_OUT_MAX:
            timeout = self.LOCK_TIME_OUT_MAX
        lock["timeout"] = timeout
        lock["expire"] = self._clock() + timeout
        self._store.kv_put(NS_LOCK, token, self._encode(lock))
        return lock

    def delete(self, token: str) -> bool:
        raw = self._store.kv_get(NS_LOCK, token)
        if raw is None:
            return False
        root = self._decode(raw)["root"]
        if _is_long(root):
            self._store.kv_delete(NS_LONG, _long_id(root) + _SEP + token)
        else:
            self._store.kv_delete(NS_URL, root + _SEP + token)
        self._store.kv_delete(NS_LOCK, token)
        return True

    def get_lock_list(self, path, *, include_root, include_children, token_only):
        """Valid direct locks on ``path`` and/or below it."""
        assert include_root or include_children
        root = normalize_lock_root(path)
        child_prefix = "/" if root == "/" else root + "/"
        candidates: list[tuple[str, str, str]] = []  # (namespace, index key, token)
        if include_root and not _is_long(root):
            for key, _ in self._store.kv_scan(NS_URL, root + _SEP):
                candidates.append((NS_URL, key, key.rpartition(_SEP)[2]))
        if include_children:
            for key, _ in self._store.kv_scan(NS_URL, child_prefix):
                lock_root, _, token = key.rpartition(_SEP)
                if lock_root != root:
                    candidates.append((NS_URL, key, token))
        if include_children or _is_long(root):
            # long roots: exact matches by hash, children by reading them all
            scan = "" if include_children else _long_id(root) + _SEP
            for key, value in self._store.kv_scan(NS_LONG, scan):
                lock_root = value.decode()
                if (include_root and lock_root == root) or (
                    include_children and lock_root.startswith(child_prefix) and lock_root != root
                ):
                    candidates.append((NS_LONG, key, key.rpartition(_SEP)[2]))
        found = []
        seen = set()
        for ns, key, token in candidates:
            if token in seen:
                continue
            seen.add(token)
            lock = self.get(token)
            if lock is None:
                # dangling index entry (lock gone or expired): drop it
                self._store.kv_delete(ns, key)
                continue
            found.append(token if token_only else lock)
        return found


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
