"""The WebDAV WSGI application mounted at ``/dav`` on the ``--http`` listener.

Stack, outermost first::

    DavFront        mount point, '..' refusal, request-body limits for XML methods,
                    X-OC-MTime answer, framing of error and HEAD answers (``_framed``),
                    safe object response headers (GET/HEAD: see cas.protocols.headers)
    DavAuthenticator  Basic / Bearer against store.users (401 with a challenge)
    WsgiDAVApp      wsgidav: ErrorPrinter -> RequestResolver -> RequestServer
      CasProvider   paths to resources over the Store (provider.py, resources.py, content.py)
      StoreLockManager(StoreLockStorage)  locks in the index, each LOCK one txn (lock.py)

Dead properties are handled by the provider's resources (stored with the
resource), so wsgidav's property manager is not used. XML bodies are parsed by
wsgidav with ``defusedxml`` (lxml is not installed, and must not be: wsgidav
prefers it when present).
"""

from __future__ import annotations

import logging
from pathlib import Path

from wsgidav import util as wsgidav_util
from wsgidav import xml_tools
from wsgidav.dav_error import DAVError
from wsgidav.error_printer import ErrorPrinter
from wsgidav.request_resolver import RequestResolver
from wsgidav.wsgidav_app import WsgiDAVApp

from .. import headers as safe
from .auth import BearerVerifier, DavAuthenticator
from .lock import StoreLockManager, StoreLockStorage
from .provider import CasProvider

log = logging.getLogger(__name__)

MOUNT = "/dav"
#: request bodies of the XML methods (PROPFIND, PROPPATCH, LOCK ...) are read whole: cap them
MAX_XML_BODY = 1 << 20
#: bytes per read of a PUT body and per write of a GET body
BLOCK_SIZE = 256 << 10
#: error pages are short; one longer than this is cut (and logged)
MAX_ERROR_BODY = 1 << 20

if xml_tools.use_lxml:  # pragma: no cover - depends on the environment
    log.warning("lxml is installed: wsgidav will parse WebDAV bodies with lxml instead of defusedxml")


class DavFront:
    """Outermost layer: normalise the mount point and refuse oversized XML bodies."""

    def __init__(self, app):
        self._app = app

    def __call__(self, environ, start_response):
        # an unread request body is drained by the server's guard
        return _framed(self._route, environ, start_response, head=environ.get("REQUEST_METHOD") == "HEAD")

    def _route(self, environ, start_response):
        script = environ.get("SCRIPT_NAME", "")
        path = environ.get("PATH_INFO", "")
        if not script.endswith(MOUNT):
            # called unmounted (tests, other servers): take /dav off PATH_INFO ourselves
            if path == MOUNT or path.startswith(MOUNT + "/"):
                script, path = script + MOUNT, path[len(MOUNT):]
            else:
                return _plain(start_response, "404 Not Found", b"not below /dav\n")
        environ["SCRIPT_NAME"] = script
        environ["PATH_INFO"] = path or "/"
        if ".." in path.split("/"):
            try:
                wsgidav_util.normalize_path(path)
            except DAVError:
                # wsgidav refuses this too, but from inside a generator that then sends
                # the headers of its error page without the page: answer it here
                return _plain(start_response, "400 Bad Request", b"the path leaves /dav\n")

        method = environ.get("REQUEST_METHOD", "GET")
        if method != "PUT":
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                return _plain(start_response, "400 Bad Request", b"invalid Content-Length\n")
            if length > MAX_XML_BODY:
                return _plain(start_response, "413 Payload Too Large", b"request body too large\n", close=True)
            if "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower():
                # wsgidav reads XML bodies by Content-Length only; refuse rather than misread
                return _plain(start_response, "411 Length Required", b"send a Content-Length\n", close=True)

        if method == "PUT" and environ.get("HTTP_X_OC_MTIME"):
            inner = start_response

            def start_response(status, headers, exc_info=None):
                if status[:1] == "2":
                    headers = list(headers) + [("X-OC-MTime", "accepted")]
                return inner(status, headers, exc_info)

        if method in ("GET", "HEAD"):
            start_response = _object_response(start_response, path)

        return self._app(environ, start_response)


def _framed(app, environ, start_response, *, head: bool):
    """Run ``app`` so that error answers and HEAD answers carry exactly the body they announce.

    wsgidav sometimes announces a body it does not send (an error page started from a
    generator that then returns) or sends one for HEAD (a 416 page); a client then hangs
    until its timeout or reads the stray bytes as the next answer. Answers of status 4xx
    and 5xx are small pages: they are held until the app is done, then sent with the
    Content-Length of what was produced. HEAD answers are sent without any body. Other
    answers (2xx bodies of any size, 207 listings) stream through untouched.
    """
    held: list = []

    def start(status, headers, exc_info=None):
        if head or status[:1] in ("4", "5"):
            held[:] = [status, list(headers), exc_info]
            return _refuse_write
        return start_response(status, headers, exc_info)

    body = app(environ, start)
    pieces: list[bytes] = []
    size = 0
    try:
        for piece in body:
            if not held:
                yield piece
            elif not head and piece:
                size += len(piece)
                if size > MAX_ERROR_BODY:
                    log.warning("webdav: %s error page over %d bytes, cut", held[0], MAX_ERROR_BODY)
                    break
                pieces.append(piece)
    finally:
        close = getattr(body, "close", None)
        if close is not None:
            close()
    if held:
        status, headers, exc_info = held
        if head:
            start_response(status, headers, exc_info)
            return
        data = b"".join(pieces)[:MAX_ERROR_BODY]
        announced = [v for k, v in headers if k.lower() == "content-length"]
        if announced != [str(len(data))]:
            log.debug("webdav: %s announced %s body bytes, produced %d", status, announced, len(data))
        headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
        start_response(status, headers + [("Content-Length", str(len(data)))], exc_info)
        if data:
            yield data


def _refuse_write(data: bytes) -> None:  # pragma: no cover - wsgidav never uses write()
    raise RuntimeError("write() is not supported for held answers")


def _object_response(inner, path: str):
    """``start_response`` for GET/HEAD: an object's headers as every front end sends them.

    The provider passes on headers stored with the object (Content-Disposition, ... set over
    S3), and records of older versions may hold values that must not reach the wire: every
    value goes through :mod:`cas.protocols.headers`, which drops those. /dav shares the UI's
    origin, so a stored page must not render there either: nosniff and a sandboxing CSP always,
    and a type a browser would render or run is a download (a stored ``attachment``
    disposition is kept; any other is replaced). Drive clients ignore all three.
    """

    def start_response(status, headers, exc_info=None):
        if status[:1] != "2":
            return inner(status, headers, exc_info)
        out, ctype = [], None
        for name, value in headers:
            if name.lower() == "content-type":
                ctype = value = safe.content_type(value)
            else:
                value = safe.value(value)
            if value is not None:
                out.append((name, value))
        out += safe.security_headers(ui_origin=True)
        stored = [v for n, v in out if n.lower() == "content-disposition"]
        if safe.renders_actively(ctype) and not (stored and safe.is_attachment(stored[0])):
            name = path.rstrip("/").rsplit("/", 1)[-1].encode("latin-1").decode("utf-8", "replace")
            out = [(n, v) for n, v in out if n.lower() != "content-disposition"]
            out.append(("Content-Disposition", safe.attachment(name)))
        return inner(status, out, exc_info)

    return start_response


def _plain(start_response, status: str, body: bytes, *, close: bool = False) -> list[bytes]:
    """A short text/plain answer (for refusals made before wsgidav sees the request)."""
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    if close:
        headers.append(("Connection", "close"))
    start_response(status, headers)
    return [body]


def make_app(store, settings, *, bearer: BearerVerifier | None = None):
    """The WSGI app serving ``/dav/`` over ``store`` (mount it at /dav).

    ``bearer`` verifies ``Authorization: Bearer`` tokens (the server passes
    ``TokenService.bearer_verifier()``: login JWTs and OIDC tokens); None: Basic only.
    """
    data_dir = Path(settings.data_dir) if settings.blocks.url == "local" else None
    provider = CasProvider(store, data_dir=data_dir)
    config = {
        "provider_mapping": {"/": provider},
        "mount_path": MOUNT,
        "lock_storage": StoreLockStorage(store),  # its manager is replaced below
        "property_manager": None,
        "middleware_stack": [ErrorPrinter, RequestResolver],
        "block_size": BLOCK_SIZE,
        "honor_mtime_header": True,
        "add_header_MS_Author_Via": True,
        "suppress_version_info": True,
        "verbose": 2,  # cas.access logs every request; wsgidav logs warnings only
        "logging": {"enable": False},
        "dir_browser": {"enable": False},
    }
    dav = WsgiDAVApp(config)
    # wsgidav wraps the storage in its own LockManager; ours decides each LOCK in one index txn
    dav.lock_manager = StoreLockManager(dav.lock_manager.storage)
    provider.set_lock_manager(dav.lock_manager)
    app = DavAuthenticator(dav, store.users, allow_anonymous=settings.auth.allow_anonymous, bearer=bearer)
    return DavFront(app)
