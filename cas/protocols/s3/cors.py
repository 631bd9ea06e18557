"""CORS for the S3 API: preflight answers and the headers on actual responses.

Allowed origins come from ``server.cors_origins`` (``--cors-origin``, ``CAS_CORS_ORIGINS``).
An entry is ``*`` (any origin), an exact origin (``https://app.example.com``), or an origin
with ``*`` wildcards (``http://localhost:*``). The default allows only loopback origins:
under ``--anonymous`` a ``*`` would let any web page a visitor opens read the store through
the visitor's browser.

- An exact entry is echoed with ``Access-Control-Allow-Credentials: true``; a wildcard
  entry is echoed without it, and ``*`` is answered with ``*``: credentials never go
  with a wildcard.
- An origin that no entry allows gets no ``Access-Control-*`` header at all, and its
  preflight is refused with 403 ``AccessForbidden``, as S3 does for a disallowed CORS request.
- A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) is
  answered without authentication, as browsers send no credentials with it.

Every response to a request with ``Origin`` says ``Vary: Origin``. Immutable; thread-safe.
"""

from __future__ import annotations

import re

from cas.protocols.s3.error import S3Error
from cas.protocols.s3.request import Response, S3Request

ALLOWED_METHODS = "GET, PUT, POST, DELETE, HEAD"
_METHODS = frozenset(m.strip() for m in ALLOWED_METHODS.split(","))
EXPOSED_HEADERS = (
    "ETag, Content-Length, Content-Range, Content-Type, Last-Modified, x-amz-request-id, x-amz-version-id, "
    "x-amz-checksum-crc32, x-amz-checksum-crc32c, x-amz-checksum-crc64nvme, x-amz-checksum-sha1, "
    "x-amz-checksum-sha256, x-amz-checksum-type"
)
MAX_AGE = "3600"


class CorsPolicy:
    """The configured origins (see the module docstring)."""

    def __init__(self, origins: tuple[str, ...]):
        entries = [o.strip().rstrip("/") for o in origins if o.strip()]
        self._any = "*" in entries
        self._exact = frozenset(o for o in entries if "*" not in o)
        self._patterns = tuple(
            re.compile("[^/]*".join(re.escape(part) for part in o.split("*")))
            for o in entries
            if "*" in o and o != "*"
        )

    def allow_origin(self, origin: str) -> tuple[str, bool] | None:
        """(``Access-Control-Allow-Origin`` value, whether credentials are allowed), or None."""
        origin = origin.strip().rstrip("/")
        if origin in self._exact:
            return origin, True
        if any(p.fullmatch(origin) for p in self._patterns):
            return origin, False
        if self._any:
            return "*", False
        return None

    def preflight(self, req: S3Request) -> Response:
        origin = req.headers.get("origin")
        method = req.headers.get("access-control-request-method")
        if not origin or not method:
            raise S3Error("BadRequest", "Insufficient information. Origin request header needed.", 400)
        if self.allow_origin(origin) is None or method.strip().upper() not in _METHODS:
            raise S3Error("AccessForbidden", "CORSResponse: This CORS request is not allowed.", 403, Method=method)
        headers = [
            ("Access-Control-Allow-Methods", ALLOWED_METHODS),
            ("Access-Control-Max-Age", MAX_AGE),
            ("Content-Length", "0"),
        ]
        requested = req.headers.get("access-control-request-headers")
        if requested:
            headers.append(("Access-Control-Allow-Headers", requested))
        return Response(200, headers)

    def headers_for(self, origin: str | None) -> list[tuple[str, str]]:
        """Headers to add to any response of a request that came with ``Origin``."""
        if not origin:
            return []
        allowed = self.allow_origin(origin)
        if allowed is None:
            return [("Vary", "Origin")]
        value, credentials = allowed
        headers = [("Access-Control-Allow-Origin", value)]
        if credentials:
            headers.append(("Access-Control-Allow-Credentials", "true"))
        return headers + [("Access-Control-Expose-Headers", EXPOSED_HEADERS), ("Vary", "Origin")]
