"""SigV4 verification against signatures made by independent implementations.

botocore signs headers and presigned URLs the way boto3 and the aws cli do; awscrt (the
AWS common runtime's C signer) signs with a date we choose. Our verifier must accept both,
and refuse every tampered variant with the precise error.
"""

from __future__ import annotations

import datetime
import time
from urllib.parse import parse_qsl, urlsplit

import pytest
from awscrt import auth as crt_auth
from awscrt import http as crt_http
from botocore.auth import HmacV1Auth, HmacV1QueryAuth, S3SigV4Auth, S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from cas.auth import sigv4
from cas.auth.sigv4 import HttpRequestView, SigV4Verifier

pytestmark = pytest.mark.unit

AK, SK = "alice", "s3cr3t-key-for-alice"
HOST = "127.0.0.1:9000"


def verifier(now: float | None = None) -> SigV4Verifier:
    secrets = {AK: SK}
    return SigV4Verifier(secrets.get, clock=(lambda: now) if now is not None else time.time)


def view_of(request: AWSRequest) -> HttpRequestView:
    parts = urlsplit(request.url)
    headers = {k.lower(): v for k, v in request.headers.items()}
    headers["host"] = parts.netloc
    query = parse_qsl(parts.query, keep_blank_values=True)
    return HttpRequestView(request.method, parts.path, query, headers)


def botocore_signed(method="GET", path="/bucket/key", query="", body=b"", headers=None, secret=SK, access=AK):
    url = f"http://{HOST}{path}" + (f"?{query}" if query else "")
    request = AWSRequest(method=method, url=url, data=body, headers=headers or {})
    S3SigV4Auth(Credentials(access, secret), "s3", "us-east-1").add_auth(request)
    return request


def test_botocore_header_signature_verifies():
    req = botocore_signed("PUT", "/bucket/some%20key/%E2%9C%93", body=b"data", headers={"Content-Type": "text/plain"})
    auth = verifier().authenticate(view_of(req))
    assert auth.access_key == AK
    assert auth.payload_sha256 is not None and not auth.presigned


def test_query_parameters_and_special_characters():
    req = botocore_signed("GET", "/bucket", query="list-type=2&prefix=a%2Bb%20c&delimiter=%2F")
    assert verifier().authenticate(view_of(req)).access_key == AK


@pytest.mark.parametrize(
    "tamper, error",
    [
        (lambda v: v.headers.__setitem__("x-amz-date", "20200101T000000Z"), sigv4.MalformedAuthorization),
        (lambda v: v.headers.__setitem__("authorization", v.headers["authorization"][:-1] + ("0" if v.headers["authorization"][-1] != "0" else "1")), sigv4.SignatureMismatch),
        (lambda v: v.headers.__setitem__("host", "evil:1"), sigv4.SignatureMismatch),
        (lambda v: v.headers.__setitem__("authorization", "AWS alice:abc"), sigv4.SignatureMismatch),
        (lambda v: v.headers.__setitem__("authorization", "AWS4-ECDSA-P256-SHA256 Credential=x"), sigv4.UnsupportedAuthorization),
        (lambda v: v.headers.__setitem__("authorization", "AWS4-HMAC-SHA256 Credential=x"), sigv4.MalformedAuthorization),
    ],
)
def test_tampered_header_auth_is_refused(tamper, error):
    view = view_of(botocore_signed())
    tamper(view)
    with pytest.raises(error):
        verifier().authenticate(view)


def test_unknown_key_and_wrong_secret():
    with pytest.raises(sigv4.InvalidAccessKey):
        verifier().authenticate(view_of(botocore_signed(access="mallory")))
    with pytest.raises(sigv4.SignatureMismatch):
        verifier().authenticate(view_of(botocore_signed(secret="wrong-secret")))


def test_clock_skew_over_15_minutes_is_refused():
    view = view_of(botocore_signed())
    assert verifier(now=time.time() + 14 * 60).authenticate(view)
    with pytest.raises(sigv4.RequestTimeSkewed):
        verifier(now=time.time() + 16 * 60).authenticate(view)
    with pytest.raises(sigv4.RequestTimeSkewed):
        verifier(now=time.time() - 16 * 60).authenticate(view)


def test_presigned_url_and_expiry():
    request = AWSRequest(method="GET", url=f"http://{HOST}/bucket/k%C3%A9y", headers={})
    S3SigV4QueryAuth(Credentials(AK, SK), "s3", "us-east-1", expires=60).add_auth(request)
    view = view_of(request)
    auth = verifier().authenticate(view)
    assert auth.presigned and auth.payload_hash == sigv4.UNSIGNED_PAYLOAD
    with pytest.raises(sigv4.RequestExpired):
        verifier(now=time.time() + 120).authenticate(view)
    forged = HttpRequestView(view.method, "/bucket/other", view.query, view.headers)
    with pytest.raises(sigv4.SignatureMismatch):
        verifier().authenticate(forged)


def crt_signed(when: datetime.datetime, *, presign: bool = False, expires: int | None = None):
    """Sign with the AWS common runtime's C signer (an independent implementation)."""
    request = crt_http.HttpRequest("GET", "/bucket/a%20b", crt_http.HttpHeaders([("Host", HOST)]))
    config = crt_auth.AwsSigningConfig(
        algorithm=crt_auth.AwsSigningAlgorithm.V4,
        signature_type=(crt_auth.AwsSignatureType.HTTP_REQUEST_QUERY_PARAMS if presign
                        else crt_auth.AwsSignatureType.HTTP_REQUEST_HEADERS),
        credentials_provider=crt_auth.AwsCredentialsProvider.new_static(AK, SK),
        region="us-east-1",
        service="s3",
        date=when,
        use_double_uri_encode=False,
        should_normalize_uri_path=False,
        signed_body_value=crt_auth.AwsSignedBodyValue.UNSIGNED_PAYLOAD,
        signed_body_header_type=(crt_auth.AwsSignedBodyHeaderType.NONE if presign
                                 else crt_auth.AwsSignedBodyHeaderType.X_AMZ_CONTENT_SHA_256),
        expiration_in_seconds=expires,
    )
    crt_auth.aws_sign_request(request, config).result(10)
    path, _, query = request.path.partition("?")
    headers = {name.lower(): value for name, value in request.headers}
    return HttpRequestView("GET", path, parse_qsl(query, keep_blank_values=True), headers)


def test_awscrt_signatures_verify_with_their_own_dates():
    when = datetime.datetime(2030, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    t = when.timestamp()
    assert verifier(now=t + 5).authenticate(crt_signed(when)).amz_date == "20300102T030405Z"
    with pytest.raises(sigv4.RequestTimeSkewed):
        verifier(now=t + 3600).authenticate(crt_signed(when))
    presigned = crt_signed(when, presign=True, expires=300)
    assert verifier(now=t + 299).authenticate(presigned).presigned
    with pytest.raises(sigv4.RequestExpired):
        verifier(now=t + 301).authenticate(presigned)


def test_no_signature_is_anonymous():
    assert verifier().authenticate(HttpRequestView("GET", "/", [], {"host": HOST})) is None


def test_chunk_chain_detects_reordering():
    key = sigv4.signing_key(SK, "20300102", "us-east-1")
    scope = "20300102/us-east-1/s3/aws4_request"
    seed = "0" * 64
    import hashlib
    import hmac

    def sign(previous, data):
        sts = "\n".join(["AWS4-HMAC-SHA256-PAYLOAD", "20300102T000000Z", scope, previous,
                         hashlib.sha256(b"").hexdigest(), hashlib.sha256(data).hexdigest()])
        return hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()

    s1 = sign(seed, b"one")
    s2 = sign(s1, b"two")
    chain = sigv4.ChunkSignatureChain(key, "20300102T000000Z", scope, seed)
    chain.verify_chunk(s1, hashlib.sha256(b"one").hexdigest())
    chain.verify_chunk(s2, hashlib.sha256(b"two").hexdigest())
    swapped = sigv4.ChunkSignatureChain(key, "20300102T000000Z", scope, seed)
    with pytest.raises(sigv4.SignatureMismatch):
        swapped.verify_chunk(s2, hashlib.sha256(b"two").hexdigest())


def test_legacy_v2_presigned_urls_and_headers_from_botocore():
    """boto3's generate_presigned_url still makes Signature Version 2 URLs by default."""
    request = AWSRequest(method="GET", url=f"http://{HOST}/bucket/k%20y?uploadId=abc&response-content-type=text/plain")
    HmacV1QueryAuth(Credentials(AK, SK), expires=60).add_auth(request)
    view = view_of(request)
    auth = verifier().authenticate(view)
    assert auth.presigned and auth.access_key == AK and auth.payload_hash == sigv4.UNSIGNED_PAYLOAD
    with pytest.raises(sigv4.RequestExpired):
        verifier(now=time.time() + 120).authenticate(view)
    with pytest.raises(sigv4.SignatureMismatch):
        verifier().authenticate(HttpRequestView("PUT", view.path, view.query, view.headers))
    request = AWSRequest(method="PUT", url=f"http://{HOST}/bucket/key", headers={"Content-Type": "text/plain", "x-amz-meta-a": "1"})
    HmacV1Auth(Credentials(AK, SK)).add_auth(request)
    view = view_of(request)
    assert not verifier().authenticate(view).presigned
    view.headers["x-amz-meta-a"] = "2"
    with pytest.raises(sigv4.SignatureMismatch):
        verifier().authenticate(view)
