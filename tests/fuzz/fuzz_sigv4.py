"""Fuzz target: SigV4 and SigV2 request authentication (``cas.auth.sigv4``).

Input: newline-separated fields ``mode, method, path, query, authorization, x-amz-date /
date, x-amz-content-sha256, extra header (name:value)`` as latin-1 text (how WSGI hands
header values over). ``mode`` picks what else happens: ``s`` re-signs the request with the
user's real secret, so that the fuzzer also reaches the code after a signature matches
(SigV4 header, SigV4 query or SigV2 query, by the fields present); ``c`` builds the
canonical request directly.

Property: :meth:`SigV4Verifier.authenticate` returns an Authorization or None, or raises a
:class:`~cas.errors.CasError`; never another exception, never a hang.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from cas.auth import sigv2, sigv4
from cas.errors import CasError
from cas.protocols.s3.error import S3Error
from cas.protocols.s3.request import parse_query

ACCESS_KEY = "fuzzkey"
SECRET = "fuzzsecret"
NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z
AMZ_NOW = "20231114T221320Z"

SEEDS = [
    # SigV4 header, left for the target to sign
    b"s\nGET\n/b/k\nx=1\nAWS4-HMAC-SHA256 Credential=fuzzkey/20231114/us-east-1/s3/aws4_request, "
    b"SignedHeaders=host;x-amz-date, Signature=00\n20231114T221320Z\nUNSIGNED-PAYLOAD\nhost:localhost",
    # SigV4 header with a wrong signature
    b"v\nPUT\n/b/a%20b\n\nAWS4-HMAC-SHA256 Credential=fuzzkey/20231114/us-east-1/s3/aws4_request,"
    b"SignedHeaders=host,Signature=" + b"0" * 64 + b"\n20231114T221320Z\nSTREAMING-AWS4-HMAC-SHA256-PAYLOAD\nhost:h",
    # SigV4 presigned query
    b"s\nGET\n/b/k\nX-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=fuzzkey%2F20231114%2Fus-east-1%2Fs3%2Faws4_request"
    b"&X-Amz-Date=20231114T221320Z&X-Amz-Expires=300&X-Amz-SignedHeaders=host&X-Amz-Signature=00\n\n\n\nhost:h",
    # SigV2 header and query
    b"v\nGET\n/b/k\nacl\nAWS fuzzkey:c2lnbmF0dXJl\nTue, 14 Nov 2023 22:13:20 GMT\n\ncontent-md5:x",
    b"s\nGET\n/b/k\nAWSAccessKeyId=fuzzkey&Expires=1700000300&Signature=x\n\n\n\nhost:h",
    # canonical request building
    b"c\nget\n/a/../b//c%2F\nb=2&a=1&a=&%E2%82%AC=%C3%A9+x\n\n\n\nx-amz-meta-a:  two   spaces ",
]


def _request(fields: list[str]) -> sigv4.HttpRequestView:
    _, method, path, raw_query, authorization, date, payload, extra = fields
    headers = {"host": "localhost"}
    name, sep, value = extra.partition(":")
    if sep and name.strip():
        headers[name.strip().lower()] = value
    if authorization:
        headers["authorization"] = authorization
    if date:
        headers["x-amz-date" if date[:1].isdigit() else "date"] = date
    if payload:
        headers["x-amz-content-sha256"] = payload
    return sigv4.HttpRequestView(method or "GET", path, parse_query(raw_query), headers)


def _sign(request: sigv4.HttpRequestView) -> sigv4.HttpRequestView:
    """The same request with the signature a client holding the secret would send."""
    query = list(request.query)
    names = {n for n, _ in query}
    headers = dict(request.headers)
    key = sigv4.signing_key(SECRET, AMZ_NOW[:8], "us-east-1")
    scope = f"{AMZ_NOW[:8]}/us-east-1/s3/aws4_request"
    uri = sigv4._canonical_uri_candidates(request.path)[0]
    if "X-Amz-Algorithm" in names:
        query = [(n, v) for n, v in query if n != "X-Amz-Signature"]
        params = dict(reversed(query))
        signed = sigv4._signed_header_names(params.get("X-Amz-SignedHeaders") or "host", CasError)
        payload = params.get("X-Amz-Content-Sha256") or headers.get("x-amz-content-sha256") or sigv4.UNSIGNED_PAYLOAD
        canonical = sigv4.canonical_request(request.method, uri, query, headers, signed, payload)
        date = params.get("X-Amz-Date", AMZ_NOW)
        to_sign = "\n".join((sigv4.ALGORITHM, date, scope, hashlib.sha256(canonical.encode()).hexdigest()))
        query.append(("X-Amz-Signature", hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()))
    elif "AWSAccessKeyId" in names:
        params = dict(reversed(query))
        amz = {n.lower(): v for n, v in query if n.lower().startswith("x-amz-")}
        amz = {**{n: v for n, v in headers.items() if n.startswith("x-amz-")}, **amz}
        canonical_amz = "".join(f"{n}:{' '.join(v.strip().split())}\n" for n, v in sorted(amz.items()))
        subresources = sorted((n, v) for n, v in query if n in sigv2._SUBRESOURCES)
        suffix = ("?" + "&".join(f"{n}={v}" if v else n for n, v in subresources)) if subresources else ""
        head = "\n".join((request.method.upper(), headers.get("content-md5", ""), headers.get("content-type", ""),
                          params.get("Expires", "")))
        to_sign = f"{head}\n{canonical_amz}{uri}{suffix}"
        signature = base64.b64encode(hmac.new(SECRET.encode(), to_sign.encode("utf-8"), hashlib.sha1).digest())
        query = [(n, v) for n, v in query if n != "Signature"] + [("Signature", signature.decode())]
    elif headers.get("authorization", "").startswith(sigv4.ALGORITHM):
        fields = {}
        for part in headers["authorization"][len(sigv4.ALGORITHM):].split(","):
            name, _, value = part.strip().partition("=")
            fields[name] = value.strip()
        signed = sigv4._signed_header_names(fields.get("SignedHeaders") or "host", CasError)
        payload = headers.get("x-amz-content-sha256", sigv4.EMPTY_SHA256)
        date = headers.get("x-amz-date", AMZ_NOW)
        canonical = sigv4.canonical_request(request.method, uri, query, headers, signed, payload)
        to_sign = "\n".join((sigv4.ALGORITHM, date, scope, hashlib.sha256(canonical.encode()).hexdigest()))
        signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
        credential = fields.get("Credential") or f"{ACCESS_KEY}/{scope}"
        headers["authorization"] = (
            f"{sigv4.ALGORITHM} Credential={credential}, SignedHeaders={';'.join(signed)}, Signature={signature}"
        )
    return sigv4.HttpRequestView(request.method, request.path, query, headers)


def one_input(data: bytes) -> None:
    fields = data.decode("latin-1").split("\n", 7)
    fields += [""] * (8 - len(fields))
    mode = fields[0]
    verifier = sigv4.SigV4Verifier(lambda key: SECRET if key == ACCESS_KEY else None, clock=lambda: NOW)
    try:
        request = _request(fields)
        if mode == "c":
            names = [n for n in request.headers if n != "authorization"]
            for uri in sigv4._canonical_uri_candidates(request.path):
                text = sigv4.canonical_request(request.method, uri, request.query, request.headers, names, "x")
                text.encode("utf-8")  # it is hashed as UTF-8
            return
        if mode == "s":
            request = _sign(request)
        result = verifier.authenticate(request)
    except (CasError, S3Error):  # S3Error: parse_query refuses an undecodable query (InvalidURI)
        return
    assert result is None or isinstance(result, sigv4.Authorization), result
    if result is not None:
        result.chunk_chain()  # the seed of a streaming upload is derivable


if __name__ == "__main__":
    from tests.fuzz.harness import main

    main(one_input, SEEDS, "sigv4")
