"""Run records: what the last GC and verify runs did, kept in the store's kv space.

``/metrics`` (``cas_gc_runs_total``, ``cas_gc_findings``, ``cas_verify_*``) reads them. Only one
GC or verify runs at a time (the GC lock), so the read-modify-write below does not race.
"""

from __future__ import annotations

import json
import time

NAMESPACE = "reports"


def record_run(store, kind: str, findings: int, **details) -> None:
    """Count one finished ``kind`` run ("gc" or "verify") and keep its figures."""
    raw = store.kv_get(NAMESPACE, kind)
    runs = json.loads(raw).get("runs", 0) if raw else 0
    record = {"runs": runs + 1, "findings": findings, "time": time.time(), **details}
    store.kv_put(NAMESPACE, kind, json.dumps(record).encode())
