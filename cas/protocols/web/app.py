"""The web side of the --http listener: the browser UI, the JSON API under /api/, and /metrics.

Mounted by ``cas.protocols.server.build_apps`` at "" (everything that is not /healthz, /readyz
or /dav). It only translates HTTP to ``Store`` calls:

    GET  /                       the UI (static files from ./static: plain HTML/CSS/JS, no CDN)
    POST /api/login              {"user", "password"} -> {"token", "expires", "user", "root"}
    GET  /api/whoami
    GET  /api/buckets            the caller's buckets (root: all)
    POST /api/buckets            {"name"} -> 201
    DELETE /api/buckets/B        only when empty
    GET  /api/buckets/B/objects?prefix=&delimiter=/&after=&limit=
    POST /api/buckets/B/folder   {"path"}: a zero-byte "path/" marker (cas.namespace: folder rules)
    GET|HEAD /api/buckets/B/object?key=K     streamed download (Range; ?link=TOKEN instead of a header)
    PUT  /api/buckets/B/object?key=K         upload of the raw body (small files)
    DELETE /api/buckets/B/object?key=K[&recursive=1]   (a "dir/" key with recursive: everything under it)
    POST /api/buckets/B/link?key=K           -> {"url"}: a download link valid for a few minutes
    POST /api/buckets/B/move     {"from", "to", "to_bucket"?, "overwrite"?}: rename/move (a "dir/" moves
                                 the folder); an existing destination is replaced only with
                                 "overwrite": true (else 412)
    POST /api/buckets/B/uploads  {"key", "size"?, "content_type"?} -> {"upload_id", "part_size"}
    GET  /api/uploads/U          parts received so far (to resume)
    PUT  /api/uploads/U/parts/N  one part (raw body)
    POST /api/uploads/U/complete {"parts": [{"number", "etag"}...]}
    DELETE /api/uploads/U        abort
    GET  /api/stats              root: the store's figures (as ``cas stats --json``);
                                 others: objects and logical bytes of their own buckets
    GET  /api/users              root only
    GET  /api/events?after=SEQ&limit=N&wait=SECONDS   the journal of the caller's buckets, long-poll
                                 -> {"events": [...], "next": SEQ to pass as ``after`` next time}
                                 (``after=latest``: only what happens from now on)
    GET  /metrics                Prometheus text (root, or anyone with allow_anonymous)

Every request but the static files and the login is authenticated (``Authorization: Bearer``
with a token from ``cas.auth.tokens``, or Basic with a cas user and secret) unless
``auth.allow_anonymous`` is set, in which case a request without credentials is the read-only
anonymous principal (a flag of ``cas.access.Principal``, never a user name). Who sees which
bucket is ``cas.access``'s rule; someone else's bucket is answered 404 here, not 403, so names
do not leak. Folders (markers, moves, recursive deletes) are ``cas.namespace``'s. Store-wide
stored bytes and dedup figures are root's only: seeing them move would tell a user that content
already exists (DESIGN §5).

Errors are JSON ``{"error": code, "message": ...}`` with the status from ``_STATUS``. The object and
upload routes live in ``objects.py`` (a mixin), the request wrapper in ``request.py``.
Stateless apart from the Store; thread-safe.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import re
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from ... import access, errors
from ...auth.tokens import TokenService
from ...namespace import Namespace
from ..http import parse_basic
from ..metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ..metrics import Metrics
from .objects import ObjectRoutes
from .request import HttpError, Request, _peer, _str, _unauthorized

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
MAX_WAIT = 25.0  # long-poll cap: each waiting request holds one of the listener's worker threads
EVENT_LIMIT = 1000
EVENT_SCAN_CAP = 50_000  # events looked at per request when most belong to other users
USER_STATS_CAP = 100_000  # objects counted for a non-root user's stats before giving an estimate

_STATUS: list[tuple[type[errors.CasError], str]] = [
    (errors.InvalidRange, "416 Range Not Satisfiable"),
    (errors.NotFound, "404 Not Found"),
    (errors.AlreadyExists, "409 Conflict"),
    (errors.Conflict, "409 Conflict"),
    (errors.PreconditionFailed, "412 Precondition Failed"),
    (errors.AccessDenied, "403 Forbidden"),
    (errors.TooManyRequests, "429 Too Many Requests"),
    (errors.BadRequest, "400 Bad Request"),
    (errors.TransientStoreError, "503 Service Unavailable"),
    (errors.CasError, "500 Internal Server Error"),
]

_SECURITY_HEADERS = [
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
]
_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


Handler = Callable[[Request, Callable], Iterable[bytes]]


class WebApp(ObjectRoutes):
    """The WSGI app (see the module docstring for the routes)."""

    def __init__(self, store, settings, *, tokens: TokenService, metrics: Metrics):
        self.store = store
        self.ns = Namespace(store)
        self.settings = settings
        self.tokens = tokens
        self.metrics = metrics
        self.anonymous = bool(settings.auth.allow_anonymous)
        # long-polls hold a worker thread each: past this many at once, a poll answers at once
        self._pollers = threading.BoundedSemaphore(max(1, settings.server.threads // 4))
        b = r"/api/buckets/(?P<bucket>[^/]+)"
        u = r"/api/uploads/(?P<upload>[A-Za-z0-9_-]+)"
        # (method, path pattern, handler, op label, needs authentication)
        self.routes: list[tuple[str, re.Pattern, Handler, str, bool]] = [
            (m, re.compile(p + r"\Z"), h, op, auth) for m, p, h, op, auth in [
                ("POST", "/api/login", self.login, "login", False),
                ("GET", "/api/whoami", self.whoami, "whoami", True),
                ("GET", "/api/buckets", self.list_buckets, "list_buckets", True),
                ("POST", "/api/buckets", self.create_bucket, "create_bucket", True),
                ("DELETE", b, self.delete_bucket, "delete_bucket", True),
                ("GET", b + "/objects", self.list_objects, "list_objects", True),
                ("POST", b + "/folder", self.create_folder, "create_folder", True),
                ("GET", b + "/object", self.get_object, "get_object", False),  # may use ?link=
                ("HEAD", b + "/object", self.get_object, "head_object", False),
                ("PUT", b + "/object", self.put_object, "put_object", True),
                ("DELETE", b + "/object", self.delete_object, "delete_object", True),
                ("POST", b + "/link", self.make_link, "link", True),
                ("POST", b + "/move", self.move, "move", True),
                ("POST", b + "/uploads", self.create_upload, "create_upload", True),
                ("GET", u, self.get_upload, "get_upload", True),
                ("PUT", u + r"/parts/(?P<number>\d{1,5})", self.upload_part, "upload_part", True),
                ("POST", u + "/complete", self.complete_upload, "complete_upload", True),
                ("DELETE", u, self.abort_upload, "abort_upload", True),
                ("GET", "/api/stats", self.stats, "stats", True),
                ("GET", "/api/users", self.users, "users", True),
                ("GET", "/api/events", self.events, "events", True),
                ("GET", "/metrics", self.render_metrics, "metrics", True),
            ]
        ]
        self.static = {p.name: p for p in STATIC_DIR.iterdir() if p.is_file()} if STATIC_DIR.is_dir() else {}
        self._measured = self.metrics.wrap(self._dispatch, "web")

    def __call__(self, environ, start_response):
        return self._measured(environ, start_response)

    # -- dispatch -------------------------------------------------------------------------------
    def _dispatch(self, environ, start_response):
        path = environ.get("PATH_INFO", "/") or "/"
        method = environ.get("REQUEST_METHOD", "GET").upper()
        try:
            if method in ("GET", "HEAD") and not path.startswith("/api/") and path != "/metrics":
                environ["cas.op"] = "static"
                return self._static(path, method, start_response)
            allowed = []
            for m, pattern, handler, op, auth in self.routes:
                match = pattern.match(path)
                if match is None:
                    continue
                if m != method:
                    allowed.append(m)
                    continue
                environ["cas.op"] = op
                # PATH_INFO is already percent-decoded, as latin-1 (PEP 3333)
                params = {k: v.encode("latin-1").decode("utf-8", "replace") for k, v in match.groupdict().items()}
                req = Request(environ, params)
                if auth:
                    self._authenticate(req)
                return handler(req, start_response)
            if allowed:
                raise HttpError("405 Method Not Allowed", "MethodNotAllowed", f"{method} is not allowed here",
                                [("Allow", ", ".join(sorted(set(allowed))))])
            raise HttpError("404 Not Found", "NotFound", f"no such resource: {path}")
        except HttpError as exc:
            return self._error(environ, start_response, exc.status, exc.code, str(exc), exc.headers)
        except errors.CasError as exc:
            status = next(s for cls, s in _STATUS if isinstance(exc, cls))
            if status.startswith("5"):
                log.error("%s %s: %s", method, path, exc)
            extra = [("Retry-After", str(exc.retry_after))] if isinstance(exc, errors.TooManyRequests) else None
            return self._error(environ, start_response, status, type(exc).__name__, str(exc), extra)

    @staticmethod
    def _error(environ, start_response, status: str, code: str, message: str,
               headers: list[tuple[str, str]] | None = None):
        body = json.dumps({"error": code, "message": message}).encode()
        hdrs = [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store")] + list(headers or [])
        length = environ.get("CONTENT_LENGTH")
        if (length not in (None, "", "0") or environ.get("HTTP_TRANSFER_ENCODING")) and \
                not environ.get("cas.body_consumed"):
            hdrs.append(("Connection", "close"))  # the body was not read: the connection cannot be reused
        start_response(status, hdrs)
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]

    @staticmethod
    def _json(start_response, body, status: str = "200 OK") -> list[bytes]:
        raw = json.dumps(body).encode()
        start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(raw))),
                                ("Cache-Control", "no-store")])
        return [raw]

    @staticmethod
    def _empty(start_response, status: str = "204 No Content") -> list[bytes]:
        start_response(status, [("Content-Length", "0")])
        return []

    # -- authentication and tenancy -------------------------------------------------------------
    def _authenticate(self, req: Request) -> None:
        header = (req.header("Authorization") or "").strip()
        scheme = header.split(" ", 1)[0].lower()
        if scheme == "bearer":
            token = header[len("bearer"):].strip()
            if not token:
                raise _unauthorized("empty bearer token")
            try:
                req.user = self.tokens.verify(token)
            except errors.AccessDenied as exc:
                raise _unauthorized(str(exc)) from None
        elif scheme == "basic":
            creds = parse_basic(header)
            if creds is None:
                raise _unauthorized("malformed Basic credentials")
            if not self.store.users.authenticate(*creds, source=_peer(req)):
                log.info("web: failed login for %r from %s", creds[0][:64], req.environ.get("REMOTE_ADDR", "-"))
                raise _unauthorized("wrong user name or secret")
            req.user = creds[0]
        elif not header and self.anonymous:
            req.anonymous = True
            req.environ["cas.user"] = "-"
            return
        elif not header:
            raise _unauthorized("authentication required (Authorization: Bearer TOKEN from POST /api/login)")
        else:
            raise _unauthorized(f"unsupported authorization scheme {scheme!r}")
        req.root = self.store.users.is_root(req.user)
        req.environ["cas.user"] = req.user

    @staticmethod
    def _writable(req: Request) -> None:
        req.principal.require_writer()

    def _require_root(self, req: Request) -> None:
        req.principal.require_root()

    def _bucket(self, req: Request, name: str | None = None):
        """The bucket if the caller may use it; someone else's bucket looks like a missing one."""
        name = req.params["bucket"] if name is None else name
        try:
            return access.visible_bucket(self.store, req.principal, name)
        except errors.BucketNotVisible:
            raise errors.BucketNotFound(f"bucket {name!r} does not exist") from None

    def _visible_buckets(self, req: Request) -> list:
        return access.visible_buckets(self.store, req.principal)

    # -- static UI ------------------------------------------------------------------------------
    def _static(self, path: str, method: str, start_response):
        name = "index.html" if path in ("/", "/index.html") else path.lstrip("/")
        file = self.static.get(name)
        if file is None or "/" in name:
            raise HttpError("404 Not Found", "NotFound", f"no such resource: {path}")
        data = file.read_bytes()
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype in ("application/javascript", "image/svg+xml"):
            ctype += "; charset=utf-8"
        headers = [("Content-Type", ctype), ("Content-Length", str(len(data))), ("Cache-Control", "no-cache"),
                   ("Content-Security-Policy", _CSP)] + _SECURITY_HEADERS
        start_response("200 OK", headers)
        return [] if method == "HEAD" else [data]

    # -- session --------------------------------------------------------------------------------
    def login(self, req: Request, start_response):
        body = req.json()
        user, password = _str(body, "user"), _str(body, "password")
        if not self.store.users.authenticate(user, password, source=_peer(req)):
            log.info("web: failed login for %r from %s", user[:64], req.environ.get("REMOTE_ADDR", "-"))
            raise _unauthorized("wrong user name or password")
        token, expires = self.tokens.issue(user)
        req.environ["cas.user"] = user
        return self._json(start_response, {"token": token, "expires": expires, "user": user,
                                           "root": self.store.users.is_root(user)})

    def whoami(self, req: Request, start_response):
        return self._json(start_response, {"user": req.user, "root": req.root,
                                           "anonymous": req.anonymous})

    # -- buckets --------------------------------------------------------------------------------
    def list_buckets(self, req: Request, start_response):
        return self._json(start_response, {"buckets": [
            {"name": b.name, "owner": b.owner, "created": b.created} for b in self._visible_buckets(req)]})

    def create_bucket(self, req: Request, start_response):
        self._writable(req)
        name = _str(req.json(), "name")
        info = self.store.create_bucket(name, owner=req.user)
        return self._json(start_response, {"name": info.name, "owner": info.owner, "created": info.created},
                          "201 Created")

    def delete_bucket(self, req: Request, start_response):
        self._writable(req)
        info = self._bucket(req)
        self.ns.delete_bucket(info.name, user=req.user)  # folder markers alone do not count as content
        return self._empty(start_response)

    # -- figures and admin ----------------------------------------------------------------------
    def stats(self, req: Request, start_response):
        if req.root:
            return self._json(start_response, dict(self.store.stats(), scope="store"))
        objects = size = 0
        approximate = False
        for b in self._visible_buckets(req):
            for obj in self.store.iter_keys(b.name):
                objects += 1
                size += obj.size
                if objects >= USER_STATS_CAP:
                    approximate = True
                    break
            if approximate:
                break
        return self._json(start_response, {"scope": "user", "objects": objects, "logical_bytes": size,
                                           "approximate": approximate})

    def users(self, req: Request, start_response):
        self._require_root(req)
        owned: dict[str, int] = {}
        for b in self.store.buckets():
            owned[b.owner] = owned.get(b.owner, 0) + 1
        root_name = self.store.users.root()[0]
        users = [{"name": root_name, "root": True, "created": None, "buckets": owned.get(root_name, 0)}]
        users += [{"name": u["name"], "root": False, "created": u["created"], "buckets": owned.get(u["name"], 0)}
                  for u in self.store.users.list()]
        return self._json(start_response, {"users": users})

    def events(self, req: Request, start_response):
        after = self._head_seq() if req.query.get("after") == "latest" else req.int_arg("after", 0, 0, 2**63 - 1)
        limit = req.int_arg("limit", EVENT_LIMIT, 1, EVENT_LIMIT)
        wait = req.float_arg("wait", 0.0, 0.0, MAX_WAIT)
        if wait > 0 and not self._pollers.acquire(blocking=False):
            wait = 0.0  # too many waiting already: the client polls again, which is still correct
            polling = False
        else:
            polling = wait > 0
        try:
            return self._events(req, start_response, after, limit, wait)
        finally:
            if polling:
                self._pollers.release()

    def _events(self, req: Request, start_response, after: int, limit: int, wait: float):
        principal = req.principal
        buckets: dict[str, object] = {}

        def visible(ev) -> bool:
            """By the bucket's identity, not its name: a bucket deleted and created again by
            someone else is another bucket, and its old events are not the new owner's."""
            if principal.sees_everything:
                return True
            if ev.owner:
                return principal.can_see(ev.owner)
            # events from before bucket ids: the bucket of that name now, if it existed back then
            if ev.bucket not in buckets:
                try:
                    buckets[ev.bucket] = self.store.bucket(ev.bucket)
                except errors.BucketNotFound:
                    buckets[ev.bucket] = None
            info = buckets[ev.bucket]
            return info is not None and principal.can_see(info.owner) and info.created <= ev.time

        def waiting(now: bool) -> None:
            (self.metrics.polls_waiting.inc if now else self.metrics.polls_waiting.dec)()

        found, cursor = self.store.follow_events(after, limit=limit, wait=wait, visible=visible,
                                                 scan_cap=EVENT_SCAN_CAP, on_wait=waiting)
        return self._json(start_response, {"events": [ev.to_dict() for ev in found], "next": cursor})

    def _head_seq(self) -> int:
        """The newest commit sequence number (``after=latest``: follow from now on)."""
        return self.store.last_seq()

    def render_metrics(self, req: Request, start_response):
        if not req.principal.sees_everything:
            raise HttpError("403 Forbidden", "AccessDenied", "metrics are for the root user")
        data = self.metrics.render()
        start_response("200 OK", [("Content-Type", METRICS_CONTENT_TYPE), ("Content-Length", str(len(data))),
                                  ("Cache-Control", "no-store")])
        return [data]


def make_app(store, settings, *, tokens: TokenService, metrics: Metrics):
    """The WSGI app for the web UI, the JSON API and /metrics (mounted at "" by the server)."""
    return WebApp(store, settings, tokens=tokens, metrics=metrics)
