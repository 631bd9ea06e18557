"""The S3 API as a WSGI application: parse, authenticate, route, handle, answer.

``make_app(store, settings)`` is what ``cas serve`` mounts on its ``--s3`` listener. Each
request is parsed into an :class:`~cas.protocols.s3.request.S3Request`, authenticated with
SigV4 (header or presigned query; anonymous requests are refused unless
``auth.allow_anonymous``, and then may only read), routed to one handler, and answered. A request
with ``Origin`` is answered by its bucket's CORS rules when the bucket has some, else by the
server-wide policy (:mod:`cas.protocols.s3.cors`); preflights are never authenticated.
Every failure becomes the S3 XML error body (``Code``, ``Message``, ``Resource``,
``RequestId``) through the one table in :mod:`cas.protocols.s3.error`; only an unexpected
exception is a 500, logged once with its traceback.

When a request fails before its body was read, the rest of an HTTP-chunked body is read
and dropped (up to a bound) so the connection stays usable: cheroot drains bodies of known
length itself, but not chunked ones. Thread-safe: one app serves all worker threads; per
request state lives in the request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from cas.access import Principal
from cas.auth.sigv4 import SigV4Verifier
from cas.errors import AccessDenied
from cas.protocols.s3.chunked import BodyReader
from cas.protocols.s3.cors import CorsPolicy, bucket_rules
from cas.protocols.s3.error import S3Error, to_s3_error
from cas.protocols.s3.request import Response, S3Request, error_response
from cas.protocols.s3.routing import route

log = logging.getLogger(__name__)

DRAIN_LIMIT = 64 << 20


class S3App:
    """The WSGI callable of the S3 API (see the module docstring)."""

    def __init__(self, store, settings, *, clock: Callable[[], float] = time.time):
        self.store = store
        self.settings = settings
        self.verifier = SigV4Verifier(store.users.secret, clock=clock)
        self.cors = CorsPolicy(tuple(settings.server.cors_origins or ()))

    def __call__(self, environ, start_response):
        req = None
        cors = self.cors
        try:
            req = S3Request(environ, self.store, self.settings)
            if "origin" in req.headers:  # only browsers' requests pay for the bucket's rules
                cors = bucket_rules(self.store, req.bucket) or self.cors
            if req.method == "OPTIONS":
                response = cors.preflight(req)
            else:
                self._authenticate(req)
                response = route(req)(req)
        except Exception as exc:  # noqa: BLE001 - the outermost handler: every failure gets S3's form
            response = self._error(req, environ, exc)
        headers = list(response.headers)
        headers += cors.headers_for(environ.get("HTTP_ORIGIN"), environ.get("REQUEST_METHOD", "GET").upper())
        body = response.body
        if isinstance(body, (bytes, bytearray)):
            if not any(name.lower() == "content-length" for name, _ in headers):
                headers.append(("Content-Length", str(len(body))))
            body = [bytes(body)] if body else []
        start_response(response.status_line, headers)
        return body

    def _authenticate(self, req: S3Request) -> None:
        auth = self.verifier.authenticate(req.sigv4_view())
        if auth is None:
            if not self.settings.auth.allow_anonymous:
                raise AccessDenied("Anonymous access is not allowed; sign the request (AWS SigV4).")
            if req.method not in ("GET", "HEAD"):
                raise AccessDenied("Anonymous users may only read.")
            return
        req.auth = auth
        req.user = auth.access_key
        req.principal = Principal.of_user(self.store, auth.access_key)

    def _error(self, req: S3Request | None, environ: dict, exc: Exception) -> Response:
        error = to_s3_error(exc)
        method = environ.get("REQUEST_METHOD", "GET").upper()
        request_id = req.request_id if req is not None else environ.get("cas.request_id", "-")
        if error.status >= 500 and not isinstance(exc, S3Error):
            log.error("S3 %s %s failed", method, environ.get("REQUEST_URI", ""), exc_info=exc)
        else:
            log.debug("S3 %s %s: %s %s", method, environ.get("REQUEST_URI", ""), error.code, error.message)
        if req is not None and req.bucket and "BucketName" not in error.fields and error.code == "NoSuchBucket":
            error.fields["BucketName"] = req.bucket
        if req is not None and req.key and "Key" not in error.fields and error.code == "NoSuchKey":
            error.fields["Key"] = req.key
        self._drain(req, environ)
        resource = req.resource if req is not None else environ.get("PATH_INFO", "/")
        return error_response(req, error, method, resource, request_id)

    @staticmethod
    def _drain(req: S3Request | None, environ: dict) -> None:
        if not environ.get("wsgi.input_terminated"):
            return  # known length: cheroot reads what is left itself
        reader = req.body_reader if req is not None else None
        if reader is None:
            reader = BodyReader(environ["wsgi.input"], None)
        if not reader.finished and not reader.drain(DRAIN_LIMIT):
            log.debug("request body not drained; the connection will not be reused cleanly")


def make_app(store, settings) -> S3App:
    """The S3 API over ``store``, configured by ``settings`` (server, auth, gc sections)."""
    return S3App(store, settings)


__all__ = ["S3App", "make_app"]
