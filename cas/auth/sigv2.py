"""Legacy AWS Signature Version 2 (S3 flavour): header and presigned-query verification.

Still needed because boto3's ``generate_presigned_url`` makes V2 URLs by default and s3cmd's
``signurl`` does too. Called by :class:`~cas.auth.sigv4.SigV4Verifier`, whose secret lookup,
clock and skew allowance it uses. V2 signs ``x-amz-*`` headers by construction and never the
payload; a V2 presigned URL may name an expiry at most a week ahead (as V4's ``X-Amz-Expires``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Mapping

from cas.errors import (
    AccessDenied,
    MalformedAuthorization,
    MalformedPresign,
    RequestExpired,
    RequestTimeSkewed,
    SignatureMismatch,
)

from .sigv4 import (
    _AMZ_DATE_FORMAT,
    _LAST_AMZ_SECOND,
    MAX_PRESIGN_SECONDS,
    UNSIGNED_PAYLOAD,
    Authorization,
    HttpRequestView,
    SigV4Verifier,
    _canonical_uri_candidates,
    _is_ascii_digits,
    _parse_http_date,
    presign_params,
)

#: query parameters that are part of a V2 signature's resource (as botocore's HmacV1Auth)
_SUBRESOURCES = frozenset(
    ["accelerate", "acl", "cors", "defaultObjectAcl", "location", "logging", "partNumber", "policy", "requestPayment", "torrent", "versioning", "versionId", "versions", "website", "uploads", "uploadId", "response-content-type", "response-content-language", "response-expires", "response-cache-control", "response-content-disposition", "response-content-encoding", "delete", "lifecycle", "tagging", "restore", "storageClass", "notification", "replication", "analytics", "metrics", "inventory", "select", "select-type", "object-lock"]
)


def verify_header(v: SigV4Verifier, request: HttpRequestView, header: str) -> Authorization:
    """``Authorization: AWS key:signature`` (HMAC-SHA1 of the V2 string to sign)."""
    access_key, sep, signature = header[4:].strip().rpartition(":")
    if not sep or not access_key or not signature:
        raise MalformedAuthorization("The authorization header is malformed; expecting 'AWS AccessKeyId:Signature'.")
    headers = request.headers
    if "x-amz-date" in headers:
        when = _parse_http_date(headers["x-amz-date"])
        date_line = ""
    else:
        when = _parse_http_date(headers.get("date"))
        date_line = headers.get("date", "")
    if when is None:
        raise AccessDenied("AWS authentication requires a valid Date or x-amz-date header")
    secret = v._secret(access_key)
    if abs(v._clock() - when) > v._max_skew:
        raise RequestTimeSkewed()
    amz = {n: v for n, v in headers.items() if n.startswith("x-amz-")}
    _match(request, secret, date_line, amz, signature)
    amz_date = time.strftime(_AMZ_DATE_FORMAT, time.gmtime(when))
    return Authorization(access_key, amz_date, "", "us-east-1", signature, b"", UNSIGNED_PAYLOAD, False)


def verify_query(v: SigV4Verifier, request: HttpRequestView) -> Authorization:
    """``?AWSAccessKeyId=&Signature=&Expires=`` (a V2 presigned URL; at most a week ahead)."""
    params = presign_params(request, "AWSAccessKeyId", "Signature", "Expires")
    access_key, signature, expires_text = params["AWSAccessKeyId"], params["Signature"], params["Expires"]
    if expires_text.startswith("-") and _is_ascii_digits(expires_text[1:]):
        raise RequestExpired()  # a time before 1970
    if not _is_ascii_digits(expires_text):
        raise MalformedPresign("Expires should be a number of seconds since the epoch.")
    expires = int(expires_text) if len(expires_text.lstrip("0")) <= 20 else 1 << 64
    now = v._clock()
    if now > expires:
        raise RequestExpired()
    # V2 URLs name an absolute expiry; hold them to the same week as V4's X-Amz-Expires
    # (with the clock skew a signer may have), so no URL stays valid for years.
    if expires > now + MAX_PRESIGN_SECONDS + v._max_skew:
        raise MalformedPresign("Expires must be less than a week (604800 seconds) from now.")
    secret = v._secret(access_key)
    amz = {n: v for n, v in request.headers.items() if n.startswith("x-amz-")}
    amz.update({n.lower(): v for n, v in request.query if n.lower().startswith("x-amz-")})
    _match(request, secret, expires_text, amz, signature)
    # An expiry past year 9999 is accepted as "never", but has no yyyymmdd form
    amz_date = time.strftime(_AMZ_DATE_FORMAT, time.gmtime(min(expires, _LAST_AMZ_SECOND)))
    return Authorization(access_key, amz_date, "", "us-east-1", signature, b"", UNSIGNED_PAYLOAD, True)


def _match(request: HttpRequestView, secret: str, date_line: str, amz: Mapping[str, str], signature: str) -> None:
    headers = request.headers
    canonical_amz = "".join(f"{n}:{' '.join(v.strip().split())}\n" for n, v in sorted(amz.items()))
    subresources = sorted((n, v) for n, v in request.query if n in _SUBRESOURCES)
    suffix = ("?" + "&".join(f"{n}={v}" if v else n for n, v in subresources)) if subresources else ""
    head = "\n".join((request.method.upper(), headers.get("content-md5", ""), headers.get("content-type", ""), date_line))
    for path in _canonical_uri_candidates(request.path):
        string_to_sign = f"{head}\n{canonical_amz}{path}{suffix}"
        expected = base64.b64encode(hmac.new(secret.encode("utf-8"), string_to_sign.encode("utf-8"), hashlib.sha1).digest())
        if hmac.compare_digest(expected, signature.strip().encode("utf-8", "replace")):
            return
    raise SignatureMismatch()
