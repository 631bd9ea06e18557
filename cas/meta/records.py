"""Records of the metadata log and of snapshots: one per change of a durable name.

Every write txn that changes a bucket, an object's name record, a user or a durable small-state
entry appends one record per change (``cas.meta.log``); a snapshot is the same records for
every such row as of one log position. Replaying a snapshot and then the log after it with
``apply`` rebuilds those tables (``cas recover``). Records are JSON-able dicts::

    {"n": 17, "op": "put_object", "bucket": "b", "key": "k", "rec": {...object record...}}
    {"n": 18, "op": "delete_object", "bucket": "b", "key": "k"}
    {"n": .., "op": "put_bucket", "name": "b", "rec": {...}}      / "delete_bucket"
    {"n": .., "op": "put_user", "name": "u", "rec": {...}}        / "delete_user"  (no secret: below)
    {"n": .., "op": "kv_put", "ns": "davprops", "key": "b", "value": "<base64>"} / "kv_delete"

Every record also carries ``time`` (when it was logged: the log's lag) and ``seq`` (the commit
sequence number as of the change: ``cas recover`` restarts sequence numbers above it, so journal
followers never see numbers go back). ``n`` is the record's log position (``counter("mlog")`` hands them out inside the txn; a
snapshot's records carry the snapshot's position). Object records are ``records.object_record``
layouts (they name their manifest by id; the manifest itself is in a pack). **User secrets never
reach the backend**: ``put_user`` records drop the secret, and a recovered user has none until
``cas user reset-secret`` gives it one (docs/operations.md). WebDAV locks, GC reports and other
transient small state are not logged (``LOGGED_KV``).
"""

from __future__ import annotations

import base64

from ..store.records import BUCKET_KEYED_KV

#: small-state namespaces that are part of a store's content (others are transient)
LOGGED_KV = frozenset(BUCKET_KEYED_KV)
#: fields of a user record that never leave the index
SECRET_FIELDS = ("secret",)

OPS = frozenset({"put_object", "delete_object", "put_bucket", "delete_bucket", "put_user", "delete_user",
                 "kv_put", "kv_delete"})


def put_object(n: int, bucket: str, key: str, rec: dict) -> dict:
    return {"n": n, "op": "put_object", "bucket": bucket, "key": key, "rec": rec}


def delete_object(n: int, bucket: str, key: str) -> dict:
    return {"n": n, "op": "delete_object", "bucket": bucket, "key": key}


def put_bucket(n: int, name: str, rec: dict) -> dict:
    return {"n": n, "op": "put_bucket", "name": name, "rec": rec}


def delete_bucket(n: int, name: str) -> dict:
    return {"n": n, "op": "delete_bucket", "name": name}


def put_user(n: int, name: str, rec: dict) -> dict:
    return {"n": n, "op": "put_user", "name": name, "rec": {k: v for k, v in rec.items() if k not in SECRET_FIELDS}}


def delete_user(n: int, name: str) -> dict:
    return {"n": n, "op": "delete_user", "name": name}


def kv_put(n: int, ns: str, key: str, value: bytes) -> dict:
    return {"n": n, "op": "kv_put", "ns": ns, "key": key, "value": base64.b64encode(value).decode()}


def kv_delete(n: int, ns: str, key: str) -> dict:
    return {"n": n, "op": "kv_delete", "ns": ns, "key": key}


def apply(t, rec: dict) -> None:
    """Replay one record into write txn ``t`` (idempotent: replaying twice changes nothing).

    A recovered user keeps its record but not its secret (``SECRET_FIELDS``): an existing
    secret in ``t`` is kept, so replaying into an index that still has one does not lose it."""
    op = rec.get("op")
    if op == "put_object":
        t.put_object(rec["bucket"], rec["key"], rec["rec"])
    elif op == "delete_object":
        t.delete_object(rec["bucket"], rec["key"])
    elif op == "put_bucket":
        t.put_bucket(rec["name"], rec["rec"])
    elif op == "delete_bucket":
        t.delete_bucket(rec["name"])
    elif op == "put_user":
        old = t.get_user(rec["name"]) or {}
        t.put_user(rec["name"], {**rec["rec"], **{k: old[k] for k in SECRET_FIELDS if k in old}})
    elif op == "delete_user":
        t.delete_user(rec["name"])
    elif op == "kv_put":
        t.kv_put(rec["ns"], rec["key"], base64.b64decode(rec["value"]))
    elif op == "kv_delete":
        t.kv_delete(rec["ns"], rec["key"])
    else:
        raise ValueError(f"unknown metadata log record {op!r}")
