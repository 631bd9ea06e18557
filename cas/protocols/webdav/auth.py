"""Who is asking: HTTP Basic (and Bearer JWT) for the WebDAV front.

Replaces wsgidav's ``HTTPAuthenticator``: users are the Store's users
(``store.users``, the same names and secrets as S3), Digest is not offered
(the secret would have to be kept in a Digest-usable form as well), and a
malformed ``Authorization`` header is a 401, never a 500.

On success ``environ["wsgidav.auth.user_name"]`` names the user; the provider
uses it for tenancy (who sees which bucket) and wsgidav for lock ownership.
With ``auth.allow_anonymous`` a request without credentials passes as the
read-only principal ``anonymous`` (``cas.dav.anonymous``).

Failed logins are throttled by ``UserRegistry.authenticate`` (per peer address
and per address and name); this middleware only answers them: 429 with
``Retry-After``. Stateless and thread-safe.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ...errors import TooManyRequests
from ..http import parse_basic

log = logging.getLogger(__name__)

REALM = "cas"
_BODY = b"401 Unauthorized: log in with your cas user name and secret\n"

#: Optional verifier of bearer tokens: token -> user name, or None if invalid.
BearerVerifier = Callable[[str], "str | None"]


class DavAuthenticator:
    """WSGI middleware: authenticate, then call the DAV app; else 401 with a challenge."""

    def __init__(self, app, users, *, allow_anonymous: bool = False, bearer: BearerVerifier | None = None):
        self._app = app
        self._users = users
        self._allow_anonymous = allow_anonymous
        self._bearer = bearer

    def _identify(self, environ: dict) -> str | None:
        header = environ.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme = header.strip().split(" ", 1)[0].lower()
        if scheme == "basic":
            creds = parse_basic(header)
            if creds is None:
                return None
            user, password = creds
            # the connection's peer: X-Forwarded-For is not trusted
            if self._users.authenticate(user, password, source=environ.get("REMOTE_ADDR")):
                return user
            log.info("webdav: failed login for %r from %s", user[:64], environ.get("REMOTE_ADDR", "-"))
            return None
        if scheme == "bearer" and self._bearer is not None:
            token = header.strip()[len("bearer"):].strip()
            return self._bearer(token) if token else None
        return None

    def __call__(self, environ, start_response):
        try:
            user = self._identify(environ)
        except TooManyRequests as exc:
            return self.throttled(environ, start_response, exc.retry_after)
        if user is not None:
            environ["wsgidav.auth.user_name"] = user
            environ["wsgidav.auth.realm"] = REALM
            return self._app(environ, start_response)
        if self._allow_anonymous and not environ.get("HTTP_AUTHORIZATION"):
            environ["wsgidav.auth.user_name"] = "anonymous"
            environ["cas.dav.anonymous"] = True
            return self._app(environ, start_response)
        return self.challenge(environ, start_response)

    @staticmethod
    def throttled(environ, start_response, retry_after: int):
        body = f"429 Too Many Requests: too many failed logins from your address; retry in {retry_after} s\n".encode()
        headers = [("Retry-After", str(retry_after)), ("Content-Type", "text/plain; charset=utf-8"),
                   ("Content-Length", str(len(body)))]
        if environ.get("CONTENT_LENGTH") not in (None, "", "0") or environ.get("HTTP_TRANSFER_ENCODING"):
            headers.append(("Connection", "close"))  # the body was not read
        start_response("429 Too Many Requests", headers)
        return [body]

    @staticmethod
    def challenge(environ, start_response):
        headers = [
            ("WWW-Authenticate", f'Basic realm="{REALM}", charset="UTF-8"'),
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(_BODY))),
        ]
        if environ.get("CONTENT_LENGTH") not in (None, "", "0") or environ.get("HTTP_TRANSFER_ENCODING"):
            # we did not read the body: the connection cannot be reused
            headers.append(("Connection", "close"))
        start_response("401 Unauthorized", headers)
        return [_BODY]
