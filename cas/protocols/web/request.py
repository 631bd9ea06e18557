"""One request of the web API as its handlers see it, and the web layer's own error answers.

``Request`` wraps the WSGI environ (query arguments, JSON body, headers, the caller's
``Principal``); ``HttpError`` is an answer other than 2xx decided by the web layer itself (a
Store error is a ``CasError`` and is mapped by ``WebApp``). No state; thread-safe.
"""

from __future__ import annotations

import json
import math
import re
import urllib.parse

from ...access import Principal

MAX_JSON = 1 << 20


class HttpError(Exception):
    """An answer other than 2xx decided by the web layer itself (not a Store error)."""

    def __init__(self, status: str, code: str, message: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = headers or []


def _peer(req: Request) -> str | None:
    """Whom failed logins are counted against: the connection's peer (X-Forwarded-For is not trusted)."""
    return req.environ.get("REMOTE_ADDR")


def _unauthorized(reason: str) -> HttpError:
    return HttpError("401 Unauthorized", "Unauthorized", reason,
                     [("WWW-Authenticate", (f'Bearer realm="cas", error="invalid_token", '
                                            f'error_description="{_header_safe(reason)}"'))])


def _header_safe(text: str) -> str:
    return re.sub(r'[^\x20-\x7e]|"', "'", text)[:200]


class Request:
    """What a handler needs of one WSGI request."""

    def __init__(self, environ: dict, params: dict[str, str]):
        self.environ = environ
        self.method = environ.get("REQUEST_METHOD", "GET").upper()
        self.params = params
        qs = environ.get("QUERY_STRING", "").encode("latin-1").decode("utf-8", "replace")
        self.query = {k: v[-1] for k, v in urllib.parse.parse_qs(qs, keep_blank_values=True).items()}
        self.user = ""
        self.root = False
        self.anonymous = False  # the anonymous reader (a flag, never a user name)

    @property
    def principal(self) -> Principal:
        return Principal(self.user, root=self.root, anonymous=self.anonymous)

    def arg(self, name: str, default: str | None = None) -> str:
        value = self.query.get(name, default)
        if value is None:
            raise HttpError("400 Bad Request", "MissingParameter", f"the query parameter {name!r} is required")
        return value

    def int_arg(self, name: str, default: int, lo: int, hi: int) -> int:
        raw = self.query.get(name)
        if raw in (None, ""):
            return default
        try:
            return max(lo, min(hi, int(raw)))
        except ValueError:
            raise HttpError("400 Bad Request", "InvalidParameter", f"{name} must be an integer") from None

    def float_arg(self, name: str, default: float, lo: float, hi: float) -> float:
        raw = self.query.get(name)
        if raw in (None, ""):
            return default
        try:
            value = float(raw)
        except ValueError:
            raise HttpError("400 Bad Request", "InvalidParameter", f"{name} must be a number") from None
        if not math.isfinite(value):
            raise HttpError("400 Bad Request", "InvalidParameter", f"{name} must be finite")
        return max(lo, min(hi, value))

    @property
    def content_length(self) -> int | None:
        raw = self.environ.get("CONTENT_LENGTH") or ""
        try:
            return int(raw) if raw else None
        except ValueError:
            raise HttpError("400 Bad Request", "InvalidHeader", "Content-Length is not a number") from None

    def json(self) -> dict:
        length = self.content_length or 0
        if length > MAX_JSON:
            raise HttpError("413 Payload Too Large", "TooLarge", "JSON bodies are limited to 1 MiB")
        raw = self.environ["wsgi.input"].read(length) if length else b""
        if not raw:
            return {}
        try:
            body = json.loads(raw)
        except ValueError:
            raise HttpError("400 Bad Request", "MalformedJSON", "the body is not valid JSON") from None
        if not isinstance(body, dict):
            raise HttpError("400 Bad Request", "MalformedJSON", "the body must be a JSON object")
        return body

    def body(self):
        """The request body as a file-like object for ``Store.put`` (bounded by Content-Length)."""
        return self.environ["wsgi.input"]

    def header(self, name: str) -> str | None:
        return self.environ.get("HTTP_" + name.upper().replace("-", "_"))


def _str(body: dict, name: str, *, required: bool = True) -> str:
    value = body.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value):
        raise HttpError("400 Bad Request", "InvalidParameter", f"{name!r} must be a non-empty string")
    return value


def _object_json(info) -> dict:
    return {"key": info.key, "name": info.key.rstrip("/").rsplit("/", 1)[-1], "size": info.size,
            "etag": info.etag, "content_type": info.content_type, "mtime": info.mtime,
            "folder": info.key.endswith("/")}
