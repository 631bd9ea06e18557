"""`cas serve` ships the metadata log: --meta-interval 0 puts each commit's record in the backend
before the answer, a long interval shows the lag in /metrics and /readyz and ships at shutdown."""

from __future__ import annotations

import json

import pytest

from cas.blocks.packs.files import LocalPackFiles
from cas.meta import objects

pytestmark = pytest.mark.integration


def _backend_records(data_dir) -> list[dict]:
    files = LocalPackFiles(data_dir / "blocks")
    return [r for name in files.list_meta(objects.LOG_PREFIX) for r in objects.decode(files.get_meta(name), name)]


def _metric(srv, token: str, name: str) -> float | None:
    _, _, body = srv.request("GET", "/metrics", token=token)
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_interval_zero_ships_before_the_answer(start_web_server, tmp_path):
    data = tmp_path / "data"
    srv = start_web_server(data, extra_args=["--meta-interval", "0"])
    token = srv.login()
    srv.json("POST", "/api/buckets", {"name": "logged"}, token=token, expect=201)
    assert srv.request("PUT", "/api/buckets/logged/object?key=a.txt", b"hello", token=token)[0] == 201
    recs = _backend_records(data)  # read while the server runs: nothing waits for shutdown
    assert ("put_object", "a.txt") in [(r["op"], r.get("key")) for r in recs]
    status, _, body = srv.request("GET", "/readyz")
    lag = json.loads(body)["meta_log"]
    assert status == 200 and lag["unshipped_records"] == 0 and lag["lag_seconds"] == 0 and lag["interval"] == 0
    assert _metric(srv, token, "cas_meta_log_unshipped_records") == 0
    assert _metric(srv, token, "cas_meta_log_lag_seconds") == 0


def test_a_long_interval_shows_lag_and_ships_at_shutdown(start_web_server, tmp_path):
    data = tmp_path / "data"
    srv = start_web_server(data, env={"CAS_META_INTERVAL": "1h"})
    token = srv.login()
    srv.json("POST", "/api/buckets", {"name": "lagging"}, token=token, expect=201)
    assert srv.request("PUT", "/api/buckets/lagging/object?key=b.txt", b"later", token=token)[0] == 201
    unshipped = _metric(srv, token, "cas_meta_log_unshipped_records")
    assert unshipped is not None and unshipped >= 2
    assert _metric(srv, token, "cas_meta_log_lag_seconds") > 0
    lag = json.loads(srv.request("GET", "/readyz")[2])["meta_log"]
    assert lag["unshipped_records"] == unshipped and lag["lag_seconds"] > 0
    assert srv.stop() == 0
    recs = _backend_records(data)
    assert ("put_object", "b.txt") in [(r["op"], r.get("key")) for r in recs]
    # the first ship also wrote a snapshot of every name
    assert any(objects.parse_snap_name(n)[1] == "done" for n in LocalPackFiles(data / "blocks").list_meta("snap/"))
