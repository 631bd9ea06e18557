"""CORS for the S3 API: preflight answers and the headers on actual responses.

Allowed origins come from ``server.cors_origins`` (``*`` allows any). A preflight
(``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) is answered without
authentication, as browsers send no credentials with it. The allowed origin is echoed (with
``Vary: Origin``) so that the answer is right for credentialed requests too.
"""

from __future__ import annotations

from cas.protocols.s3.error import S3Error
from cas.protocols.s3.request import Response, S3Request

ALLOWED_METHODS = "GET, PUT, POST, DELETE, HEAD"
EXPOSED_HEADERS = (
    "ETag, Content-Length, Content-Range, Content-Type, Last-Modified, x-amz-request-id, x-amz-version-id, "
    "x-amz-checksum-crc32, x-amz-checksum-crc32c, x-amz-checksum-crc64nvme, x-amz-checksum-sha1, "
    "x-amz-checksum-sha256, x-amz-checksum-type"
)
MAX_AGE = "3600"


class CorsPolicy:
    def __init__(self, origins: tuple[str, ...]):
        self._any = "*" in origins
        self._origins = frozenset(o.rstrip("/") for o in origins if o != "*")

    def allows(self, origin: str) -> bool:
        return self._any or origin.rstrip("/") in self._origins

    def preflight(self, req: S3Request) -> Response:
        origin = req.headers.get("origin")
        method = req.headers.get("access-control-request-method")
        if not origin or not method:
            raise S3Error("BadRequest", "Insufficient information. Origin request header needed.", 400)
        if not self.allows(origin) or method.upper() not in ALLOWED_METHODS:
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
        if not origin or not self.allows(origin):
            return []
        return [
            ("Access-Control-Allow-Origin", origin),
            ("Access-Control-Allow-Credentials", "true"),
            ("Access-Control-Expose-Headers", EXPOSED_HEADERS),
            ("Vary", "Origin"),
        ]
