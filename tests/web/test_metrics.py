"""GET /metrics: Prometheus text that parses, counters and histograms that move with requests,
store figures; and the middleware on its own (for the other listeners)."""

from __future__ import annotations

import io
import os
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cas.config import load_settings
from cas.protocols.metrics import REPORTS_NS, Metrics
from cas.store import Store

pytestmark = pytest.mark.integration


def scrape(server, token) -> dict[str, dict[tuple, float]]:
    """{sample name: {sorted label items: value}} of one scrape (fails if the text does not parse)."""
    status, headers, body = server.request("GET", "/metrics", token=token)
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    out: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def value(samples, name, **labels) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


def test_metrics_parse_and_move_with_requests(web_server):
    token = web_server.login()
    before = scrape(web_server, token)
    web_server.json("POST", "/api/buckets", {"name": "metrics"}, token=token, expect=201)
    body = os.urandom(300_000)
    for i in range(3):
        assert web_server.request("PUT", f"/api/buckets/metrics/object?key=f{i}", body, token=token)[0] == 201
    assert web_server.request("GET", "/api/buckets/metrics/object?key=f0", token=token)[2] == body
    assert web_server.request("GET", "/api/buckets/metrics/object?key=missing", token=token)[0] == 404
    # a request is counted once the server has closed its body, which may be just after the client
    # read the last byte: scrape until the last request shows up (bounded)
    deadline = time.monotonic() + 10
    while True:
        after = scrape(web_server, token)
        seen = value(after, "cas_requests_total", protocol="web", op="get_object", status="404") - value(
            before, "cas_requests_total", protocol="web", op="get_object", status="404")
        if seen >= 1 or time.monotonic() > deadline:
            break
        time.sleep(0.02)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("cas_requests_total", protocol="web", op="put_object", status="201") == 3
    assert delta("cas_requests_total", protocol="web", op="get_object", status="200") == 1
    assert delta("cas_requests_total", protocol="web", op="get_object", status="404") == 1
    assert delta("cas_requests_total", protocol="web", op="create_bucket", status="201") == 1
    assert delta("cas_request_duration_seconds_count", protocol="web", op="put_object") == 3
    assert value(after, "cas_request_duration_seconds_bucket", protocol="web", op="put_object", le="+Inf") >= 3
    assert delta("cas_received_bytes_total", protocol="web") >= 3 * len(body)
    assert delta("cas_sent_bytes_total", protocol="web") >= len(body)
    # store figures: the same body three times is stored once
    assert value(after, "cas_objects") >= 3
    assert value(after, "cas_logical_bytes") >= 3 * len(body)
    assert 0 < value(after, "cas_stored_bytes") < value(after, "cas_logical_bytes")
    assert value(after, "cas_blocks") >= 1 and value(after, "cas_dedup_ratio") > 1.0
    assert value(after, "cas_buckets") >= 1
    assert "cas_gc_runs_total" in after and "cas_verify_findings" in after
    assert value(after, "cas_requests_in_flight", protocol="web") == 1  # the scrape itself


def test_the_middleware_measures_any_wsgi_app(tmp_path):
    with Store.open_store(load_settings(tmp_path / "d")) as store:
        metrics = Metrics(store)

        def app(environ, start_response):
            environ["wsgi.input"].read()
            if environ["PATH_INFO"] == "/named":
                environ["cas.op"] = "PutObject"
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"hello", b" world"]

        def boom(environ, start_response):
            raise RuntimeError("unexpected")

        measured, failing = metrics.wrap(app, "s3"), metrics.wrap(boom, "s3")
        for path, method in [("/named", "PUT"), ("/x", "GET"), ("/y", "BREW")]:
            env = {"REQUEST_METHOD": method, "PATH_INFO": path, "wsgi.input": io.BytesIO(b"12345")}
            body = measured(env, lambda status, headers, exc_info=None: None)
            assert b"".join(body) == b"hello world"
            body.close()
        with pytest.raises(RuntimeError):
            failing({"REQUEST_METHOD": "GET", "PATH_INFO": "/", "wsgi.input": io.BytesIO()}, lambda *a: None)
        store.kv_put(REPORTS_NS, "gc", b'{"runs": 4, "findings": 2}')
        samples = {}
        for family in text_string_to_metric_families(metrics.render().decode()):
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def get(name, **labels):
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    assert get("cas_requests_total", protocol="s3", op="PutObject", status="200") == 1
    assert get("cas_requests_total", protocol="s3", op="GET", status="200") == 1
    assert get("cas_requests_total", protocol="s3", op="OTHER", status="200") == 1  # no label per odd method
    assert get("cas_requests_total", protocol="s3", op="GET", status="500") == 1
    assert get("cas_received_bytes_total", protocol="s3") == 15
    assert get("cas_sent_bytes_total", protocol="s3") == 33
    assert get("cas_requests_in_flight", protocol="s3") == 0
    assert get("cas_gc_runs_total") == 4 and get("cas_gc_findings") == 2


def test_gc_and_verify_runs_show_in_metrics(tmp_path):
    from cas.gc.sweep import collect
    from cas.gc.verify import verify

    with Store.open_store(load_settings(tmp_path / "d", {"gc": {"min_age": 0}}, env={})) as store:
        store.create_bucket("bkt")
        store.put("bkt", "gone", b"x" * 100_000)
        store.delete("bkt", "gone")
        collect(store, delete=True, min_age=0)
        verify(store)
        verify(store)
        samples = {s.name: s.value for family in text_string_to_metric_families(Metrics(store).render().decode())
                   for s in family.samples}
    assert samples["cas_gc_runs_total"] == 1 and samples["cas_gc_findings"] >= 1
    assert samples["cas_verify_runs_total"] == 2 and samples["cas_verify_findings"] == 0
