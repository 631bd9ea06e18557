"""The HTTP side of ``cas serve``: cheroot listeners, WSGI dispatch, request ids, access log.

Two listeners: the S3 API (``--s3``) and the web side (``--http``: /healthz,
/readyz, /dav/, /api/, /metrics, and the browser UI at /). Each request gets
an id (a contextvar, echoed as ``x-amz-request-id`` / ``X-Request-Id``) that
appears on every log line of that request; one access-log line is written when
the response is done. Only ``guard`` turns an unexpected exception into a 500,
logged once with its traceback.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable

from cheroot import wsgi

from ..config import testonly_crash_point
from ..errors import CannotListen, ConfigError
from .listener import Listener, TlsAdapter

log = logging.getLogger(__name__)
access_log = logging.getLogger("cas.access")

request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every log record (configured by the CLI's logging setup)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def new_request_id() -> str:
    return os.urandom(8).hex().upper()


def json_response(start_response, status: str, body: dict, extra: list[tuple[str, str]] | None = None) -> list[bytes]:
    raw = json.dumps(body, indent=1).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(raw)))] + (extra or []))
    return [raw]


DRAIN_PIECE = 256 * 1024


def _drain(wsgi_input) -> None:
    """Discard what is left of a request body of known length, a piece at a time.

    A request refused before its body was read (401, 403, 409 ...) leaves the
    body on the socket, and cheroot, when it sends the response headers, reads
    all of it in one call, holding it in memory. Draining it here first keeps
    memory flat whatever the client sends.
    """
    for _ in range(1 << 40):  # bounded by the announced Content-Length
        if getattr(wsgi_input, "remaining", 0) <= 0:
            return
        try:
            if not wsgi_input.read(DRAIN_PIECE):
                return
        except OSError:
            return


def _unfinished_chunked(wsgi_input) -> bool:
    """Whether a chunked request body was left (partly) unread: cheroot never drains those."""
    return type(wsgi_input).__name__ == "ChunkedRFile" and not getattr(wsgi_input, "closed", True)


class _Logged:
    """Wraps a response: drains an unread body before the first byte goes out, and writes
    the access line when the response is fully sent or closed."""

    def __init__(self, body: Iterable[bytes], environ: dict, done: Callable[[int], None]):
        self._body = body
        self._environ = environ
        self._input = environ.get("wsgi.input")
        self._done = done
        self._sent = 0

    def __iter__(self):
        it = iter(self._body)
        first = next(it, None)  # runs the app until it has called start_response
        _drain(self._input)
        if _unfinished_chunked(self._input) and "cas.close_connection" in self._environ:
            # what is left on the socket would be read as the next request: close instead
            self._environ["cas.close_connection"]()
        if first is not None:
            self._sent += len(first)
            yield first
        for part in it:
            self._sent += len(part)
            yield part

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
        finally:
            self._done(self._sent)


def guard(app: WSGIApp, protocol: str) -> WSGIApp:
    """Request id, access log, and the last-resort 500 for one listener."""

    def wrapped(environ, start_response):
        rid = environ.get("HTTP_X_REQUEST_ID") or new_request_id()
        token = request_id.set(rid)
        environ["cas.request_id"] = rid
        began = time.monotonic()
        status_holder = ["-"]
        # captured now: mounted apps rewrite SCRIPT_NAME / PATH_INFO
        target = environ.get("PATH_INFO", "") + ("?" + environ["QUERY_STRING"] if environ.get("QUERY_STRING") else "")

        def start(status, headers, exc_info=None):
            # decided (and, for a write, committed) but not yet told to the client
            testonly_crash_point(f"serve.before_response.{environ.get('REQUEST_METHOD')}")
            status_holder[0] = status.split(" ", 1)[0]
            headers = list(headers) + [("x-amz-request-id" if protocol == "s3" else "X-Request-Id", rid)]
            return start_response(status, headers, exc_info)

        def done(sent: int) -> None:
            inner = request_id.set(rid)
            access_log.info(
                '%s %s "%s %s" %s %d %.1fms', protocol, environ.get("REMOTE_ADDR", "-"),
                environ.get("REQUEST_METHOD"), target, status_holder[0], sent, (time.monotonic() - began) * 1000,
            )
            request_id.reset(inner)

        try:
            body = app(environ, start)
        except Exception:
            log.exception("unexpected error in %s request", protocol)
            body = json_response(start, "500 Internal Server Error", {"error": "internal error", "request_id": rid})
        finally:
            request_id.reset(token)
        return _Logged(body, environ, done)

    return wrapped


class HttpApp:
    """Dispatch of the --http listener: health, WebDAV, admin API, metrics, web UI."""

    def __init__(self, store, settings, mounts: dict[str, WSGIApp] | None = None):
        self.store = store
        self.settings = settings
        self.mounts = dict(mounts or {})

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if path == "/healthz":
            health = self.store.health()
            return json_response(start_response, "200 OK", {"status": "ok", "version": health["version"],
                                                            "store": health})
        if path == "/readyz":
            health = self.store.health()
            status = "200 OK" if health["status"] == "ok" else "503 Service Unavailable"
            return json_response(start_response, status, health)
        for prefix, app in self.mounts.items():
            if path == prefix or path.startswith(prefix + "/") or prefix == "":
                if prefix:
                    environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
                    environ["PATH_INFO"] = path[len(prefix):]
                return app(environ, start_response)
        return json_response(start_response, "404 Not Found", {"error": "not found", "path": path})


def build_apps(store, settings) -> tuple[WSGIApp, WSGIApp]:
    """The S3 app and the HTTP app (WebDAV at /dav, the web UI and API at /).

    One ``Metrics`` measures every listener (``/metrics``); one ``TokenService`` verifies the
    bearer tokens of the web API and WebDAV. Both are made here and handed over explicitly.
    """
    from ..auth.tokens import TokenService
    from .metrics import Metrics
    from .s3.app import make_app as make_s3
    from .web.app import make_app as make_web
    from .webdav.app import make_app as make_dav

    metrics = Metrics(store)
    tokens = TokenService(store)
    s3_app = metrics.wrap(make_s3(store, settings), "s3")
    mounts: dict[str, WSGIApp] = {
        "/dav": metrics.wrap(make_dav(store, settings, bearer=tokens.bearer_verifier()), "webdav"),
        "": make_web(store, settings, tokens=tokens, metrics=metrics),  # measures itself under "web"
    }
    return guard(s3_app, "s3"), guard(HttpApp(store, settings, mounts), "http")


class CasGateway(wsgi.Gateway_10):
    """cheroot's WSGI 1.0 gateway, plus ``environ["cas.close_connection"]``: a way for the
    guard to close the connection after the response (cheroot ignores an app's
    ``Connection: close`` header)."""

    def get_environ(self):
        env = super().get_environ()
        req = self.req

        def close_connection() -> None:
            req.close_connection = True

        env["cas.close_connection"] = close_connection
        return env


MAX_REQUEST_HEADER_SIZE = 64 * 1024


def _bind_reason(exc: OSError) -> str:
    """'address already in use' from an OSError of a bind, also when cheroot hides the errno
    in its message ("No socket could be created -- ((host, port): [Errno 98] Address ...)")."""
    if exc.errno:
        return os.strerror(exc.errno).lower()
    found = re.findall(r"\[Errno (\d+)\]", str(exc))
    return os.strerror(int(found[-1])).lower() if found else str(exc)


class Server:
    """Both listeners of ``cas serve``; ``start`` binds, ``stop`` shuts down cleanly."""

    def __init__(self, store, settings):
        self.store = store
        self.settings = settings
        s3_app, http_app = build_apps(store, settings)
        srv = settings.server
        limits = {"threads": srv.threads, "head_timeout": srv.head_timeout, "max_per_source": srv.max_conns_per_ip,
                  "request_queue_size": 128, "timeout": 60, "shutdown_timeout": 5, "server_name": "cas"}
        self.listeners = {"s3": Listener(srv.s3, s3_app, **limits), "http": Listener(srv.http, http_app, **limits)}
        for server in self.listeners.values():
            server.gateway = CasGateway
            server.max_request_header_size = MAX_REQUEST_HEADER_SIZE
        if bool(srv.tls_cert) != bool(srv.tls_key):
            raise ConfigError("HTTPS needs both --tls-cert and --tls-key")
        if srv.tls_cert and srv.tls_key:
            import ssl

            for server in self.listeners.values():
                try:
                    server.ssl_adapter = TlsAdapter(srv.tls_cert, srv.tls_key)
                except (OSError, ssl.SSLError) as exc:
                    raise ConfigError(f"cannot load the TLS certificate {srv.tls_cert} and key {srv.tls_key}: "
                                      f"{exc.strerror or exc.reason if isinstance(exc, OSError) else exc}") from exc
        self._threads: list[threading.Thread] = []

    @property
    def scheme(self) -> str:
        return "https" if self.settings.server.tls_cert else "http"

    def address(self, name: str) -> tuple[str, int]:
        host, port = self.listeners[name].bind_addr[:2]
        return host, port

    def url(self, name: str) -> str:
        host, port = self.address(name)
        return f"{self.scheme}://{host}:{port}"

    def bind(self) -> None:
        """Bind and listen on every address, or raise ``CannotListen`` with none left bound.

        Nothing is served until ``start``: connections wait in the listen backlog.
        """
        for name, server in self.listeners.items():
            if server.ready:
                continue
            try:
                server.prepare()
            except OSError as exc:
                self.stop()
                host, port = server.bind_addr[:2]
                raise CannotListen(f"cannot listen on {host}:{port} ({_bind_reason(exc)})",
                                   listener=name) from exc

    def start(self) -> None:
        self.bind()
        for name, server in self.listeners.items():
            t = threading.Thread(target=server.serve, name=f"cas-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        for server in self.listeners.values():
            server.stop()
        for t in self._threads:
            t.join(timeout=10)
