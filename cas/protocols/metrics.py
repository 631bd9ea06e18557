"""Prometheus metrics of one store: request counters and latencies for every listener, store figures.

One ``Metrics`` per server, made by ``build_apps`` and handed to every listener, with its own
``CollectorRegistry`` so that several servers in one process (tests) do not clash. Any WSGI app
can be measured by wrapping it::

    metrics = Metrics(store)
    s3_app = metrics.wrap(s3_app, "s3")          # protocol label
    dav_app = metrics.wrap(dav_app, "webdav")

The ``op`` label is ``environ["cas.op"]`` if the wrapped app sets it while handling the request
(e.g. ``"PutObject"``, ``"upload_part"``), else the HTTP method (methods outside a fixed set are
``OTHER``, so a client cannot blow up the label space). Latency runs until the response body has
been sent (or the client went away). Bytes in are counted as the app reads ``wsgi.input``.

Exposed series (``GET /metrics`` of the web app renders them):

    cas_requests_total{protocol,op,status}            counter
    cas_request_duration_seconds{protocol,op}         histogram
    cas_received_bytes_total{protocol}                counter (request bodies)
    cas_sent_bytes_total{protocol}                    counter (response bodies)
    cas_requests_in_flight{protocol}                  gauge
    cas_event_polls_waiting                           gauge (``/api/events?wait=`` polls now waiting)
    cas_objects, cas_buckets, cas_logical_bytes, cas_stored_bytes, cas_blocks,
    cas_dedup_ratio, cas_compression_ratio,
    cas_index_bytes_per_object                        gauges read from the store at scrape time
    cas_meta_log_lag_seconds                          gauge: age of the oldest metadata log record not
                                                      yet in the backend (0 when none)
    cas_meta_log_unshipped_records                    gauge: metadata log records not yet shipped
    cas_gc_runs_total, cas_gc_findings, cas_verify_runs_total, cas_verify_findings
                                                      from the reports GC and verify leave in the
                                                      store's kv space (ns "reports", keys "gc" and
                                                      "verify": JSON {"runs": n, "findings": n, ...})

Thread-safe (prometheus_client's metrics are).
"""

from __future__ import annotations

import json
import logging
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REPORTS_NS = "reports"  # cas.gc.runs.NAMESPACE (protocols do not import gc)
_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE", "OPTIONS", "PATCH", "PROPFIND", "PROPPATCH",
                      "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK"})
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class StoreCollector:
    """Store-wide figures, read when Prometheus scrapes (cheap: counters kept by the index)."""

    def __init__(self, store):
        self._store = store

    def describe(self):
        return []  # collected lazily; nothing to check at registration

    def collect(self):
        s = self._store.stats()
        for name, key, doc in (
            ("cas_objects", "objects", "Objects (names) in the store"),
            ("cas_logical_bytes", "logical_bytes", "Sum of the sizes of all objects"),
            ("cas_stored_bytes", "stored_bytes", "Bytes kept in the block store (after dedup and compression)"),
            ("cas_blocks", "unique_blocks", "Unique blocks in the block store"),
            ("cas_dedup_ratio", "dedup_ratio", "Logical bytes / unique raw bytes"),
            ("cas_compression_ratio", "compression_ratio", "Unique raw bytes / stored bytes"),
        ):
            yield GaugeMetricFamily(name, doc, value=float(s.get(key, 0)))
        yield GaugeMetricFamily("cas_buckets", "Buckets in the store", value=float(len(self._store.buckets())))
        lag = self._store.meta_log_status()
        yield GaugeMetricFamily("cas_meta_log_lag_seconds", "Age of the oldest metadata log record not yet in "
                                "the backend (0 when none)", value=float(lag.get("lag_seconds", 0)))
        yield GaugeMetricFamily("cas_meta_log_unshipped_records", "Metadata log records not yet in the backend",
                                value=float(lag.get("unshipped_records", 0)))
        yield GaugeMetricFamily("cas_index_bytes_per_object", "Index bytes on disk per object",
                                value=float(s.get("index_bytes_per_object", 0)))
        for kind in ("gc", "verify"):
            report = self._report(kind)
            yield CounterMetricFamily(f"cas_{kind}_runs", f"Completed {kind} runs",
                                      value=float(report.get("runs", 0)))
            yield GaugeMetricFamily(f"cas_{kind}_findings", f"Findings of the last {kind} run",
                                    value=float(report.get("findings", 0)))

    def _report(self, kind: str) -> dict:
        raw = self._store.kv_get(REPORTS_NS, kind)
        if not raw:
            return {}
        try:
            report = json.loads(raw)
        except ValueError:
            log.warning("ignoring an unreadable %s report in the store", kind)
            return {}
        return report if isinstance(report, dict) else {}


class _CountingInput:
    """A ``wsgi.input`` proxy that counts the bytes the app reads."""

    def __init__(self, raw, counter):
        self._raw = raw
        self._counter = counter

    def _count(self, data):
        if data:
            self._counter.inc(len(data))
        return data

    def read(self, *args):
        return self._count(self._raw.read(*args))

    def readline(self, *args):
        return self._count(self._raw.readline(*args))

    def readlines(self, *args):
        return [self._count(line) for line in self._raw.readlines(*args)]

    def readinto(self, buf):
        if hasattr(self._raw, "readinto"):
            n = self._raw.readinto(buf)
        else:
            data = self._raw.read(len(buf))
            n = len(data)
            buf[:n] = data
        if n:
            self._counter.inc(n)
        return n

    def __iter__(self):
        for line in self._raw:
            yield self._count(line)

    def __getattr__(self, name):
        return getattr(self._raw, name)


class _MeasuredBody:
    """Counts response bytes; records status and latency once the body is done or closed."""

    def __init__(self, body, done):
        self._body = body
        self._done = done
        self.sent = 0

    def __iter__(self):
        for part in self._body:
            self.sent += len(part)
            yield part

    def close(self):
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._done(self.sent)


class Metrics:
    """The registry of one store, and the WSGI middleware that feeds it."""

    def __init__(self, store):
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.requests = Counter("cas_requests", "HTTP requests answered", ["protocol", "op", "status"], registry=r)
        self.latency = Histogram("cas_request_duration_seconds", "Time from request to the last byte sent",
                                 ["protocol", "op"], buckets=_LATENCY_BUCKETS, registry=r)
        self.bytes_in = Counter("cas_received_bytes", "Request body bytes read", ["protocol"], registry=r)
        self.bytes_out = Counter("cas_sent_bytes", "Response body bytes sent", ["protocol"], registry=r)
        self.in_flight = Gauge("cas_requests_in_flight", "Requests being handled", ["protocol"], registry=r)
        self.polls_waiting = Gauge("cas_event_polls_waiting", "Event long-polls waiting for a change", registry=r)
        r.register(StoreCollector(store))

    def wrap(self, app, protocol: str):
        """``app`` measured under ``protocol`` (see the module docstring for the labels)."""
        bytes_in = self.bytes_in.labels(protocol)
        bytes_out = self.bytes_out.labels(protocol)
        in_flight = self.in_flight.labels(protocol)

        def measured(environ, start_response):
            began = time.monotonic()
            status = ["500"]
            if "wsgi.input" in environ:
                environ["wsgi.input"] = _CountingInput(environ["wsgi.input"], bytes_in)

            def start(st, headers, exc_info=None):
                status[0] = st.split(" ", 1)[0]
                return start_response(st, headers, exc_info)

            def done(sent: int) -> None:
                method = environ.get("REQUEST_METHOD", "")
                op = environ.get("cas.op") or (method if method in _METHODS else "OTHER")
                self.requests.labels(protocol, op, status[0]).inc()
                self.latency.labels(protocol, op).observe(time.monotonic() - began)
                bytes_out.inc(sent)
                in_flight.dec()

            in_flight.inc()
            try:
                body = app(environ, start)
            except BaseException:
                done(0)
                raise
            return _MeasuredBody(body, done)

        return measured

    def render(self) -> bytes:
        return generate_latest(self.registry)
