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

Every response to a request with ``Origin`` says ``Vary: Origin``.

**Per-bucket rules.** A bucket whose owner set a CORS configuration (PutBucketCors, kept in the
kv namespace :data:`NS_CORS`) is answered by its rules instead (:class:`BucketCors`), as S3 does:
the first rule whose AllowedOrigin matches the ``Origin`` (one ``*`` wildcard allowed), whose
AllowedMethod holds the method (a preflight's ``Access-Control-Request-Method``, else the
request's), and, for a preflight, whose AllowedHeader patterns cover every requested header
(case-insensitively), decides. No matching rule: a 403 preflight and no CORS headers on the
actual response. Credentials follow the server-wide rule above: only a rule's exact origin is
echoed with ``Access-Control-Allow-Credentials``; ``*`` is answered with ``*``. A request for
a bucket without a configuration, or for none that exists, gets the server-wide policy, so a
preflight says no more about a bucket than its own rules do. Immutable; thread-safe.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import asdict, dataclass

from cas.protocols.s3 import xml
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
#: kv namespace of the buckets' CORS configurations (bucket name -> JSON list of rules)
NS_CORS = "s3cors"
MAX_RULES = 100
MAX_ID = 255
MAX_AGE_LIMIT = 2**31 - 1
MAX_BUCKET_BYTES = 255
#: the methods a CORS rule may allow (S3's list)
RULE_METHODS = ("GET", "PUT", "HEAD", "POST", "DELETE")
_REFUSED = "CORSResponse: This CORS request is not allowed."


def _need_origin_and_method(req: S3Request) -> tuple[str, str]:
    origin = req.headers.get("origin")
    method = req.headers.get("access-control-request-method")
    if not origin or not method:
        raise S3Error("BadRequest", "Insufficient information. Origin request header needed.", 400)
    return origin, method


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
        origin, method = _need_origin_and_method(req)
        if self.allow_origin(origin) is None or method.strip().upper() not in _METHODS:
            raise S3Error("AccessForbidden", _REFUSED, 403, Method=method)
        headers = [
            ("Access-Control-Allow-Methods", ALLOWED_METHODS),
            ("Access-Control-Max-Age", MAX_AGE),
            ("Content-Length", "0"),
        ]
        requested = req.headers.get("access-control-request-headers")
        if requested:
            headers.append(("Access-Control-Allow-Headers", requested))
        return Response(200, headers)

    def headers_for(self, origin: str | None, method: str = "") -> list[tuple[str, str]]:
        """Headers to add to any response of a request that came with ``Origin`` (any method)."""
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


# -- per-bucket rules


@functools.lru_cache(maxsize=4096)  # a bucket's rules are matched on every request from a browser
def _pattern(text: str, *, fold: bool) -> re.Pattern:
    """A rule's origin or header with its ``*`` (any characters, none included) as a regex."""
    return re.compile(".*".join(re.escape(part) for part in text.split("*")), re.IGNORECASE if fold else 0)


@dataclass(frozen=True)
class CorsRule:
    """One CORSRule of a bucket's configuration, as stored (JSON) and as sent back (XML)."""

    origins: tuple[str, ...]
    methods: tuple[str, ...]
    headers: tuple[str, ...] = ()
    expose: tuple[str, ...] = ()
    max_age: int | None = None
    id: str | None = None

    @classmethod
    def from_dict(cls, d: dict) -> CorsRule:
        return cls(tuple(d["origins"]), tuple(d["methods"]), tuple(d.get("headers", ())),
                   tuple(d.get("expose", ())), d.get("max_age"), d.get("id"))

    def matching_origin(self, origin: str) -> str | None:
        """The AllowedOrigin entry that admits ``origin``, if any."""
        for allowed in self.origins:
            if _pattern(allowed, fold=False).fullmatch(origin):
                return allowed
        return None

    def allows_headers(self, requested: list[str]) -> bool:
        patterns = [_pattern(h, fold=True) for h in self.headers]
        return all(any(p.fullmatch(name) for p in patterns) for name in requested)

    def to_xml(self) -> list:
        children: list = [("ID", self.id)]
        children += [("AllowedHeader", h) for h in self.headers]
        children += [("AllowedMethod", m) for m in self.methods]
        children += [("AllowedOrigin", o) for o in self.origins]
        children += [("ExposeHeader", h) for h in self.expose]
        children.append(("MaxAgeSeconds", self.max_age))
        return children


class BucketCors:
    """A bucket's CORS rules applied to its requests (see the module docstring)."""

    def __init__(self, rules: tuple[CorsRule, ...]):
        self.rules = rules

    def _match(self, origin: str, method: str, requested: list[str] | None = None) -> tuple[CorsRule, str] | None:
        for rule in self.rules:
            allowed = rule.matching_origin(origin)
            if allowed is not None and method in rule.methods and (requested is None or rule.allows_headers(requested)):
                return rule, allowed
        return None

    def _allow(self, rule: CorsRule, allowed: str, origin: str) -> list[tuple[str, str]]:
        if allowed == "*":
            headers = [("Access-Control-Allow-Origin", "*")]
        else:
            headers = [("Access-Control-Allow-Origin", origin)]
            if "*" not in allowed:
                headers.append(("Access-Control-Allow-Credentials", "true"))
        headers.append(("Access-Control-Allow-Methods", ", ".join(rule.methods)))
        if rule.expose:
            headers.append(("Access-Control-Expose-Headers", ", ".join(rule.expose)))
        if rule.max_age is not None:
            headers.append(("Access-Control-Max-Age", str(rule.max_age)))
        return headers

    def preflight(self, req: S3Request) -> Response:
        origin, method = _need_origin_and_method(req)
        raw = req.headers.get("access-control-request-headers", "")
        requested = [h.strip() for h in raw.split(",") if h.strip()]
        found = self._match(origin, method.strip(), requested)
        if found is None:
            raise S3Error("AccessForbidden", _REFUSED, 403, Method=method)
        headers = self._allow(*found, origin)
        if requested:
            headers.append(("Access-Control-Allow-Headers", ", ".join(requested)))
        return Response(200, headers + [("Content-Length", "0")])

    def headers_for(self, origin: str | None, method: str = "") -> list[tuple[str, str]]:
        """CORS headers of an actual request's response: those of the first rule that admits it."""
        if not origin:
            return []
        vary = [("Vary", "Origin, Access-Control-Request-Headers, Access-Control-Request-Method")]
        found = self._match(origin, method)
        return vary if found is None else self._allow(*found, origin) + vary


def bucket_rules(store, bucket: str) -> BucketCors | None:
    """The CORS rules of ``bucket``, or None when it has none (or does not exist)."""
    if not bucket or len(bucket.encode()) > MAX_BUCKET_BYTES:  # not a bucket: no index key that long
        return None
    raw = store.kv_get(NS_CORS, bucket)
    if raw is None:
        return None
    return BucketCors(rules_from_json(raw))


def rules_to_json(rules: tuple[CorsRule, ...]) -> bytes:
    return json.dumps([{k: v for k, v in asdict(r).items() if v not in (None, ())} for r in rules]).encode()


def rules_from_json(raw: bytes) -> tuple[CorsRule, ...]:
    return tuple(CorsRule.from_dict(d) for d in json.loads(raw))


# -- the CORSConfiguration document

_RULE_ELEMENTS = frozenset(["ID", "AllowedOrigin", "AllowedMethod", "AllowedHeader", "ExposeHeader", "MaxAgeSeconds"])
_MALFORMED = "The XML you provided was not well-formed or did not validate against our published schema"


def parse_configuration(body: bytes) -> tuple[CorsRule, ...]:
    """The rules of a PutBucketCors body, checked as S3 checks them (MalformedXML, InvalidRequest)."""
    root = xml.parse(body, "CORSConfiguration")
    elements = list(root)
    if not elements or any(xml.local_name(e) != "CORSRule" for e in elements):
        raise S3Error("MalformedXML", _MALFORMED, 400)
    if len(elements) > MAX_RULES:
        raise S3Error("InvalidRequest", f"The number of CORS rules should not exceed allowed limit of {MAX_RULES} rules.", 400)
    return tuple(_parse_rule(e) for e in elements)


def _parse_rule(element) -> CorsRule:
    values: dict[str, list[str]] = {name: [] for name in _RULE_ELEMENTS}
    for child in element:
        name = xml.local_name(child)
        if name not in _RULE_ELEMENTS or len(child):
            raise S3Error("MalformedXML", _MALFORMED, 400)
        values[name].append((child.text or "").strip())
    origins, methods = values["AllowedOrigin"], values["AllowedMethod"]
    if not origins or not methods or len(values["ID"]) > 1 or len(values["MaxAgeSeconds"]) > 1:
        raise S3Error("MalformedXML", _MALFORMED, 400)
    for method in methods:
        if method not in RULE_METHODS:
            raise S3Error("InvalidRequest", f"Found unsupported HTTP method in CORS config. Unsupported method is {method}", 400)
    for origin in origins:
        if origin.count("*") > 1:
            raise S3Error("InvalidRequest", f'AllowedOrigin "{origin}" can not have more than one wildcard.', 400)
    for header in values["AllowedHeader"]:
        if header.count("*") > 1:
            raise S3Error("InvalidRequest", f'AllowedHeader "{header}" can not have more than one wildcard.', 400)
    for header in values["ExposeHeader"]:
        if "*" in header:
            raise S3Error("InvalidRequest", f'ExposeHeader "{header}" contains wildcard. We currently do not support '
                                            "wildcard for ExposeHeader.", 400)
    rule_id = values["ID"][0] if values["ID"] else None
    if rule_id is not None and len(rule_id) > MAX_ID:
        raise S3Error("InvalidArgument", f"The ID of a CORS rule cannot be longer than {MAX_ID} characters.", 400)
    max_age = None
    if values["MaxAgeSeconds"]:
        text = values["MaxAgeSeconds"][0]
        if not re.fullmatch("[0-9]{1,10}", text) or int(text) > MAX_AGE_LIMIT:  # an int32: no sign, no decimals
            raise S3Error("MalformedXML", _MALFORMED, 400)
        max_age = int(text)
    return CorsRule(tuple(origins), tuple(methods), tuple(values["AllowedHeader"]), tuple(values["ExposeHeader"]),
                    max_age, rule_id)


def configuration_xml(rules: tuple[CorsRule, ...]) -> Response:
    """GetBucketCors' answer."""
    return Response.xml("CORSConfiguration", [("CORSRule", r.to_xml()) for r in rules])
