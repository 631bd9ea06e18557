"""Settings precedence (TOML file < CAS_* environment < flags, ``--config``), ``/readyz``,
``--gc-interval`` and SIGTERM while uploads are in flight — against real ``cas serve`` processes."""

from __future__ import annotations

import http.client
import json
import signal
import socket
import threading
import time

import pytest

from cas.config import Settings, load_settings
from cas.errors import ConfigError
from cas.gc.verify import verify
from cas.store import Store
from tests.fixtures.web import ROOT_PASSWORD, ROOT_USER

pytestmark = pytest.mark.integration


# -- precedence ------------------------------------------------------------------------------

@pytest.mark.unit
def test_file_then_environment_then_flags(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "cas.toml").write_text('[server]\nthreads = 4\n[gc]\nmin_age = "2h"\npin_lease = "5m"\n'
                                   '[auth]\nallow_anonymous = false\n')
    env = {"CAS_GC_MIN_AGE": "30m", "CAS_ALLOW_ANONYMOUS": "1"}
    s = load_settings(data, env=env)
    assert (s.server.threads, s.gc.min_age, s.gc.pin_lease, s.auth.allow_anonymous) == (4, 1800.0, 300.0, True)
    s = load_settings(data, {"gc": {"min_age": "10s"}, "server": {"threads": "12"}}, env=env)
    assert (s.server.threads, s.gc.min_age, s.auth.allow_anonymous) == (12, 10.0, True)
    # --config FILE replaces DATA/cas.toml (it is not merged with it)
    other = tmp_path / "other.toml"
    other.write_text('[gc]\npin_lease = "1m"\n')
    s = load_settings(data, env={}, config_file=other)
    defaults = Settings()
    assert (s.server.threads, s.gc.pin_lease, s.gc.min_age) == (defaults.server.threads, 60.0, defaults.gc.min_age)


@pytest.mark.unit
@pytest.mark.parametrize("text, message", [
    ("[gc\nmin_age = 1", "cannot read"),
    ("[nosuch]\nx = 1\n", "unknown settings section"),
    ("[gc]\nmin_agee = 1\n", "unknown setting gc.min_agee"),
])
def test_bad_settings_files_are_config_errors(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(tmp_path / "data", env={}, config_file=path)


@pytest.mark.unit
def test_the_index_url_comes_from_file_environment_or_flag_and_is_never_printed_with_its_password(tmp_path):
    from cas.cli import build_parser, settings_from

    data = tmp_path / "data"
    data.mkdir()
    assert load_settings(data, env={}).index.remote is False
    assert load_settings(data, env={}).index_where == str(data / "index")
    (data / "cas.toml").write_text('[index]\nurl = "postgresql://a:pw1@db1:5432/cas"\npool_size = 4\n')
    s = load_settings(data, env={})
    assert (s.index.url, s.index.pool_size, s.index.remote) == ("postgresql://a:pw1@db1:5432/cas", 4, True)
    s = load_settings(data, env={"CAS_INDEX": "postgres://b:pw2@db2/cas"})
    assert s.index.url == "postgres://b:pw2@db2/cas" and s.index_where == "postgres://b:***@db2/cas"
    args = build_parser().parse_args(["ls", "--data", str(data), "--index", "postgresql://c:s3cr3t@db3:6432/x"])
    s = settings_from(args)
    assert s.index.url == "postgresql://c:s3cr3t@db3:6432/x"
    assert "s3cr3t" not in s.index_where and s.index_where == "postgresql://c:***@db3:6432/x"
    with pytest.raises(ConfigError, match="not an index URL") as err:
        load_settings(data, env={"CAS_INDEX": "mysql://u:hidden@h/db"})
    assert "hidden" not in str(err.value)
    with pytest.raises(ConfigError, match="pool_size"):
        load_settings(data, {"index": {"pool_size": "0"}}, env={})


def _anonymous_status(server) -> int:
    return server.request("GET", "/api/buckets")[0]


def test_serve_takes_file_then_environment_then_flags(start_web_server, tmp_path):
    config = tmp_path / "elsewhere.toml"
    config.write_text("[auth]\nallow_anonymous = true\n")
    srv = start_web_server(tmp_path / "d1", extra_args=["--config", str(config)])
    assert _anonymous_status(srv) == 200  # from the file named by --config
    srv.stop()
    srv = start_web_server(tmp_path / "d1", extra_args=["--config", str(config)],
                           env={"CAS_ALLOW_ANONYMOUS": "false"})
    assert _anonymous_status(srv) == 401  # the environment beats the file
    srv.stop()
    srv = start_web_server(tmp_path / "d1", extra_args=["--config", str(config), "--anonymous"],
                           env={"CAS_ALLOW_ANONYMOUS": "false"})
    assert _anonymous_status(srv) == 200  # the flag beats both
    srv.stop()


# -- readiness -------------------------------------------------------------------------------

def test_readyz_reports_a_missing_block_directory(start_web_server, tmp_path):
    srv = start_web_server(tmp_path / "data")
    status, _, body = srv.request("GET", "/readyz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    blocks = tmp_path / "data" / "blocks"
    blocks.rename(tmp_path / "data" / "blocks-away")
    try:
        status, _, body = srv.request("GET", "/readyz")
        health = json.loads(body)
        assert status == 503 and health["status"] == "degraded" and "not writable" in health["blocks"]
        assert srv.request("GET", "/healthz")[0] == 200  # alive, just not ready
    finally:
        (tmp_path / "data" / "blocks-away").rename(blocks)
    assert srv.request("GET", "/readyz")[0] == 200


# -- GC inside the server --------------------------------------------------------------------

def _metric(srv, token: str, name: str) -> float:
    _, _, body = srv.request("GET", "/metrics", token=token)
    for line in body.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_gc_interval_runs_gc_inside_the_server(start_web_server, tmp_path):
    srv = start_web_server(tmp_path / "data", extra_args=["--gc-interval", "1s", "--gc-min-age", "0"])
    token = srv.login()
    srv.json("POST", "/api/buckets", {"name": "gc-inside"}, token=token, expect=201)
    blob = bytes(range(256)) * 4096  # 1 MiB in several blocks
    assert srv.request("PUT", "/api/buckets/gc-inside/object?key=doomed", blob, token=token)[0] in (200, 201)
    assert srv.request("DELETE", "/api/buckets/gc-inside/object?key=doomed", token=token)[0] == 204
    packs = tmp_path / "data" / "blocks" / "packs"

    def stored() -> int:
        return sum(1 for _ in packs.rglob("*.pack"))

    runs_before = _metric(srv, token, "cas_gc_runs_total")
    # a 1 s interval: the first runs condemn and delete the blocks (min age 0); the server's open pack
    # is sealed once idle (10 s), then the next run deletes it, all dead
    deadline = time.monotonic() + 45
    # blocks go during a run, the run is recorded at its end: wait for both (bounded)
    while (stored() or _metric(srv, token, "cas_gc_runs_total") <= runs_before) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert stored() == 0, "GC inside the server did not reclaim the deleted object's blocks"
    assert _metric(srv, token, "cas_gc_runs_total") > runs_before
    assert any("gc:" in line and "deleted 1 blocks" in line for line in srv.output), "".join(srv.output[-20:])


# -- SIGTERM with uploads in flight ----------------------------------------------------------

def _slow_put(host: str, port: int, path: str, auth: str, size: int, started: threading.Event,
              outcome: dict) -> None:
    """PUT ``size`` bytes in 64 KiB pieces, slowly, and record the answer (or the failure)."""
    conn = http.client.HTTPConnection(host, port, timeout=60)
    try:
        conn.putrequest("PUT", path)
        conn.putheader("Authorization", auth)
        conn.putheader("Content-Length", str(size))
        conn.endheaders()
        sent = 0
        piece = bytes(range(256)) * 256
        while sent < size:
            conn.send(piece[: size - sent])
            sent += len(piece[: size - sent])
            if sent >= 4 * len(piece):
                started.set()
            time.sleep(0.01)
        resp = conn.getresponse()
        outcome["status"] = resp.status
        resp.read()
    except (OSError, http.client.HTTPException) as exc:
        outcome["error"] = repr(exc)
    finally:
        started.set()
        conn.close()


def test_sigterm_with_uploads_in_flight_stops_cleanly(start_web_server, tmp_path):
    import base64

    data = tmp_path / "data"
    srv = start_web_server(data)
    token = srv.login()
    srv.json("POST", "/api/buckets", {"name": "term"}, token=token, expect=201)
    auth = "Basic " + base64.b64encode(f"{ROOT_USER}:{ROOT_PASSWORD}".encode()).decode()
    host, port = srv.base.split("//")[1].split(":")
    outcomes: list[dict] = [{} for _ in range(3)]
    threads = []
    for i, outcome in enumerate(outcomes):
        started = threading.Event()
        t = threading.Thread(target=_slow_put, args=(host, int(port), f"/dav/term/f{i}", auth, 3 << 20, started,
                                                     outcome))
        t.start()
        assert started.wait(30)
        threads.append(t)
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(timeout=60) == 0, "".join(srv.output[-30:])  # a clean stop, in bounded time
    for t in threads:
        t.join(timeout=60)
        assert not t.is_alive()
    with socket.socket() as s:  # the listener is gone
        assert s.connect_ex((host, int(port))) != 0
    # a graceful stop drains requests in flight (cheroot's shutdown timeout is far longer than these)
    assert [o.get("status") for o in outcomes] == [201, 201, 201], outcomes
    settings = load_settings(data, {"auth": {"root_user": ROOT_USER, "root_password": ROOT_PASSWORD}}, env={})
    expected = (bytes(range(256)) * 256 * 48)[: 3 << 20]
    with Store.open_store(settings) as store:
        for i, outcome in enumerate(outcomes):
            names = {e.key for e in store.list("term").entries}
            if outcome.get("status") in (200, 201, 204):  # acknowledged: complete and readable
                assert store.get_bytes("term", f"f{i}") == expected
            else:  # not acknowledged: absent, never partial
                assert f"f{i}" not in names or store.get_bytes("term", f"f{i}") == expected
        report = verify(store, deep=True)
        assert report.clean, [f.to_dict() for f in report.findings]
